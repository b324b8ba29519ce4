"""The ``/v1`` OpenAPI schema fuzzed in-process: over 10,000 schemathesis cases against ``create_app``'s real app (its
middleware, routers, validation and error handlers) with fake engines and a real SQLite response store, through
schemathesis' ASGI transport, on two processes. No case may get a 5xx, a ``server_error`` or FastAPI's 422 body
(``tests/fuzzing.py``).

Two passes, as the real server's sample (``tests/e2e/test_hostile_input.py``): schema-wide (every operation, positive
and negative cases, whatever model they name), then served-model cases (positive, naming the fake models, so they
reach the engines and the store).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from openai_routes.core.limits import Limits
from openai_routes.server.auth import KeyRing
from openai_routes.store import StoreLimits
from openai_routes.store.book import ResponseBook
from tests.fuzzing import FuzzTally, fuzz_schema, server_error
from tests.unit.fakes import CHAT_MODEL, EMBED_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

KEY = "sk-unit-fuzz-key"
SCHEMA_WIDE_EXAMPLES = 300  # per operation and generation mode (33 operations: about 19,000 cases)
SERVED_EXAMPLES = 700  # per generation endpoint, with a served model's name
GENERATION = ("POST /chat/completions", "POST /completions", "POST /responses", "POST /embeddings")
MINIMUM_CASES = 10_000
SCHEMA_LOAD_TIMEOUT = 600  # seconds


class WithBook:
    """The app with an ASGI lifespan that opens its response store (on the loop the transport runs the app on)."""

    def __init__(self, app: ASGIApp, book: ResponseBook, url: str) -> None:
        self.app, self.book, self.url = app, book, url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.book.open(self.url, StoreLimits(3600, 1 << 20), purge_every=3600)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.book.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


@contextlib.contextmanager
def app_schema(store: Path) -> Iterator[Any]:
    """The app's schema, loaded through schemathesis' ASGI transport (cases sent with it reach the app in-process)."""
    import schemathesis
    from schemathesis.python import asgi

    keyring = KeyRing()
    keyring.set_keys([KEY])
    book = ResponseBook(stale_after=660)
    generator = FakeGenerateEngine(context=1 << 20)  # a fuzzed prompt is not refused for its length alone
    app = build_app(fake_registry(generator, FakeEmbedEngine()), keyring, Limits(max_n=4, max_tokens=8), book)
    served = WithBook(app, book, f"sqlite+aiosqlite:///{store}")
    try:
        # The shares run at the lowest priority beside the e2e servers: schemathesis' 10 s default for loading the
        # schema is too short when the engines hold both cores (CI saw it time out).
        yield schemathesis.openapi.from_asgi(
            "/openapi.json", served, headers={"Authorization": f"Bearer {KEY}"}, timeout=SCHEMA_LOAD_TIMEOUT
        )
    finally:
        asgi.shutdown_lifespans()


def send(case: Any) -> tuple[int, str]:
    try:
        response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
    except Exception as exc:  # raised out of the app: a server answers it 500 (Starlette's ServerErrorMiddleware)
        return 500, f"raised {exc!r}"
    return response.status_code, response.text


def name_a_served_model(case: Any) -> None:
    if isinstance(case.body, dict):
        case.body["model"] = EMBED_MODEL if case.operation.label == "POST /embeddings" else CHAT_MODEL


def fuzz_pass(kind: str, part: int, store: Path) -> FuzzTally:
    """One share of the fuzz, in a process of its own: half (``part`` 0 or 1) of the schema-wide operations or of
    the served-model ones, alternating in label order. What it raises comes back as a ``RuntimeError`` with its
    text (schemathesis' errors do not survive the trip back: their pickles lack their arguments)."""
    try:
        return run_share(kind, part, store)
    except Exception as exc:
        raise RuntimeError(f"fuzz share {kind} {part} raised {type(exc).__name__}: {exc}") from None


def run_share(kind: str, part: int, store: Path) -> FuzzTally:
    tally = FuzzTally()
    with app_schema(store) as schema:
        if kind == "served":
            labels = GENERATION[part::2]
            fuzz_schema(schema, SERVED_EXAMPLES, send, tally, labels=labels, negative=False, adapt=name_a_served_model)
        else:
            every = sorted(result.ok().label for result in schema.get_all_operations())
            fuzz_schema(schema, SCHEMA_WIDE_EXAMPLES, send, tally, labels=tuple(every[part::2]))
    return tally


class BackgroundFuzz:
    """The fuzz's four shares on two processes at the lowest priority, started when collection ends
    (``tests/unit/conftest.py``): its cases are generated on whatever CPU the other tests leave idle, and its
    test, which runs last, collects them."""

    JOBS = (("wide", 0), ("served", 0), ("wide", 1), ("served", 1))  # two each, in submission order

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="bento-oai-fuzz-"))
        context = multiprocessing.get_context("spawn")
        self.processes = ProcessPoolExecutor(2, mp_context=context, initializer=os.nice, initargs=(19,))
        self.futures = {
            job: self.processes.submit(fuzz_pass, *job, self.directory / f"{job[0]}-{job[1]}.db") for job in self.JOBS
        }

    def results(self) -> tuple[FuzzTally, FuzzTally]:
        """The schema-wide and the served-model tallies, once every share is done."""
        done = {job: future.result() for job, future in self.futures.items()}
        return done["wide", 0] + done["wide", 1], done["served", 0] + done["served", 1]

    def close(self) -> None:
        self.processes.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.directory, ignore_errors=True)


BACKGROUND = pytest.StashKey[BackgroundFuzz]()


@pytest.mark.slow
def test_ten_thousand_fuzzed_cases_get_no_5xx_and_no_422(request: pytest.FixtureRequest) -> None:
    """Collects the background fuzz (``tests/unit/conftest.py`` starts it when collection ends)."""
    schema_wide, served = request.config.stash[BACKGROUND].results()
    print(f"\nin-process fuzz (CPU seconds of its shares): schema-wide {schema_wide.summary()}; "
          f"served-model {served.summary()}")  # fmt: skip
    failures = schema_wide.failures + served.failures
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:20])
    assert schema_wide.cases + served.cases >= MINIMUM_CASES
    assert served.statuses[200] > SERVED_EXAMPLES, "few fuzz cases reached the engines"
    assert schema_wide.statuses[400] > 0 and schema_wide.statuses[404] > 0, schema_wide.statuses


def test_a_server_error_is_read_from_the_bodys_structure_not_from_echoed_text() -> None:
    envelope = '{"error": {"message": "m", "type": "server_error", "param": null, "code": null}}'
    assert server_error(envelope)
    assert server_error(f"data: {{}}\n\ndata: {envelope}\n\ndata: [DONE]\n\n")  # a chat stream's error frame
    failed = '{"type": "response.failed", "response": {"status": "failed", "error": {"code": "server_error"}}}'
    assert server_error(f"event: response.failed\ndata: {failed}\n\n")
    assert not server_error('{"object": "response", "instructions": "server_error", "error": null}')
    assert not server_error('{"error": {"message": "server_error", "type": "invalid_request_error"}}')
