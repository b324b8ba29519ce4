"""Stored responses outlive the process that wrote them, and replicas share them: servers of their own.

- A graceful restart (SIGTERM, then a new server on the same SQLite file): stored responses read back as they
  were, their chains continue, a deletion stays deleted, and a background response still running at the
  shutdown reads ``failed``. The stream cut by the end of the grace ends with a Responses ``error`` event.
- A SIGKILL of the whole server (arbiter, worker group, engine processes) while many short stored responses
  are being written: the file is intact, and the store's own code (``openai_routes.store``, what a new server would
  open) reads every response whose POST returned 200 as it was answered (that a restarted server serves what its
  predecessor stored is the graceful restart's proof).
- Two servers on one real PostgreSQL (pgserver, started here in a temporary directory): what one writes, the
  other reads, lists, chains on, polls, cancels and deletes; another key sees none of it on either.

Four servers (``tests.e2e.servers``), booted ahead by the pool, each with a 3-second grace: the restart's two lives
are the lora server's (``tests/configs/lora.yaml``: the chat model alone, its LoRA engine on, one SQLite file for
both; the second boots once the first has stopped, while other tests run, so its tests are among the run's last),
and the replicas (``tests/configs/short-grace.yaml``; test_orphans then SIGKILLs the second replica's arbiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from openai.types.responses import Response
from sqlalchemy import select

from openai_routes.store import StateStore, StoreLimits
from openai_routes.store.tables import BATCH_LINES
from tests.e2e import servers
from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import (
    endless_response,
    engine_running,
    envelope,
    response_events,
    wait_engine_idle,
    wait_for,
)
from tests.e2e.server import Server, still_alive
from tests.schema_check import check

RESPONSES = "/v1/responses"
WORKER_MODULE = "_bentoml_impl.worker.service"
ABORT_WITHIN = 10

pytestmark = pytest.mark.slow


def session(server: Server, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key or server.api_key}"}
    return httpx.Client(base_url=server.base_url, headers=headers, timeout=120)


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    body = {"model": CHAT_MODEL, "temperature": 0, "max_output_tokens": 30, **body}
    response = http.post(RESPONSES, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def fetch(http: httpx.Client, response_id: str, path: str = "", **params: Any) -> dict[str, Any]:
    response = http.get(f"{RESPONSES}/{response_id}{path}", params=params)
    assert response.status_code == 200, response.text
    fetched: dict[str, Any] = response.json()
    return fetched


def text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message" for part in item["content"])


def assert_same_run(one: dict[str, Any], other: dict[str, Any]) -> None:
    """Two responses ran the same prompt and generated the same text (greedy)."""
    assert one["usage"]["input_tokens"] == other["usage"]["input_tokens"]
    assert text(one) == text(other) and text(one)


def replayed(*turns: tuple[str, dict[str, Any]]) -> list[Any]:
    """A chain written out as input items: each user turn, then the response's output as the client got it."""
    return [item for question, answer in turns for item in ({"role": "user", "content": question}, *answer["output"])]


def poll(http: httpx.Client, response_id: str, timeout: float = 120) -> dict[str, Any]:
    latest: list[dict[str, Any]] = []

    def finished() -> bool:
        latest[:] = [fetch(http, response_id)]
        return latest[0]["status"] not in ("queued", "in_progress")

    wait_for(finished, timeout, f"{response_id} to finish", interval=0.5)
    return latest[0]


@pytest.fixture(scope="module")
def key(pool: ServerPool) -> str:
    """One key for every server of the module: stored responses belong to it, across restarts."""
    return pool.key("store")[0]


@pytest.fixture(scope="module")
def other_store_key(pool: ServerPool) -> str:
    """The second key the store's servers accept: another caller."""
    return pool.key("store")[1]


@pytest.fixture(scope="module")
def sqlite_dir(pool: ServerPool) -> Path:
    """Where the SQLite store lives for the restart and kill tests (each server logs in a directory of its own)."""
    return servers.sqlite_dir(pool)


# --- a graceful restart ------------------------------------------------------------------------------------


