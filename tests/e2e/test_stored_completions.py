"""Stored chat completions on the real service through the official SDK: ``store=True`` keeps a completion
(streamed or not) that ``client.chat.completions`` lists, filters, retrieves, updates and deletes, with its messages;
another key sees none of it."""

from __future__ import annotations

import uuid
from typing import Any

import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL

QUESTION: list[Any] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_stored_completions_through_the_sdk(client: openai.OpenAI, other_client: openai.OpenAI) -> None:
    run = uuid.uuid4().hex  # this run's own metadata value: the server may hold completions of other tests
    made = client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, store=True, metadata={"run": run}, max_tokens=20, temperature=0
    )
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=QUESTION, store=True, metadata={"run": run, "kind": "stream"}, max_tokens=20,
        temperature=0, stream=True,
    )  # fmt: skip
    streamed_text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    unkept = client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=5)
    got = client.chat.completions.retrieve(made.id)
    assert got.choices[0].message.content == made.choices[0].message.content and got.metadata == {"run": run}
    assert got.usage == made.usage and got.created == made.created
    listed = list(client.chat.completions.list(metadata={"run": run}, limit=1))  # the SDK pages through both
    assert len(listed) == 2 and listed[0].id == made.id
    assert listed[1].choices[0].message.content == streamed_text
    assert listed[1].choices[0].finish_reason == made.choices[0].finish_reason
    only = client.chat.completions.list(metadata={"run": run, "kind": "stream"}).data
    assert [item.id for item in only] == [listed[1].id]
    assert client.chat.completions.list(model="no-such-model", metadata={"run": run}).data == []
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(unkept.id)
    messages = list(client.chat.completions.messages.list(made.id))
    assert [(m.role, m.content) for m in messages] == [(m["role"], m["content"]) for m in QUESTION]
    assert all(m.id for m in messages)
    updated = client.chat.completions.update(made.id, metadata={"run": run, "reviewed": "yes"})
    assert updated.metadata == {"run": run, "reviewed": "yes"}
    assert [item.id for item in client.chat.completions.list(metadata={"reviewed": "yes", "run": run})] == [made.id]
    for call in (
        lambda: other_client.chat.completions.retrieve(made.id),
        lambda: other_client.chat.completions.messages.list(made.id),
        lambda: other_client.chat.completions.update(made.id, metadata={}),
        lambda: other_client.chat.completions.delete(made.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other_client.chat.completions.list(metadata={"run": run}).data == []
    deleted = client.chat.completions.delete(made.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (made.id, True, "chat.completion.deleted")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
