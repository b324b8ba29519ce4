"""Files on the real service through the official SDK (``client.files``): upload (with ``expires_after``), list by
purpose with pages the SDK follows, retrieve, the content round trip, delete, another key's 404; and the caps, each
refused cleanly with nothing kept: a batch file over 50,000 lines (the default server), a file over the limited
server's 1 MiB (``tests/configs/limited.yaml``), and a body past that cap plus the form's overhead."""

from __future__ import annotations

import json

import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.limited import sdk
from tests.e2e.server import Server

LIMITED_MAX_FILE = 1 << 20  # tests/configs/limited.yaml


def batch_lines(count: int) -> bytes:
    line = {"method": "POST", "url": "/v1/chat/completions", "body": {"model": CHAT_MODEL, "messages": []}}
    return b"".join(json.dumps({"custom_id": f"r{index}", **line}).encode() + b"\n" for index in range(count))


def test_files_through_the_sdk(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    data = batch_lines(3)
    made = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert made.id.startswith("file-") and made.object == "file" and made.status == "processed"
    assert (made.bytes, made.filename, made.purpose) == (len(data), "requests.jsonl", "batch")
    assert made.expires_at is not None and made.expires_at > made.created_at
    notes = [client.files.create(file=(f"note{index}.txt", b"hello"), purpose="user_data") for index in range(3)]
    expiring = client.files.create(
        file=("soon.txt", b"bye"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert expiring.expires_at is not None and expiring.expires_at - expiring.created_at in (3599, 3600)
    user_data = [expiring.id] + [note.id for note in reversed(notes)]  # newest first
    page = client.files.list(purpose="user_data", limit=2)
    assert page.has_more and [item.id for item in page.data] == user_data[:2]
    followed = [item.id for item in client.files.list(purpose="user_data", limit=2)]  # the SDK follows ``after``
    assert followed[:4] == user_data and made.id not in followed
    assert [item.id for item in client.files.list(purpose="batch", order="asc")][-1] == made.id
    assert client.files.retrieve(made.id) == made
    assert client.files.content(made.id).content == data
    for call in (other_client.files.retrieve, other_client.files.content, other_client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    assert made.id not in [item.id for item in other_client.files.list()]
    deleted = client.files.delete(made.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (made.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    for file_id in user_data:
        client.files.delete(file_id)


def test_a_batch_file_over_the_line_cap_is_refused(client: openai.OpenAI) -> None:
    before = {item.id for item in client.files.list(purpose="batch")}
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("big.jsonl", b"{}\n" * 50_001), purpose="batch")
    assert refused.value.code == "too_many_lines" and "50000" in refused.value.message
    assert {item.id for item in client.files.list(purpose="batch")} == before


def test_a_file_over_the_size_cap_is_refused(limited: Server) -> None:
    client = sdk(limited)
    for size, code in ((LIMITED_MAX_FILE + 1, "file_too_large"), (LIMITED_MAX_FILE + 100_000, "request_too_large")):
        with pytest.raises(openai.APIStatusError) as refused:
            client.files.create(file=("big.bin", b"x" * size), purpose="user_data")
        assert refused.value.status_code == 413 and refused.value.code == code
    assert list(client.files.list()) == []
    small = client.files.create(file=("small.bin", b"x" * LIMITED_MAX_FILE), purpose="user_data")
    assert client.files.content(small.id).content == b"x" * LIMITED_MAX_FILE
    client.files.delete(small.id)