@dataclass
class StreamTail:
    """A raw Responses stream read in a thread until it ends: its body, or what broke it."""

    server: Server
    started: threading.Event = field(default_factory=threading.Event)
    raw: str = ""
    failure: str | None = None

    def run(self) -> None:
        body = {"model": CHAT_MODEL, **endless_response(stream=True)}
        try:
            with session(self.server) as http, http.stream("POST", RESPONSES, json=body) as response:
                assert response.status_code == 200, response.read()
                for chunk in response.iter_text():
                    self.raw += chunk
                    if self.raw.count("response.output_text.delta") >= 3:
                        self.started.set()
        except Exception as exc:
            self.failure = repr(exc)
        finally:
            self.started.set()


@dataclass(frozen=True)
class SavedState:
    """A conversation (extended by a response) and a stored chat completion, as their owner read them."""

    conversation: dict[str, Any]
    items: dict[str, Any]
    completion: dict[str, Any]


def save_state(http: httpx.Client) -> SavedState:
    """A conversation with a response's turn in it, and a chat completion made with ``store: true``."""
    made = http.post("/v1/conversations", json={"items": [{"role": "user", "content": "Hello!"}]}).json()
    create(http, input="What is the capital of France?", conversation=made["id"])
    items = http.get(f"/v1/conversations/{made['id']}/items", params={"order": "asc"}).json()
    assert [item["role"] for item in items["data"]] == ["user", "user", "assistant"], items
    chat = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "store": True}
    completion = http.post("/v1/chat/completions", json={**chat, "metadata": {"kept": "yes"}}).json()
    return SavedState(made, items, http.get(f"/v1/chat/completions/{completion['id']}").json())


def assert_state_kept(http: httpx.Client, other: httpx.Client, state: SavedState) -> None:
    """``state`` reads the same for its owner, and does not exist for another key."""
    conversation, completion = (
        f"/v1/conversations/{state.conversation['id']}",
        f"/v1/chat/completions/{state.completion['id']}",
    )
    assert http.get(conversation).json() == state.conversation
    assert http.get(f"{conversation}/items", params={"order": "asc"}).json() == state.items
    assert http.get(completion).json() == state.completion
    listed = http.get("/v1/chat/completions", params={"metadata[kept]": "yes"}).json()["data"]
    assert state.completion in listed
    for path in (conversation, f"{conversation}/items", completion, f"{completion}/messages"):
        assert envelope(other.get(path), 404)["code"] == "not_found"
    assert state.completion["id"] not in [item["id"] for item in other.get("/v1/chat/completions").json()["data"]]


@dataclass(frozen=True)
class FirstLife:
    """What the first server wrote before its SIGTERM, as its clients got it."""

    stored: dict[str, Any]
    chained: dict[str, Any]
    input_items: dict[str, Any]
    deleted_id: str
    background_id: str
    stream: StreamTail
    state: SavedState


@pytest.fixture(scope="module")
def first_life(pool: ServerPool) -> FirstLife:
    """The lora server (``tests/configs/lora.yaml``, SQLite, a 3-second grace), after test_lora's tests: what it
    writes, then its graceful stop with a background response and a stream running."""
    srv = pool.get("lora")
    try:
        with session(srv) as http:
            items = [
                {"role": "user", "content": "Hello!"},
                {"role": "user", "content": "What is the capital of France?"},
            ]
            stored = create(http, input=items, instructions="Answer briefly.", metadata={"life": "first"})
            chained = create(http, input="And of Germany?", previous_response_id=stored["id"])
            input_items = fetch(http, stored["id"], "/input_items")
            deleted_id = create(http, input="Say hi.", max_output_tokens=16)["id"]
            assert http.delete(f"{RESPONSES}/{deleted_id}").status_code == 200
            state = save_state(http)
            background = create(http, **endless_response(background=True))
            wait_for(lambda: fetch(http, background["id"])["status"] == "in_progress", 30, "the background run")
        stream = StreamTail(srv)
        thread = threading.Thread(target=stream.run, daemon=True)
        thread.start()
        assert stream.started.wait(60) and stream.failure is None, stream.failure
        assert engine_running(srv.base_url, CHAT_MODEL) == 2  # the background run and the stream, both running
    finally:
        srv.stop()  # SIGTERM, then the tree's exit
    assert not srv.killed, f"processes of the server left running after it stopped: {srv.killed}"
    thread.join(30)
    lived = srv.notes["first_life"] = FirstLife(
        stored, chained, input_items, deleted_id, background["id"], stream, state
    )
    return lived


