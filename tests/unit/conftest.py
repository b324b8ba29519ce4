"""The in-process schema fuzz (``test_fuzz_schema.py``) starts in the background as soon as collection ends, at
the lowest priority, and its test moves to the end of the run: its ~10,000 cases are generated while the other
tests run (on the core the engines leave idle), not before them."""

from __future__ import annotations

import pytest

from tests.unit.test_fuzz_schema import BACKGROUND, BackgroundFuzz, test_ten_thousand_fuzzed_cases_get_no_5xx_and_no_422

FUZZ = test_ten_thousand_fuzzed_cases_get_no_5xx_and_no_422.__name__


@pytest.hookimpl(trylast=True)  # after the e2e ordering (tests/e2e/conftest.py)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    fuzz = [item for item in items if item.name == FUZZ]
    items[:] = [item for item in items if item.name != FUZZ] + fuzz


def pytest_collection_finish(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(item.name == FUZZ for item in session.items):
        session.config.stash[BACKGROUND] = BackgroundFuzz()


def pytest_sessionfinish(session: pytest.Session) -> None:
    background = session.config.stash.get(BACKGROUND, None)
    if background is not None:
        background.close()
