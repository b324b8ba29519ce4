"""The Files routes through ``create_app`` with a real SQLite store: the objects (every field of the SDK's types),
pages, content, privacy by key, the form's errors, the caps; and over raw ASGI, an upload that is never buffered
whole: a body past the cap is refused while it still streams, a large one is stored in bounded memory, and a client
that leaves mid-upload leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from openai.types import FileDeleted, FileObject
from starlette.types import Message, Scope

from openai_routes.core.limits import FORM_OVERHEAD, Limits
from openai_routes.server.auth import KeyRing
from openai_routes.store import StoreLimits
from openai_routes.store.book import ResponseBook
from tests.schema_check import check
from tests.unit.fakes import FakeEmbedEngine, FakeGenerateEngine, build_app, fake_registry, http_scope
from tests.unit.test_responses import KEY, OTHER_KEY, auth, error_of

MAX_FILE = 1 << 20
MAX_LINES = 5
BOUNDARY = "bento-oai-test-boundary"


@dataclass
class Files:
    app: FastAPI
    client: httpx.AsyncClient
    other: httpx.AsyncClient
    book: ResponseBook

    async def upload(self, data: bytes, purpose: str = "batch", **form: str) -> httpx.Response:
        return await self.client.post("/files", data={"purpose": purpose, **form}, files={"file": ("in.jsonl", data)})

    async def listed(self, **query: Any) -> dict[str, Any]:
        response = await self.client.get("/files", params=query)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page


@asynccontextmanager
async def serve(tmp_path: Path, limits: Limits | None = None) -> AsyncIterator[Files]:
    keyring = KeyRing()
    keyring.set_keys([KEY, OTHER_KEY])
    book = ResponseBook(stale_after=660)
    store = StoreLimits(3600, 65536, max_file_bytes=MAX_FILE, max_batch_lines=MAX_LINES)
    await book.open(f"sqlite+aiosqlite:///{tmp_path}/files.db", store, purge_every=60)
    limits = limits or Limits(max_file_bytes=MAX_FILE)
    app = build_app(fake_registry(FakeGenerateEngine(), FakeEmbedEngine()), keyring, limits, book)
    transport = httpx.ASGITransport(app)
    try:
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(KEY)) as client,
            httpx.AsyncClient(transport=transport, base_url="http://t", headers=auth(OTHER_KEY)) as other,
        ):
            yield Files(app, client, other, book)
    finally:
        await book.close()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Files]:
    async with serve(tmp_path) as files:
        yield files


async def test_upload_retrieve_list_content_delete(h: Files) -> None:
    data = b'{"custom_id": "1"}\n{"custom_id": "2"}\n'
    made = check((await h.upload(data)).json(), FileObject)
    assert made.id.startswith("file-") and (made.bytes, made.filename, made.purpose) == (len(data), "in.jsonl", "batch")
    assert made.status == "processed" and made.expires_at == made.created_at + 3600  # the store's ttl
    assert abs(made.created_at - time.time()) < 60
    got = (await h.client.get(f"/files/{made.id}")).json()
    assert check(got, FileObject) == made
    assert (await h.listed())["data"] == [got]
    content = await h.client.get(f"/files/{made.id}/content")
    assert content.status_code == 200 and content.content == data
    assert content.headers["content-length"] == str(len(data))
    deleted = (await h.client.delete(f"/files/{made.id}")).json()
    assert check(deleted, FileDeleted) and deleted == {"id": made.id, "object": "file", "deleted": True}
    for response in (await h.client.get(f"/files/{made.id}"), await h.client.delete(f"/files/{made.id}")):
        assert error_of(response, 404) == {
            "message": f"No such File object: {made.id}", "type": "invalid_request_error", "param": "id", "code": None,
        }  # fmt: skip


async def test_a_multi_chunk_file_round_trips(tmp_path: Path) -> None:
    async with serve(tmp_path / "big", Limits(max_file_bytes=4 << 20)) as files:
        files.book.state.files.max_file_bytes = 4 << 20
        data = bytes(range(256)) * ((5 << 20) // 2 // 256)  # 2.5 MiB: three chunk rows
        made = (await files.upload(data, purpose="user_data")).json()
        assert made["bytes"] == len(data)
        assert (await files.client.get(f"/files/{made['id']}/content")).content == data


async def test_expires_after_sets_expires_at(h: Files) -> None:
    form = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}
    made = (await h.upload(b"{}\n", **form)).json()
    assert made["expires_at"] - made["created_at"] in (7200, 7199)


@pytest.mark.parametrize(
    ("form", "param"),
    [
        ({"expires_after[anchor]": "now", "expires_after[seconds]": "7200"}, "expires_after.anchor"),
        ({"expires_after[seconds]": "7200"}, "expires_after.anchor"),
        ({"expires_after[anchor]": "created_at"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "60"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, "expires_after.seconds"),
        ({"expires_after[anchor]": "created_at", "expires_after[seconds]": "1e4"}, "expires_after.seconds"),
        ({"purpose": "batch_output"}, "purpose"),  # what the service writes, never what a client uploads
        ({"purpose": "nonsense"}, "purpose"),
    ],
)
async def test_bad_form_fields_are_a_400_on_their_param(h: Files, form: dict[str, str], param: str) -> None:
    response = await h.client.post("/files", data={"purpose": "batch", **form}, files={"file": ("in.jsonl", b"{}\n")})
    assert error_of(response, 400)["param"] == param
    assert (await h.listed())["data"] == []


async def test_a_body_that_is_not_an_upload_is_a_400(h: Files) -> None:
    no_file = await h.client.post("/files", data={"purpose": "batch"}, files={"other": ("x", b"x")})
    assert error_of(no_file, 400)["param"] == "file"
    field_not_file = await h.client.post("/files", data={"purpose": "batch", "file": "text"}, files={"o": ("x", b"")})
    assert error_of(field_not_file, 400)["param"] == "file"
    no_purpose = await h.client.post("/files", files={"file": ("in.jsonl", b"{}\n")})
    assert error_of(no_purpose, 400)["param"] == "purpose"
    assert error_of(await h.client.post("/files", json={"purpose": "batch"}), 400)["param"] == "file"
    broken = await h.client.post("/files", content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data"})
    assert error_of(broken, 400)["type"] == "invalid_request_error"
    two_files = await h.client.post(
        "/files", data={"purpose": "batch"}, files=[("file", ("a", b"a")), ("f", ("b", b""))]
    )
    assert error_of(two_files, 400)["type"] == "invalid_request_error"
    assert (await h.listed())["data"] == []


async def test_caps_refuse_cleanly_and_keep_nothing(h: Files) -> None:
    over = await h.upload(b"x" * (MAX_FILE + 1), purpose="user_data")
    assert error_of(over, 413) | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "file", "code": "file_too_large",
    }  # fmt: skip
    far_over = await h.upload(b"x" * (MAX_FILE + FORM_OVERHEAD + 1), purpose="user_data")
    assert error_of(far_over, 413)["code"] == "request_too_large"
    lines = await h.upload(b"{}\n" * (MAX_LINES + 1))
    assert error_of(lines, 400) | {"message": ""} == {
        "message": "", "type": "invalid_request_error", "param": "file", "code": "too_many_lines",
    }  # fmt: skip
    assert (await h.listed())["data"] == []
    assert (await h.upload(b"{}\n" * MAX_LINES)).status_code == 200
    assert (await h.upload(b"x" * MAX_FILE, purpose="user_data")).status_code == 200


async def test_pages_by_purpose_with_cursor(h: Files) -> None:
    ids = []
    for purpose in ("batch", "user_data", "batch", "batch", "evals"):
        ids.append((await h.upload(b"{}\n", purpose=purpose)).json()["id"])
    every = await h.listed()
    assert [item["id"] for item in every["data"]] == ids[::-1] and not every["has_more"]
    batch = [ids[0], ids[2], ids[3]]
    first = await h.listed(purpose="batch", limit=2, order="asc")
    assert [item["id"] for item in first["data"]] == batch[:2] and first["has_more"]
    assert (first["first_id"], first["last_id"]) == (batch[0], batch[1])
    rest = await h.listed(purpose="batch", limit=2, order="asc", after=first["last_id"])
    assert [item["id"] for item in rest["data"]] == batch[2:] and not rest["has_more"]
    assert (await h.listed(purpose="fine-tune"))["data"] == []
    for query, param in (({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"order": "up"}, "order"),
                         ({"after": "file-unknown"}, "after"), ({"limit": "many"}, "limit")):  # fmt: skip
        assert error_of(await h.client.get("/files", params=query), 400)["param"] == param


async def test_another_key_sees_nothing(h: Files) -> None:
    made = (await h.upload(b"{}\n")).json()
    for response in (
        await h.other.get(f"/files/{made['id']}"),
        await h.other.get(f"/files/{made['id']}/content"),
        await h.other.delete(f"/files/{made['id']}"),
    ):
        assert error_of(response, 404)["param"] == "id"
    listed = await h.other.get("/files")
    assert listed.json()["data"] == []
    assert error_of(await h.other.get("/files", params={"after": made["id"]}), 400)["param"] == "after"
    assert (await h.client.get(f"/files/{made['id']}/content")).content == b"{}\n"


# --- the upload over raw ASGI: streamed through the guard, never whole in memory ------------------------------


def upload_scope() -> Scope:
    scope = http_scope("/files", KEY)
    scope["headers"] = [
        (b"authorization", f"Bearer {KEY}".encode()),
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
    ]
    return scope


def body_parts(file_bytes: int | None, piece: int = 64 * 1024) -> Iterator[bytes]:
    """A multipart upload (``purpose`` first, as the SDK sends it) of ``file_bytes`` of data made as it is sent;
    ``None``: data without end."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    sent = 0
    while file_bytes is None or sent < file_bytes:
        size = piece if file_bytes is None else min(piece, file_bytes - sent)
        yield b"y" * size
        sent += size
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


