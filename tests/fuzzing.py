"""Fuzzing the ``/v1`` OpenAPI schema with schemathesis, for the in-process fuzz (``tests/unit/test_fuzz_schema.py``,
the real app with fake engines) and the sample through the real server (``tests/e2e/test_hostile_input.py``).

Every operation gets generated cases, positive and negative (operations without a body, GET, DELETE and cancel:
positive only, as a string path id has no invalid value to generate), sent one by one. A case fails when it gets a
5xx, a ``server_error`` in its body (a stream's error frame), or FastAPI's own validation answer (422, or its
``{"detail": ...}`` body) instead of OpenAI's 400 envelope.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.probes import sse_payloads

# A case's status and body text, as the transport got them (599 for a failed transport: a hang or a dropped connection).
Send = Callable[[Any], tuple[int, str]]
Adapt = Callable[[Any], None]  # changes a generated case before it is sent (e.g. the served model's name)


@dataclass
class FuzzTally:
    """What the fuzzer sent and got: counts by status, and every case that failed (see the module docstring)."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0

    @property
    def cases(self) -> int:
        return sum(self.statuses.values())

    def __add__(self, other: FuzzTally) -> FuzzTally:
        return FuzzTally(self.statuses + other.statuses, self.failures + other.failures, self.seconds + other.seconds)

    def record(self, label: str, body: Any, status: int, text: str) -> None:
        self.statuses[status] += 1
        if status >= 500 or status == 422 or server_error(text) or fastapi_detail(text):
            self.failures.append(f"{label} -> {status} {text[:300]} for {json.dumps(body, default=str)[:500]}")

    def summary(self) -> str:
        return f"{self.cases} cases {dict(sorted(self.statuses.items()))} in {self.seconds:.0f} s"


def payloads(text: str) -> list[Any]:
    """The JSON values of a body: the body itself, or each ``data:`` payload of an event stream."""
    found = []
    for raw in sse_payloads(text.splitlines()) or [text]:
        with contextlib.suppress(ValueError):
            found.append(json.loads(raw))
    return found


def server_error(text: str) -> bool:
    """True when the body or one of its events reports a ``server_error`` (an error envelope, a chat stream's error
    frame, a Responses ``error`` event, a failed response): read from the JSON's structure, so a client's own text
    echoed back (``instructions: "server_error"``) does not count."""

    def reports(value: Any) -> bool:
        error = value.get("error") if isinstance(value, dict) else None
        return isinstance(error, dict) and "server_error" in (error.get("type"), error.get("code"))

    return any(reports(value) or reports(value.get("response") if isinstance(value, dict) else None)
               for value in payloads(text))  # fmt: skip


def fastapi_detail(text: str) -> bool:
    """True for FastAPI's validation body (``{"detail": [...]}``), which OpenAI clients cannot read."""
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and "detail" in body


def fuzz_operation(operation: Any, mode: Any, examples: int, send: Send, tally: FuzzTally, adapt: Adapt) -> None:
    """``examples`` generated cases of one operation in one generation mode."""
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        adapt(case)
        status, text = send(case)
        tally.record(operation.label, case.body, status, text)

    run()


def fuzz_schema(
    schema: Any,
    examples: int,
    send: Send,
    tally: FuzzTally,
    *,
    labels: tuple[str, ...] | None = None,
    negative: bool = True,
    adapt: Adapt = lambda case: None,
) -> None:
    """Fuzz every operation of ``schema`` (or those of ``labels``), ``examples`` cases per operation and mode."""
    from schemathesis import GenerationMode
    from schemathesis.core.result import Ok

    started = time.monotonic()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        operation = result.ok()
        if labels is not None and operation.label not in labels:
            continue
        modes = list(GenerationMode) if negative and len(operation.body) else [GenerationMode.POSITIVE]
        for mode in modes:
            fuzz_operation(operation, mode, examples, send, tally, adapt)
    tally.seconds += time.monotonic() - started
