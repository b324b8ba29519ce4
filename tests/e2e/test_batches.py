"""The Batch API on the real service with the official SDK: upload a JSONL file, create a batch, poll it to
``completed``, download the output and error files and match every ``custom_id``; lines the endpoint refuses, an
invalid file, a cancel mid-run, embeddings and Responses batches, privacy by key.

The replicas' batch (two servers on one PostgreSQL, each line run once) is in ``test_responses_store.py``; the
batch that survives the SIGKILL of its worker is in ``test_orphans.py`` (the built Bento's server restarts it).
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
from openai.types import Batch

from tests.e2e.conftest import CHAT_MODEL

EMBED_MODEL = "all-minilm-l6-v2"


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    return client.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id


def chat_line(custom_id: str, content: str = "What is the capital of France?", **body: Any) -> dict[str, Any]:
    request = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 12,
               "temperature": 0, **body}  # fmt: skip
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}


def wait(client: openai.OpenAI, batch_id: str, *statuses: str, timeout: float = 180) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout} s"
        time.sleep(0.25)


def results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_chat_batch_completes_with_every_line_answered_once(client: openai.OpenAI) -> None:
    lines = [chat_line(f"q{i}") for i in range(6)] + [chat_line("refused", n=0), chat_line("streamed", stream=True)]
    created = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"job": "e2e"},
    )  # fmt: skip
    assert created.status == "validating" and created.metadata == {"job": "e2e"}
    done = wait(client, created.id, "completed", "failed")
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 6, 2)
    output = results(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"q{i}" for i in range(6)]
    answers = {line["response"]["body"]["choices"][0]["message"]["content"] for line in output}
    assert len(answers) == 1 and "Paris" in answers.pop()  # greedy: one answer, the right one
    online = client.chat.completions.create(**lines[0]["body"])
    assert online.choices[0].message.content == output[0]["response"]["body"]["choices"][0]["message"]["content"]
    errors = {line["custom_id"]: line["response"] for line in results(client, done.error_file_id)}
    assert set(errors) == {"refused", "streamed"}
    assert errors["refused"]["status_code"] == 400 and errors["refused"]["body"]["error"]["param"] == "n"
    assert errors["streamed"]["body"]["error"]["param"] == "stream"
    assert done.usage is not None and done.usage.output_tokens == sum(
        line["response"]["body"]["usage"]["completion_tokens"] for line in output
    )
    assert done.completed_at is not None and done.in_progress_at is not None and done.finalizing_at is not None


def test_an_invalid_file_fails_the_batch_with_its_line_numbers(client: openai.OpenAI) -> None:
    lines = [chat_line("a"), "not json", chat_line("a"), {**chat_line("b"), "url": "/v1/completions"}]
    created = client.batches.create(
        input_file_id=upload(client, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = wait(client, created.id, "failed", "completed")
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
    assert [(error.line, error.code) for error in failed.errors.data] == [
        (2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_url"),
    ]  # fmt: skip
    assert failed.output_file_id is None and failed.failed_at is not None


def test_embeddings_and_responses_batches(client: openai.OpenAI) -> None:
    embed = [{"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": EMBED_MODEL, "input": f"sentence number {i}"}} for i in range(4)]  # fmt: skip
    batch = client.batches.create(
        input_file_id=upload(client, embed), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = wait(client, batch.id, "completed", "failed")
    vectors = [line["response"]["body"]["data"][0]["embedding"] for line in results(client, done.output_file_id)]
    assert len(vectors) == 4 and {len(vector) for vector in vectors} == {384}
    online = client.embeddings.create(model=EMBED_MODEL, input="sentence number 0").data[0].embedding
    assert max(abs(a - b) for a, b in zip(online, vectors[0], strict=True)) < 1e-4
    asks = [{"custom_id": "r", "method": "POST", "url": "/v1/responses",
             "body": {"model": CHAT_MODEL, "input": "What is the capital of France?", "max_output_tokens": 16,
                      "temperature": 0}}]  # fmt: skip
    batch = client.batches.create(input_file_id=upload(client, asks), endpoint="/v1/responses", completion_window="24h")
    done = wait(client, batch.id, "completed", "failed")
    [line] = results(client, done.output_file_id)
    body = line["response"]["body"]
    assert body["object"] == "response" and "Paris" in body["output"][0]["content"][0]["text"]


def test_cancel_mid_run_aborts_and_keeps_what_is_done(client: openai.OpenAI) -> None:
    long = [chat_line(f"long{i}", "Count from one to a thousand.", max_tokens=400, ignore_eos=True) for i in range(40)]
    created = client.batches.create(
        input_file_id=upload(client, long), endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait(client, created.id, "in_progress")
    time.sleep(1)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait(client, created.id, "cancelled", timeout=60)
    assert done.request_counts is not None and done.request_counts.total == 40
    finished = results(client, done.output_file_id)
    cancelled = results(client, done.error_file_id)
    assert done.request_counts.completed == len(finished) < 40
    assert sorted(line["custom_id"] for line in finished + cancelled) == sorted(f"long{i}" for i in range(40))
    assert {line["error"]["code"] for line in cancelled} == {"batch_cancelled"}


def test_another_key_sees_none_of_the_batches_or_files(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    file_id = upload(client, [chat_line("mine")])
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    for call in (lambda: other_client.batches.retrieve(batch.id), lambda: other_client.batches.cancel(batch.id),
                 lambda: other_client.files.retrieve(file_id)):  # fmt: skip
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in [listed.id for listed in other_client.batches.list()]
    with pytest.raises(openai.NotFoundError):
        other_client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id in [listed.id for listed in client.batches.list(limit=100)]
    wait(client, batch.id, "completed")