@dataclass
class RawUpload:
    """Drives one upload over ASGI: what the app pulled, and what it answered."""

    parts: Iterator[bytes]
    pulled: int = 0
    leave_after: int | None = None  # pieces, then the client leaves

    def __post_init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self.next: bytes | None = next(self.parts)

    async def receive(self) -> Message:
        if self.leave_after is not None and self.pulled >= self.leave_after:
            self.gone.set()
            return {"type": "http.disconnect"}
        part = self.next
        if part is None:  # the body was sent whole: the client waits for the answer
            await self.gone.wait()
            return {"type": "http.disconnect"}
        self.pulled += 1
        self.next = next(self.parts, None)
        return {"type": "http.request", "body": part, "more_body": self.next is not None}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def run(self, app: FastAPI) -> tuple[int, dict[str, Any]]:
        await asyncio.wait_for(app(upload_scope(), self.receive, self.send), timeout=30)
        body = b"".join(message.get("body", b"") for message in self.sent if message["type"] == "http.response.body")
        status = next((message["status"] for message in self.sent if message["type"] == "http.response.start"), 0)
        return status, json.loads(body) if body else {}


async def test_a_body_past_the_cap_is_refused_while_it_streams(h: Files) -> None:
    upload = RawUpload(body_parts(None))  # the client would send forever
    status, answer = await upload.run(h.app)
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert upload.pulled <= (MAX_FILE + FORM_OVERHEAD) // (64 * 1024) + 2, "read past the cap"
    assert (await h.listed())["data"] == []


