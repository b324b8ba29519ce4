"""The loop watch logs a stall of the event loop while it lasts (with where the loop is held) and when it ends."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from openai_routes.server import loop_watch
from openai_routes.server.loop_watch import LoopWatch


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call made on the loop


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_watch, "TICK", 0.05)


async def test_a_stall_is_logged_with_where_the_loop_is_held(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=loop_watch.__name__)
    stop = False
    LoopWatch(asyncio.get_running_loop(), quiet=lambda: stop, stall_after=0.3).start()
    await asyncio.sleep(0.2)
    hold_the_loop(1.5)
    await asyncio.sleep(0.5)
    stop = True
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("event loop stalled for") and "hold_the_loop" in messages[0]
    assert messages[1].startswith("event loop stall ended after")
    assert 1.0 <= float(messages[1].split()[-2]) <= 2.0, messages[1]


async def test_a_loop_that_runs_and_a_quiet_watch_log_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=loop_watch.__name__)
    draining = False
    LoopWatch(asyncio.get_running_loop(), quiet=lambda: draining, stall_after=2.0).start()
    for _ in range(10):
        await asyncio.sleep(0.05)
    draining = True
    await asyncio.sleep(0.2)  # the watch has ended: this hold is not reported
    hold_the_loop(2.5)
    await asyncio.sleep(0.2)
    assert caplog.records == []
