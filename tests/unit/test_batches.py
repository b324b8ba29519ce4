"""Batches through ``create_app`` and a ``BatchRunner`` with scripted engines and a real SQLite store: validation,
the output and error files, usage, cancellation, expiry, privacy by key, and two runners sharing one database
(each line run once)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
from sqlalchemy import select, update

from openai_routes.core.limits import BatchLimits, Limits
from openai_routes.core.metrics import ServerMetrics
from openai_routes.endpoints.batches.runner import BatchRunner
from openai_routes.server.auth import KeyRing
from openai_routes.server.guard import Drain
from openai_routes.store import StoreLimits
from openai_routes.store.book import ResponseBook
from openai_routes.store.pages import now
from openai_routes.store.tables import BATCH_LINES, BATCHES
from tests.unit.fakes import CHAT_MODEL, EMBED_MODEL, FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry

KEY, OTHER_KEY = "sk-unit-batches", "sk-unit-batches-other"
FAST = BatchLimits(poll=0.02, lease=2, lines_in_flight=4, reserve=0, cooldown=0)


@dataclass
class Harness:
    client: httpx.AsyncClient
    other: httpx.AsyncClient
    book: ResponseBook
    generator: FakeGenerateEngine
    runners: list[BatchRunner]
    registry: prometheus_client.CollectorRegistry

    async def upload(self, lines: list[Any], key_owner: str | None = None) -> str:
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
        owner = key_owner if key_owner is not None else owner_of(KEY)

        async def chunks() -> AsyncIterator[bytes]:
            yield text.encode()

        record = await self.book.state.files.create(owner, "batch", "input.jsonl", chunks())
        return record.id

    async def create(self, file_id: str, endpoint: str = "/v1/chat/completions", **fields: Any) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **fields}
        response = await self.client.post("/batches", json=body)
        assert response.status_code == 200, response.text
        created: dict[str, Any] = response.json()
        return created

    async def until(self, batch_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                batch: dict[str, Any] = (await self.client.get(f"/batches/{batch_id}")).json()
                if batch["status"] in statuses:
                    return batch
                await asyncio.sleep(0.02)

    async def lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if file_id is None:
            return []
        content = b"".join([chunk async for chunk in self.book.state.files.content(file_id, owner_of(KEY))])
        return [json.loads(line) for line in content.splitlines()]


def owner_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def chat_line(custom_id: str, **body: Any) -> dict[str, Any]:
    request = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}


@asynccontextmanager
async def serve(tmp_path: Path, runners: int = 1, limits: BatchLimits = FAST) -> AsyncIterator[Harness]:
    generator = FakeGenerateEngine(context=512)
    keyring = KeyRing()
    keyring.set_keys([KEY, OTHER_KEY])
    book = ResponseBook(stale_after=660)
    await book.open(f"sqlite+aiosqlite:///{tmp_path}/state.db", StoreLimits(3600, 65536), purge_every=60)
    registry = fake_registry(generator, FakeEmbedEngine())
    metrics_registry = prometheus_client.CollectorRegistry()
    metrics = ServerMetrics.for_registry(metrics_registry)
    started = [BatchRunner(book, registry, limits, metrics, Drain()) for _ in range(runners)]
    app = build_app(registry, keyring, Limits(), book, batch_runner=started[0])
    for runner in started[1:]:
        runner.attach(started[0].app, started[0].gates)  # type: ignore[arg-type]
    for runner in started:
        runner.start()
    transport = httpx.ASGITransport(app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(KEY)) as client,
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(OTHER_KEY)) as other,
        ):
            yield Harness(client, other, book, generator, started, metrics_registry)
    finally:
        for runner in started:
            await runner.stop()
        await book.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with serve(tmp_path) as harness:
        yield harness


async def test_a_batch_runs_every_line_once_with_its_answer_and_usage(h: Harness) -> None:
    file_id = await h.upload([chat_line(f"line-{i}") for i in range(6)])
    created = await h.create(file_id, metadata={"job": "eval"})
    assert created["status"] == "validating" and created["object"] == "batch"
    assert created["expires_at"] == created["created_at"] + 86400 and created["metadata"] == {"job": "eval"}
    done = await h.until(created["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
    assert done["error_file_id"] is None and done["model"] == CHAT_MODEL
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert done[stamp] >= done["created_at"]
    output = await h.lines(done["output_file_id"])
    assert [line["custom_id"] for line in output] == [f"line-{i}" for i in range(6)]
    first = output[0]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["response"]["request_id"].startswith("req_")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Hello, world"
    per_line = first["response"]["body"]["usage"]
    assert done["usage"]["input_tokens"] == 6 * per_line["prompt_tokens"]
    assert done["usage"]["output_tokens"] == 6 * per_line["completion_tokens"]
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]
    assert len(h.generator.calls) == 6
    assert {call.priority for call in h.generator.calls} == {1}  # behind interactive requests
    await h.client.post("/chat/completions", json=chat_line("online")["body"])
    assert h.generator.calls[-1].priority == 0


async def test_lines_the_endpoint_refuses_go_to_the_error_file(h: Harness) -> None:
    lines = [chat_line("good"), chat_line("streamed", stream=True), chat_line("bad-n", n=0), chat_line("no-model",
             model="nope")]  # fmt: skip
    done = await h.until((await h.create(await h.upload(lines)))["id"], "completed")
    assert done["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert [line["custom_id"] for line in await h.lines(done["output_file_id"])] == ["good"]
    errors = {line["custom_id"]: line["response"] for line in await h.lines(done["error_file_id"])}
    assert errors["streamed"]["status_code"] == 400 and errors["streamed"]["body"]["error"]["param"] == "stream"
    assert errors["bad-n"]["status_code"] == 400 and errors["bad-n"]["body"]["error"]["param"] == "n"
    assert errors["no-model"]["status_code"] == 404


async def test_a_malformed_file_fails_the_batch_with_line_numbers(h: Harness) -> None:
    wrong_url = {**chat_line("c"), "url": "/v1/embeddings"}
    lines = [chat_line("a"), "{not json", chat_line("a"), wrong_url, {**chat_line("d"), "method": "GET"}]
    failed = await h.until((await h.create(await h.upload(lines)))["id"], "failed")
    errors = [(error["line"], error["code"]) for error in failed["errors"]["data"]]
    assert errors == [(2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_url"), (5, "invalid_request")]
    assert failed["failed_at"] >= failed["created_at"] and failed["output_file_id"] is None
    assert h.generator.calls == []


async def test_embeddings_and_responses_batches(h: Harness) -> None:
    embed = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": EMBED_MODEL, "input": f"text {i}"}} for i in range(3)]  # fmt: skip
    done = await h.until((await h.create(await h.upload(embed), "/v1/embeddings"))["id"], "completed")
    vectors = [line["response"]["body"]["data"][0]["embedding"] for line in await h.lines(done["output_file_id"])]
    assert len(vectors) == 3 and all(vectors)
    responses = [{"custom_id": "r", "method": "POST", "url": "/v1/responses",
                  "body": {"model": CHAT_MODEL, "input": "Hi"}}]  # fmt: skip
    done = await h.until((await h.create(await h.upload(responses), "/v1/responses"))["id"], "completed")
    [line] = await h.lines(done["output_file_id"])
    assert line["response"]["body"]["object"] == "response" and line["response"]["body"]["status"] == "completed"
    assert done["usage"]["output_tokens"] == line["response"]["body"]["usage"]["output_tokens"] > 0


async def test_cancel_aborts_running_lines_and_keeps_what_is_done(h: Harness) -> None:
    h.generator.hold = asyncio.Event()  # every line holds after its first step
    created = await h.create(await h.upload([chat_line(f"l{i}") for i in range(8)]))
    await h.until(created["id"], "in_progress")
    async with asyncio.timeout(10):
        while h.generator._in_flight < FAST.lines_in_flight:
            await asyncio.sleep(0.01)
    cancelling = (await h.client.post(f"/batches/{created['id']}/cancel")).json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] >= created["created_at"]
    done = await h.until(created["id"], "cancelled")
    assert done["request_counts"] == {"total": 8, "completed": 0, "failed": 8}
    errors = await h.lines(done["error_file_id"])
    assert sorted(line["custom_id"] for line in errors) == sorted(f"l{i}" for i in range(8))
    assert {line["error"]["code"] for line in errors} == {"batch_cancelled"}
    async with asyncio.timeout(10):
        while h.generator._in_flight:  # the running lines were aborted in the engine
            await asyncio.sleep(0.01)
    assert len(h.generator.calls) == FAST.lines_in_flight  # nothing started after the cancel


async def test_a_batch_past_its_window_expires_with_what_is_done(h: Harness) -> None:
    h.generator.hold = asyncio.Event()
    created = await h.create(await h.upload([chat_line(f"l{i}") for i in range(3)]))
    await h.until(created["id"], "in_progress")
    store = h.book.state.batches
    async with store.engine.begin() as connection:
        batch = {**(await store.get(created["id"], owner_of(KEY)) or {}), "expires_at": now() - 1}
        await connection.execute(
            update(BATCHES).where(BATCHES.c.id == created["id"]).values(deadline=now() - 1, batch=batch)
        )
    done = await h.until(created["id"], "expired")
    assert done["expired_at"] >= created["created_at"]
    assert {line["error"]["code"] for line in await h.lines(done["error_file_id"])} == {"batch_expired"}
    assert done["request_counts"]["failed"] == 3


async def test_another_key_sees_no_batch(h: Harness) -> None:
    created = await h.create(await h.upload([chat_line("a")]))
    assert (await h.other.get(f"/batches/{created['id']}")).status_code == 404
    assert (await h.other.post(f"/batches/{created['id']}/cancel")).status_code == 404
    assert (await h.other.get("/batches")).json()["data"] == []
    assert [batch["id"] for batch in (await h.client.get("/batches")).json()["data"]] == [created["id"]]
    other_file = await h.upload([chat_line("a")], key_owner=owner_of(OTHER_KEY))
    refused = await h.client.post("/batches", json={"input_file_id": other_file, "endpoint": "/v1/chat/completions",
                                                    "completion_window": "24h"})  # fmt: skip
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "input_file_id"


async def test_create_refuses_what_openai_refuses(h: Harness) -> None:
    file_id = await h.upload([chat_line("a")])
    base = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    changes: list[tuple[dict[str, Any], str | None]] = [
        ({"endpoint": "/v1/moderations"}, "endpoint"),
        ({"completion_window": "1h"}, None),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, None),
    ]
    for change, param in changes:
        response = await h.client.post("/batches", json={**base, **change})
        assert response.status_code == 400, response.text
        assert param is None or response.json()["error"]["param"] == param


async def test_two_runners_share_a_batch_and_run_each_line_once(tmp_path: Path) -> None:
    async with serve(tmp_path, runners=2) as h:
        created = await h.create(await h.upload([chat_line(f"l{i}") for i in range(40)]))
        done = await h.until(created["id"], "completed", timeout=60)
        output = await h.lines(done["output_file_id"])
        assert sorted(line["custom_id"] for line in output) == sorted(f"l{i}" for i in range(40))
        assert len(h.generator.calls) == 40
        async with h.book.state.engine.connect() as connection:
            rows = (await connection.execute(select(BATCH_LINES.c.worker, BATCH_LINES.c.attempts))).all()
        assert {attempts for _worker, attempts in rows} == {1}
        assert {worker for worker, _attempts in rows} == {runner.worker for runner in h.runners}


async def test_an_empty_file_or_a_deleted_one_fails_the_batch(h: Harness) -> None:
    empty = await h.until((await h.create(await h.upload(["", "  "])))["id"], "failed")
    assert [error["code"] for error in empty["errors"]["data"]] == ["empty_file"]
    file_id = await h.upload([chat_line("a")])
    for runner in h.runners:  # the file goes before any worker validates the batch
        await runner.stop()
    created = await h.create(file_id)
    assert (await h.client.delete(f"/files/{file_id}")).status_code == 200
    for runner in h.runners:
        runner.start()
    gone = await h.until(created["id"], "failed")
    assert [(error["code"], error["param"]) for error in gone["errors"]["data"]] == [
        ("file_not_found", "input_file_id")
    ]


async def test_lines_are_counted_by_status_in_the_metrics(tmp_path: Path) -> None:
    async with serve(tmp_path) as h:
        created = await h.create(await h.upload([chat_line("a"), chat_line("b"), chat_line("c", n=0)]))
        await h.until(created["id"], "completed")
        sample = h.registry.get_sample_value
        counted = {
            status: sample("bento_oai_batch_lines_total", {"status": status}) for status in ("completed", "failed")
        }
        assert counted == {"completed": 2, "failed": 1}
        assert sample("bento_oai_batch_lines_in_flight") == 0


async def test_a_finished_batch_is_purged_with_its_lines_once_expired(h: Harness) -> None:
    created = await h.create(await h.upload([chat_line("a")]))
    await h.until(created["id"], "completed")
    state = h.book.state
    await state.purge_expired(now=created["expires_at"] + 3600 - 10)  # kept the store's ttl past its window
    assert (await h.client.get(f"/batches/{created['id']}")).status_code == 200
    await state.purge_expired(now=created["expires_at"] + 3600 + 1)  # the window's end plus the store's ttl
    assert (await h.client.get(f"/batches/{created['id']}")).status_code == 404
    async with state.engine.connect() as connection:
        assert (await connection.execute(select(BATCH_LINES.c.seq))).all() == []


async def test_batch_lines_wait_while_interactive_requests_run_and_for_the_cooldown(tmp_path: Path) -> None:
    async with serve(tmp_path, limits=BatchLimits(poll=0.02, lease=2, lines_in_flight=4, reserve=0, cooldown=0.5)) as h:
        h.generator.hold = asyncio.Event()  # the interactive request holds after its first step
        online = asyncio.create_task(h.client.post("/chat/completions", json=chat_line("online")["body"]))
        async with asyncio.timeout(5):
            while not h.generator.calls:
                await asyncio.sleep(0.01)
        created = await h.create(await h.upload([chat_line(f"l{i}") for i in range(3)]))
        await h.until(created["id"], "in_progress")
        await asyncio.sleep(0.8)  # past the cooldown, but the interactive request still runs
        assert len(h.generator.calls) == 1, "no batch line starts beside a running interactive request"
        h.generator.hold.set()
        assert (await online).status_code == 200
        ended = asyncio.get_running_loop().time()
        await h.until(created["id"], "completed")
        first_line = h.generator.calls[1]
        assert first_line.priority == 1 and asyncio.get_running_loop().time() - ended >= 0.5