async def test_a_large_upload_is_stored_in_bounded_memory(tmp_path: Path) -> None:
    """16 MiB through an app whose JSON body cap is 64 KiB: never whole in memory (the spool keeps 1 MiB, the store a
    chunk or two), so the peak of Python's allocations stays at half the file or less (it does not grow with it)."""
    size = 16 << 20
    async with serve(tmp_path, Limits(max_body_bytes=64 * 1024)) as files:
        files.book.state.files.max_file_bytes = size
        upload = RawUpload(body_parts(size))
        tracemalloc.start()
        try:
            request = asyncio.create_task(upload.run(files.app))
            while not upload.sent:
                await asyncio.sleep(0.01)
            upload.gone.set()
            status, made = await request
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 200, made
        assert made["bytes"] == size and peak < 8 << 20, f"peak {peak} bytes"  # measured: 5.4 MB, for 48 MiB too
        content = await files.client.get(f"/files/{made['id']}/content")
        assert len(content.content) == size and set(content.content) == {ord("y")}


async def test_a_client_that_leaves_mid_upload_leaves_nothing(h: Files) -> None:
    upload = RawUpload(body_parts(MAX_FILE // 2), leave_after=3)
    status, _ = await upload.run(h.app)
    assert status == 0, "nobody to answer"
    assert (await h.listed())["data"] == []