@pytest.fixture(scope="module")
def first_life_left(pool: ServerPool) -> FirstLife:
    """What ``first_life`` left: its test ran among the lora server's; the second life's tests are the run's last."""
    first = pool.started.get("lora")
    assert first is not None and "first_life" in first.server.notes, "the stream-cut test first"
    lived: FirstLife = first.server.notes["first_life"]
    return lived


@pytest.fixture(scope="module")
def second_life(pool: ServerPool, first_life_left: FirstLife) -> Server:
    """A new server on the first one's SQLite file and config (the kill test ends it)."""
    return pool.get("lora-again")


@pytest.mark.ends_server
def test_a_stream_cut_by_the_end_of_the_grace_ends_with_an_error_event(first_life: FirstLife) -> None:
    """OpenAI's way: an ``error`` event in the stream's own framing and numbering, and no ``[DONE]``."""
    stream = first_life.stream
    assert stream.failure is None, f"the stream broke instead of ending: {stream.failure}"
    events = response_events(stream.raw)
    kinds = [event["type"] for event in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] in ("error", "response.failed"), kinds[-3:]
    errors = [event for event in events if event["type"] == "error"]
    assert errors and errors[0]["code"] == "service_unavailable", errors


def test_graceful_restart_keeps_stored_responses(
    first_life_left: FirstLife, second_life: Server, other_store_key: str
) -> None:
    first_life = first_life_left
    stored, chained = first_life.stored, first_life.chained
    with session(second_life) as http:
        assert fetch(http, stored["id"]) == stored
        check(stored, Response)
        assert fetch(http, chained["id"]) == chained
        assert fetch(http, stored["id"], "/input_items") == first_life.input_items
        assert envelope(http.get(f"{RESPONSES}/{first_life.deleted_id}"), 404)["param"] == "response_id"
        with session(second_life, other_store_key) as other:
            assert_state_kept(http, other, first_life.state)  # conversations and stored completions, durable too
        # The chain goes on: the same as its turns replayed (earlier instructions stay behind, as they should).
        third = create(http, input="And of Italy?", previous_response_id=chained["id"], store=False)
        assert third["previous_response_id"] == chained["id"]
        stored_items = [{"role": "user", "content": "Hello!"}, *replayed(("What is the capital of France?", stored))]
        oracle = create(
            http,
            input=[
                *stored_items,
                *replayed(("And of Germany?", chained)),
                {"role": "user", "content": "And of Italy?"},
            ],
            store=False,
        )
        assert_same_run(third, oracle)


def test_a_background_response_running_at_shutdown_reads_failed(
    first_life_left: FirstLife, second_life: Server
) -> None:
    with session(second_life) as http:
        background = fetch(http, first_life_left.background_id)
    assert background["status"] == "failed", background["status"]
    check(background, Response)  # every field, its error's too
    assert background["error"] and background["error"]["message"], background["error"]
    assert background["background"] is True


# --- a SIGKILL during writes -------------------------------------------------------------------------------


async def write_until_stopped(server: Server, index: int, answered: list[dict[str, Any]], stop: asyncio.Event) -> int:
    """Short stored responses one after another; those answered 200 go to ``answered``. Returns the failures."""
    failures = 0
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=60) as http:
        for n in range(10_000):
            if stop.is_set():
                break
            body = {
                "model": CHAT_MODEL,
                "input": f"Say hello to friend number {index * 1000 + n}.",
                "max_output_tokens": 16,
                "store": True,
            }
            try:
                response = await http.post(RESPONSES, json=body)
            except httpx.TransportError:
                failures += 1
                break
            if response.status_code == 200:
                answered.append(response.json())
    return failures


