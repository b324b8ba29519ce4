"""Stored chat completions through ``create_app`` with a scripted engine and a real SQLite store: what ``store:
true`` keeps (streamed or not), list filters and pages, metadata updates, messages, deletion, privacy by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.fakes import CHAT_MODEL
from tests.unit.test_responses import Harness, error_of, serve

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


@pytest.fixture
async def h(tmp_path: Path) -> Any:
    async with serve(tmp_path) as harness:
        yield harness


async def chat(h: Harness, **fields: Any) -> dict[str, Any]:
    response = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": MESSAGES, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json() if not fields.get("stream") else {"text": response.text}
    return body


async def listed(h: Harness, **query: Any) -> dict[str, Any]:
    response = await h.client.get("/chat/completions", params=query)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def test_only_store_true_is_kept_and_retrieved_as_answered(h: Harness) -> None:
    plain = await chat(h)
    kept = await chat(h, store=True, metadata={"team": "a"})
    assert error_of(await h.client.get(f"/chat/completions/{plain['id']}"), 404)["param"] == "completion_id"
    got = (await h.client.get(f"/chat/completions/{kept['id']}")).json()
    assert got == {**kept, "metadata": {"team": "a"}}
    assert [item["id"] for item in (await listed(h))["data"]] == [kept["id"]]


async def test_a_streamed_completion_is_kept_whole(h: Harness) -> None:
    await chat(h, store=True, stream=True)
    [kept] = (await listed(h))["data"]
    assert kept["choices"][0]["message"]["content"] == "Hello, world"
    assert kept["choices"][0]["finish_reason"] == "stop" and kept["usage"]["completion_tokens"] == 3


async def test_list_filters_by_model_and_metadata_and_pages(h: Harness) -> None:
    ids = [(await chat(h, store=True, metadata={"n": str(i), "even": str(i % 2 == 0)}))["id"] for i in range(5)]
    assert [item["id"] for item in (await listed(h))["data"]] == ids  # asc by default
    assert [item["id"] for item in (await listed(h, order="desc"))["data"]] == ids[::-1]
    first = await listed(h, limit=2)
    assert [item["id"] for item in first["data"]] == ids[:2] and first["has_more"] is True
    rest = await listed(h, limit=10, after=first["last_id"])
    assert [item["id"] for item in rest["data"]] == ids[2:] and rest["has_more"] is False
    evens = await listed(h, **{"metadata[even]": "True"})
    assert [item["id"] for item in evens["data"]] == ids[0::2]
    both = await listed(h, **{"metadata[even]": "True", "metadata[n]": "2"})
    assert [item["id"] for item in both["data"]] == [ids[2]]
    assert (await listed(h, model="another-model"))["data"] == []
    assert len((await listed(h, model=CHAT_MODEL))["data"]) == 5
    assert error_of(await h.client.get("/chat/completions", params={"after": "chatcmpl-x"}), 400)["param"] == "after"
    assert error_of(await h.client.get("/chat/completions", params={"limit": 101}), 400)["param"] == "limit"


async def test_update_messages_and_delete(h: Harness) -> None:
    kept = await chat(h, store=True, metadata={"a": "1"})
    path = f"/chat/completions/{kept['id']}"
    updated = (await h.client.post(path, json={"metadata": {"b": "2"}})).json()
    assert updated["metadata"] == {"b": "2"} and updated["id"] == kept["id"]
    assert (await h.client.get(path)).json()["metadata"] == {"b": "2"}
    assert [item["id"] for item in (await listed(h, **{"metadata[a]": "1"}))["data"]] == []
    messages = (await h.client.get(f"{path}/messages")).json()
    assert [(m["role"], m["content"]) for m in messages["data"]] == [("system", "Be brief."), ("user", "Hi")]
    assert messages["data"][0]["id"] == f"{kept['id']}-0" and messages["has_more"] is False
    one = (await h.client.get(f"{path}/messages", params={"limit": 1, "order": "desc"})).json()
    assert [m["content"] for m in one["data"]] == ["Hi"] and one["has_more"] is True
    assert error_of(await h.client.post(path, json={"metadata": {"k": "v" * 513}}), 400)["param"].startswith("metadata")
    deleted = (await h.client.delete(path)).json()
    assert deleted == {"id": kept["id"], "object": "chat.completion.deleted", "deleted": True}
    for response in (await h.client.get(path), await h.client.delete(path), await h.client.get(f"{path}/messages")):
        error_of(response, 404)


async def test_another_key_sees_nothing(h: Harness) -> None:
    kept = await chat(h, store=True)
    path = f"/chat/completions/{kept['id']}"
    assert (await h.other.get("/chat/completions")).json()["data"] == []
    for response in (
        await h.other.get(path),
        await h.other.post(path, json={"metadata": {}}),
        await h.other.get(f"{path}/messages"),
        await h.other.delete(path),
    ):
        error_of(response, 404)
    assert (await h.client.get(path)).status_code == 200


async def test_a_completion_over_the_cap_is_a_400_and_not_kept(h: Harness) -> None:
    h.book.state.completions.max_bytes = 200
    refused = await h.client.post("/chat/completions", json={"model": CHAT_MODEL, "messages": MESSAGES, "store": True})
    assert error_of(refused, 400)["code"] == "completion_too_large"
    assert (await listed(h))["data"] == []
