"""The Conversations routes through ``create_app`` with a scripted engine and a real SQLite store: the objects, item
pages, responses that read and extend a conversation, privacy by key, and the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.conversations import Conversation, ConversationDeletedResource

from openai_routes.core.limits import Limits
from tests.schema_check import check
from tests.unit.fakes import CHAT_MODEL, FakeGenerateEngine
from tests.unit.test_responses import Harness, error_of, events, serve

USER = {"type": "message", "role": "user", "content": "My name is Ada."}


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def conversation(h: Harness, **fields: Any) -> dict[str, Any]:
    return await post(h.client, "/conversations", fields)


async def items(h: Harness, conversation_id: str, **query: Any) -> dict[str, Any]:
    response = await h.client.get(f"/conversations/{conversation_id}/items", params=query)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


@pytest.fixture
async def h(tmp_path: Path) -> Any:
    async with serve(tmp_path) as harness:
        yield harness


async def test_create_retrieve_update_delete(h: Harness) -> None:
    made = await conversation(h, items=[USER], metadata={"topic": "names"})
    assert made["id"].startswith("conv_") and made["object"] == "conversation"
    assert made["metadata"] == {"topic": "names"} and isinstance(made["created_at"], int)
    assert (await h.client.get(f"/conversations/{made['id']}")).json() == made
    updated = await post(h.client, f"/conversations/{made['id']}", {"metadata": {"topic": "other"}})
    assert updated == {**made, "metadata": {"topic": "other"}}
    deleted = (await h.client.delete(f"/conversations/{made['id']}")).json()
    assert deleted == {"id": made["id"], "object": "conversation.deleted", "deleted": True}
    assert error_of(await h.client.get(f"/conversations/{made['id']}"), 404)["param"] == "conversation_id"
    assert error_of(await h.client.get(f"/conversations/{made['id']}/items"), 404)["code"] == "not_found"


async def test_items_are_added_listed_paged_retrieved_and_deleted(h: Harness) -> None:
    made = await conversation(h, items=[USER])
    path = f"/conversations/{made['id']}/items"
    added = await post(h.client, path, {"items": [{"role": "assistant", "content": f"a{i}"} for i in range(4)]})
    assert added["object"] == "list" and len(added["data"]) == 4 and added["has_more"] is False
    assert added["data"][0]["content"][0] == {"type": "output_text", "text": "a0", "annotations": [], "logprobs": []}
    every = await items(h, made["id"], order="asc", limit=100)
    assert [item["type"] for item in every["data"]] == ["message"] * 5
    assert every["data"][0]["content"] == [{"type": "input_text", "text": "My name is Ada."}]
    ids = [item["id"] for item in every["data"]]
    assert [item["id"] for item in (await items(h, made["id"]))["data"]] == ids[::-1]  # desc by default
    first = await items(h, made["id"], order="asc", limit=2)
    assert [item["id"] for item in first["data"]] == ids[:2] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (ids[0], ids[1])
    rest = await items(h, made["id"], order="asc", limit=10, after=first["last_id"])
    assert [item["id"] for item in rest["data"]] == ids[2:] and rest["has_more"] is False
    back = await items(h, made["id"], order="desc", limit=10, after=ids[2])
    assert [item["id"] for item in back["data"]] == ids[1::-1]
    assert (await h.client.get(f"{path}/{ids[1]}")).json() == every["data"][1]
    left = await h.client.delete(f"{path}/{ids[1]}")
    assert left.json()["id"] == made["id"] and left.json()["object"] == "conversation"
    assert error_of(await h.client.get(f"{path}/{ids[1]}"), 404)["param"] == "item_id"
    assert error_of(await h.client.delete(f"{path}/{ids[1]}"), 404)["param"] == "item_id"
    assert error_of(await h.client.get(path, params={"after": "msg_unknown"}), 400)["param"] == "after"
    assert error_of(await h.client.get(path, params={"limit": 0}), 400)["param"] == "limit"
    assert error_of(await h.client.get(path, params={"order": "up"}), 400)["param"] == "order"


async def test_a_response_reads_the_conversation_and_appends_its_turn(h: Harness) -> None:
    made = await conversation(h, items=[USER])
    body = await post(
        h.client, "/responses", {"model": CHAT_MODEL, "input": "What is my name?", "conversation": made["id"]}
    )
    assert body["conversation"] == {"id": made["id"]}
    assert h.generator.rendered[-1] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    listed = (await items(h, made["id"], order="asc"))["data"]
    assert [(item["type"], item["role"]) for item in listed] == [("message", "user")] * 2 + [("message", "assistant")]
    assert listed[2] == body["output"][0]  # the output item as the response has it, same id
    again = await post(
        h.client, "/responses", {"model": CHAT_MODEL, "input": "And again?", "conversation": {"id": made["id"]}}
    )
    assert again["conversation"] == {"id": made["id"]}
    assert h.generator.rendered[-1][-2:] == [
        {"role": "assistant", "content": "Hello, world"},
        {"role": "user", "content": "And again?"},
    ]
    assert len((await items(h, made["id"]))["data"]) == 5


async def test_a_streamed_response_appends_when_it_completes(h: Harness) -> None:
    made = await conversation(h)
    response = await h.client.post(
        "/responses", json={"model": CHAT_MODEL, "input": "Hi", "conversation": made["id"], "stream": True}
    )
    kinds = [kind for kind, _ in events(response)]
    assert kinds[-1] == "response.completed"
    listed = (await items(h, made["id"], order="asc"))["data"]
    assert [item["role"] for item in listed] == ["user", "assistant"]


async def test_a_failed_response_appends_nothing(tmp_path: Path) -> None:
    generator = FakeGenerateEngine(context=512, error=RuntimeError("engine died"), error_after=1)
    async with serve(tmp_path, generator) as h:
        made = await conversation(h)
        response = await h.client.post(
            "/responses", json={"model": CHAT_MODEL, "input": "Hi", "conversation": made["id"], "stream": True}
        )
        assert [kind for kind, _ in events(response)][-1] in ("response.failed", "error")
        assert (await items(h, made["id"]))["data"] == []


async def test_another_key_sees_nothing(h: Harness) -> None:
    made = await conversation(h, items=[USER])
    listed = (await items(h, made["id"]))["data"]
    for response in (
        await h.other.get(f"/conversations/{made['id']}"),
        await h.other.post(f"/conversations/{made['id']}", json={"metadata": {}}),
        await h.other.get(f"/conversations/{made['id']}/items"),
        await h.other.post(f"/conversations/{made['id']}/items", json={"items": [USER]}),
        await h.other.get(f"/conversations/{made['id']}/items/{listed[0]['id']}"),
        await h.other.delete(f"/conversations/{made['id']}/items/{listed[0]['id']}"),
        await h.other.delete(f"/conversations/{made['id']}"),
    ):
        error_of(response, 404)
    for path in ("/responses", "/responses/input_tokens"):
        refused = await h.other.post(path, json={"model": CHAT_MODEL, "input": "Hi", "conversation": made["id"]})
        assert error_of(refused, 404)["param"] == "conversation"
    assert len((await items(h, made["id"]))["data"]) == 1  # nothing added, nothing deleted


async def test_input_tokens_count_the_conversation(h: Harness) -> None:
    made = await conversation(h, items=[USER])
    counted = await post(
        h.client, "/responses/input_tokens", {"model": CHAT_MODEL, "input": "Who?", "conversation": made["id"]}
    )
    body = await post(h.client, "/responses", {"model": CHAT_MODEL, "input": "Who?", "conversation": made["id"]})
    assert counted["input_tokens"] == body["usage"]["input_tokens"]
    plain = await post(h.client, "/responses/input_tokens", {"model": CHAT_MODEL, "input": "Who?"})
    assert plain["input_tokens"] < counted["input_tokens"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/conversations", {"items": [{"type": "nope"}]}, "items[0]"),
        ("/conversations", {"items": [USER] * 21}, "items"),
        ("/conversations", {"metadata": {"k" * 65: "v"}}, "metadata"),
        ("/conversations", {"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ("/conversations/{id}/items", {"items": []}, "items"),
        ("/conversations/{id}", {}, "metadata"),
        ("/responses", {"model": CHAT_MODEL, "input": "Hi", "conversation": "{id}", "previous_response_id": "resp_1"},
         "conversation"),
    ],
)  # fmt: skip
async def test_bad_input_is_a_400_on_its_param(h: Harness, path: str, body: dict[str, Any], param: str) -> None:
    made = await conversation(h)
    body = {key: value.replace("{id}", made["id"]) if isinstance(value, str) else value for key, value in body.items()}
    error = error_of(await h.client.post(path.replace("{id}", made["id"]), json=body), 400)
    assert error["param"] is not None and error["param"].startswith(param), error


async def test_the_item_cap_is_a_400(tmp_path: Path) -> None:
    async with serve(tmp_path, limits=Limits()) as h:
        h.book.state.conversations.max_items = 3
        made = await conversation(h, items=[USER, USER])
        refused = await h.client.post(f"/conversations/{made['id']}/items", json={"items": [USER, USER]})
        assert error_of(refused, 400)["code"] == "conversation_too_large"
        assert len((await items(h, made["id"]))["data"]) == 2


async def test_a_background_response_appends_when_it_finishes(h: Harness) -> None:
    made = await conversation(h)
    body = await post(
        h.client, "/responses", {"model": CHAT_MODEL, "input": "Hi", "conversation": made["id"], "background": True}
    )
    assert body["status"] == "queued" and body["conversation"] == {"id": made["id"]}
    await h.book.runs[body["id"]] if body["id"] in h.book.runs else None
    done = (await h.client.get(f"/responses/{body['id']}")).json()
    assert done["status"] == "completed"
    listed = (await items(h, made["id"], order="asc"))["data"]
    assert [item["role"] for item in listed] == ["user", "assistant"] and listed[1] == done["output"][0]


async def test_objects_have_every_field_of_the_sdk_types(h: Harness) -> None:
    made = await conversation(h, metadata={"k": "v"})
    check(made, Conversation)
    check((await h.client.get(f"/conversations/{made['id']}")).json(), Conversation)
    check((await h.client.delete(f"/conversations/{made['id']}")).json(), ConversationDeletedResource)