def kill_everything(server: Server) -> list[psutil.Process]:
    """SIGKILL the arbiter (so nothing restarts the worker), the worker's process group, and every process the
    server ever had, by pid; returns them once they are gone."""
    assert server.process is not None
    processes = list({p.pid: p for p in [*server.started_tree, *server.tree()]}.values())
    workers = [p for p in processes if WORKER_MODULE in " ".join(p.cmdline())]
    assert len(workers) == 1, workers
    server.process.send_signal(signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(workers[0].pid, signal.SIGKILL)
    for process in still_alive(processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _, alive = psutil.wait_procs(processes, timeout=20)
    assert not still_alive(alive), f"still running after SIGKILL: {alive}"
    server.process.wait(10)
    return processes


@pytest.mark.ends_server
async def test_sigkill_while_writing_leaves_every_answered_response_readable(
    second_life: Server, key: str, sqlite_dir: Path
) -> None:
    answered: list[dict[str, Any]] = []
    stop = asyncio.Event()
    writers = [asyncio.create_task(write_until_stopped(second_life, i, answered, stop)) for i in range(12)]
    started = asyncio.get_running_loop().time()
    while len(answered) < 40:
        assert asyncio.get_running_loop().time() - started < 180, f"only {len(answered)} answered in 180 s"
        assert not any(writer.done() for writer in writers), [w.result() for w in writers if w.done()]
        await asyncio.sleep(0.1)
    killed = kill_everything(second_life)  # 12 requests in flight: some between their last token and their write
    stop.set()
    broken = sum(await asyncio.gather(*writers))
    print(f"\nSIGKILL during writes: {len(answered)} answered, {broken} cut, {len(killed)} processes killed")
    database = sqlite_dir / "responses.db"
    with contextlib.closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = await StateStore.open(f"sqlite+aiosqlite:///{database}", StoreLimits(3600, 1 << 24))
    try:
        owner = hashlib.sha256(key.encode()).hexdigest()  # the owner the server recorded: the key's digest
        records = {body["id"]: await store.responses.get(body["id"], owner) for body in answered}
    finally:
        await store.close()
    missing = [body["id"] for body in answered if records[body["id"]] is None]
    changed = [body["id"] for body in answered if (record := records[body["id"]]) and record.response != body]
    assert not missing + changed, f"of {len(answered)} answered responses, lost {missing[:5]}, changed {changed[:5]}"
    last = records[answered[-1]["id"]]
    assert last is not None and last.input_items[0]["content"][0]["text"].startswith("Say hello to friend number")


# --- two replicas on one PostgreSQL ------------------------------------------------------------------------


@dataclass(frozen=True)
class Replicas:
    one: Server
    two: Server
    other_key: str
    database: str  # the URL of the PostgreSQL database they share


@pytest.fixture(scope="module")
def replicas(pool: ServerPool) -> Replicas:
    """Two servers on one real PostgreSQL (pgserver, ``tests.e2e.servers.postgres_store``), both keys accepted."""
    one, two = pool.get("replica-one"), pool.get("replica-two")
    database = servers.postgres_store(pool, pool.directory)["BENTO_OAI_STORE_URL"]
    return Replicas(one, two, pool.key("store")[1], database)


async def test_replicas_run_one_batch_together_and_no_line_twice(replicas: Replicas) -> None:
    """A batch made on replica one is worked by both (each claims lines ``FOR UPDATE SKIP LOCKED``); read on replica
    two, its output holds every ``custom_id`` once, and the database shows each line run once, by both replicas."""
    one = openai.OpenAI(base_url=f"{replicas.one.base_url}/v1", api_key=replicas.one.api_key)
    two = openai.OpenAI(base_url=f"{replicas.two.base_url}/v1", api_key=replicas.two.api_key)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": CHAT_MODEL, "messages": [{"role": "user", "content": f"Say the number {i}."}],
                       "max_tokens": 8}} for i in range(48)]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines)
    file_id = one.files.create(file=("lines.jsonl", text.encode()), purpose="batch").id
    batch = one.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: two.batches.retrieve(batch.id).status in ("completed", "failed"), 300, "the batch", 0.5)
    done = two.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id is not None, done
    output = [json.loads(line) for line in one.files.content(done.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == sorted(f"r{i}" for i in range(48))
    store = await StateStore.open(replicas.database, StoreLimits(3600, 1 << 24))
    try:
        async with store.engine.connect() as connection:
            lines_of = select(BATCH_LINES.c.worker, BATCH_LINES.c.attempts).where(BATCH_LINES.c.batch_id == batch.id)
            rows = (await connection.execute(lines_of)).all()
    finally:
        await store.close()
    assert len(rows) == 48 and {attempts for _worker, attempts in rows} == {1}
    assert len({worker for worker, _attempts in rows}) == 2, "both replicas ran lines"


def test_replicas_share_stored_responses(replicas: Replicas) -> None:
    with session(replicas.one) as one, session(replicas.two) as two, session(replicas.two, replicas.other_key) as other:
        items = [{"role": "user", "content": "Hello!"}, {"role": "user", "content": "What is the capital of France?"}]
        first = create(one, input=items, instructions="Answer briefly.")
        assert fetch(two, first["id"]) == first
        assert fetch(two, first["id"], "/input_items") == fetch(one, first["id"], "/input_items")
        second = create(two, input="And of Germany?", previous_response_id=first["id"])
        assert fetch(one, second["id"]) == second
        oracle = create(
            one,
            input=[items[0], *replayed((items[1]["content"], first)), {"role": "user", "content": "And of Germany?"}],
            store=False,
        )
        assert_same_run(second, oracle)
        for response_id in (first["id"], second["id"]):
            assert envelope(other.get(f"{RESPONSES}/{response_id}"), 404)["param"] == "response_id"
        deleted = two.delete(f"{RESPONSES}/{first['id']}")
        assert deleted.json() == {"id": first["id"], "object": "response", "deleted": True}
        assert envelope(one.get(f"{RESPONSES}/{first['id']}"), 404)["param"] == "response_id"
        error = envelope(
            one.post(
                RESPONSES,
                json={
                    "model": CHAT_MODEL,
                    "input": "Hi",
                    "max_output_tokens": 16,
                    "previous_response_id": second["id"],
                },
            ),
            400,
        )
        assert error["code"] == "previous_response_not_found"  # its chain lost a link


def test_replicas_share_conversations_and_stored_completions(replicas: Replicas) -> None:
    with session(replicas.one) as one, session(replicas.two) as two, session(replicas.two, replicas.other_key) as other:
        state = save_state(one)
        assert_state_kept(two, other, state)
        path = f"/v1/conversations/{state.conversation['id']}"
        turn = create(two, input="And of Germany?", conversation=state.conversation["id"])  # on the other replica
        items = one.get(f"{path}/items", params={"order": "asc"}).json()["data"]
        assert [item["id"] for item in items] == [*(item["id"] for item in state.items["data"]), items[3]["id"],
                                                  turn["output"][0]["id"]]  # fmt: skip
        refused = other.post(RESPONSES, json={"model": CHAT_MODEL, "input": "Hi", "conversation": path.rsplit("/")[-1]})
        assert envelope(refused, 404)["param"] == "conversation"
        assert two.delete(f"/v1/chat/completions/{state.completion['id']}").status_code == 200
        assert envelope(one.get(f"/v1/chat/completions/{state.completion['id']}"), 404)["code"] == "not_found"
        assert two.delete(path).json()["deleted"] is True
        assert envelope(one.get(f"{path}/items"), 404)["param"] == "conversation_id"


def test_a_background_response_is_polled_on_the_other_replica(replicas: Replicas) -> None:
    with session(replicas.one) as one, session(replicas.two) as two:
        queued = create(one, input="Write a short poem about the sea.", max_output_tokens=60, background=True)
        final = poll(two, queued["id"])
        assert final["status"] in ("completed", "incomplete") and text(final)
        assert fetch(one, queued["id"]) == final


def test_a_cancel_on_the_other_replica_stops_the_run(replicas: Replicas) -> None:
    """The run lives in replica one's worker; the cancel comes to replica two. It must still stop the engine."""
    wait_engine_idle(replicas.one, CHAT_MODEL, timeout=60)
    with session(replicas.one) as one, session(replicas.two) as two:
        queued = create(one, **endless_response(background=True))
        wait_for(lambda: engine_running(replicas.one.base_url, CHAT_MODEL) == 1, 30, "the run in replica one")
        cancelled = two.post(f"{RESPONSES}/{queued['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        wait_engine_idle(replicas.one, CHAT_MODEL, timeout=ABORT_WITHIN)  # a run left going ends with the module
        assert fetch(one, queued["id"])["status"] == "cancelled"
        assert fetch(two, queued["id"]) == fetch(one, queued["id"])
