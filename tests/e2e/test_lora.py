"""LoRA adapters served as models, on a real engine (``tests/configs/lora.yaml``): the config's adapter answers as
transformers + PEFT do on the same weights, through chat (streamed), Responses and completions; run-time loading
and unloading with vLLM's routes, for admin keys only; bad adapters and paths are 400s and the base keeps serving;
after a graceful restart, the adapters loaded at run time are served again, and those unloaded are not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.pool import ServerPool
from tests.e2e.server import Server
from tests.e2e.servers import ADMIN_KEY, CHAT_MODEL, peft_reference
from tests.lora_adapter import QUESTION, REFERENCE_TOKENS

ADAPTER = "smollm2-lora"
KEPT, DROPPED = "kept-lora", "dropped-lora"  # loaded at run time before the restart; the second unloaded again
MESSAGES: list[Any] = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def lora_client(lora_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{lora_server.base_url}/v1", api_key=lora_server.api_key, max_retries=0)


@pytest.fixture(scope="module")
def reference(pool: ServerPool, lora_server: Server) -> dict[str, str]:
    """PEFT's greedy answers (computed while the server booted), as text."""
    import bentoml
    from transformers import AutoTokenizer

    tokens = peft_reference(pool).result(timeout=600)
    tokenizer = AutoTokenizer.from_pretrained(bentoml.models.get(CHAT_MODEL).path)
    return {name: tokenizer.decode(ids, skip_special_tokens=True) for name, ids in tokens.items()}


def admin(server: Server, route: str, body: dict[str, Any], key: str = ADMIN_KEY) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/{route}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def chat(client: openai.OpenAI, model: str) -> tuple[str, int]:
    """The greedy answer (streamed) and its completion token count."""
    stream = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        temperature=0,
        max_tokens=REFERENCE_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, completion_tokens = "", -1
    for chunk in stream:
        text += "".join(choice.delta.content or "" for choice in chunk.choices)
        if chunk.usage is not None:
            completion_tokens = chunk.usage.completion_tokens
    return text, completion_tokens


def test_the_adapter_is_a_model_whose_parent_is_its_base(lora_client: openai.OpenAI) -> None:
    models = {model.id: model.model_dump() for model in lora_client.models.list()}
    assert models[ADAPTER]["parent"] == CHAT_MODEL and models[ADAPTER]["root"] == CHAT_MODEL
    assert models[CHAT_MODEL]["parent"] is None and models[CHAT_MODEL]["root"] == CHAT_MODEL


def test_the_adapter_answers_as_peft_does(lora_client: openai.OpenAI, reference: dict[str, str]) -> None:
    assert reference["adapter"] != reference["base"], "the test adapter must change the model's answer"
    assert chat(lora_client, ADAPTER) == (reference["adapter"], REFERENCE_TOKENS)
    base = lora_client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, temperature=0, max_tokens=16)
    assert base.choices[0].message.content == reference["base"]
    response = lora_client.responses.create(
        model=ADAPTER, input=QUESTION, temperature=0, max_output_tokens=REFERENCE_TOKENS, store=False
    )
    assert response.output_text == reference["adapter"]


def test_completions_logprobs_and_json_schema_through_the_adapter(lora_client: openai.OpenAI) -> None:
    logprobs = {}
    for model in (ADAPTER, CHAT_MODEL):
        completion = lora_client.completions.create(
            model=model, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=1
        )
        assert completion.model == model and completion.choices[0].logprobs is not None
        logprobs[model] = completion.choices[0].logprobs.token_logprobs
    assert logprobs[ADAPTER] != logprobs[CHAT_MODEL], "the adapter must change the completion's logprobs"
    schema = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "London"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    answer = lora_client.chat.completions.create(
        model=ADAPTER,
        messages=MESSAGES,
        temperature=0,
        max_tokens=32,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    assert json.loads(answer.choices[0].message.content or "")["city"] in ("Paris", "London")


def test_a_batch_names_the_adapter_and_the_base_line_by_line(
    lora_client: openai.OpenAI, reference: dict[str, str]
) -> None:
    """Batch lines run as the online requests do: each line's model, adapter or base, answers as PEFT does."""
    lines = [{"custom_id": model, "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": REFERENCE_TOKENS}}
             for model in (ADAPTER, CHAT_MODEL)]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines)
    file_id = lora_client.files.create(file=("lines.jsonl", text.encode()), purpose="batch").id
    batch = lora_client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    for _ in range(600):
        batch = lora_client.batches.retrieve(batch.id)
        if batch.status in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert batch.status == "completed" and batch.output_file_id is not None, batch
    output = [json.loads(line) for line in lora_client.files.content(batch.output_file_id).text.splitlines()]
    answers = {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"] for line in output}
    assert answers == {ADAPTER: reference["adapter"], CHAT_MODEL: reference["base"]}


def test_admin_routes_take_admin_keys_only(lora_server: Server) -> None:
    body = {"lora_name": "x", "lora_path": "runtime"}
    client_key = admin(lora_server, "load_lora_adapter", body, key=lora_server.api_key)
    assert client_key.status_code == 403 and client_key.json()["error"]["code"] == "permission_denied"
    assert admin(lora_server, "load_lora_adapter", body, key="not-a-key").status_code == 401
    assert admin(lora_server, "unload_lora_adapter", {"lora_name": ADAPTER}, key=lora_server.api_key).status_code == 403


@pytest.mark.parametrize(
    ("lora_path", "reason"),
    [
        ("rank16", "max_lora_rank"),
        ("escape", "outside the adapters directory"),
        ("../adapters/static", "directory name"),
        ("/etc", "directory name"),
        ("no-such-adapter", "No adapter named"),
    ],
)
def test_a_bad_adapter_or_path_is_a_400(lora_server: Server, lora_path: str, reason: str) -> None:
    answer = admin(lora_server, "load_lora_adapter", {"lora_name": "bad", "lora_path": lora_path})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["param"] == "lora_path" and reason in error["message"]
    assert str(lora_server.log_path.parent) not in error["message"]


def test_load_serve_and_unload_at_run_time(
    lora_server: Server, lora_client: openai.OpenAI, reference: dict[str, str]
) -> None:
    state = lora_server.log_path.parent / "lora_adapters.json"
    loaded = admin(lora_server, "load_lora_adapter", {"lora_name": "runtime-lora", "lora_path": "runtime"})
    assert loaded.status_code == 200, loaded.text
    assert [entry["lora_name"] for entry in json.loads(state.read_text())] == ["runtime-lora"]
    assert lora_client.models.retrieve("runtime-lora").model_dump()["parent"] == CHAT_MODEL
    assert chat(lora_client, "runtime-lora") == (reference["adapter"], REFERENCE_TOKENS)
    again = admin(lora_server, "load_lora_adapter", {"lora_name": "runtime-lora", "lora_path": "runtime"})
    assert again.status_code == 400 and again.json()["error"]["param"] == "lora_name"
    assert admin(lora_server, "unload_lora_adapter", {"lora_name": "runtime-lora"}).status_code == 200
    assert json.loads(state.read_text()) == []
    with pytest.raises(openai.NotFoundError):
        lora_client.chat.completions.create(model="runtime-lora", messages=MESSAGES, max_tokens=1)
    assert admin(lora_server, "unload_lora_adapter", {"lora_name": "runtime-lora"}).status_code == 404
    assert admin(lora_server, "unload_lora_adapter", {"lora_name": CHAT_MODEL}).status_code == 404


def test_the_adapter_has_its_own_metrics(lora_server: Server) -> None:
    text = httpx.get(f"{lora_server.base_url}/metrics", timeout=30).text
    assert f'model="{ADAPTER}"' in text and f'model="{CHAT_MODEL}"' in text


@dataclass(frozen=True)
class BeforeRestart:
    kept_answer: tuple[str, int]  # the adapter loaded at run time, its greedy answer before the restart
    state_file: Path  # the run-time adapters' list, in the config's data dir (both lives')


def test_adapters_loaded_before_the_restart(
    lora_server: Server, lora_client: openai.OpenAI, reference: dict[str, str]
) -> None:
    """Two adapters loaded at run time (other weights than the config's), one unloaded again; then the server stops
    gracefully (the store's first life in test_responses_store.py stops it, after this module) and its second life
    boots while other tests run; the test below, among the run's last, checks it (``before_restart``)."""
    for name in (KEPT, DROPPED):
        loaded = admin(lora_server, "load_lora_adapter", {"lora_name": name, "lora_path": "other"})
        assert loaded.status_code == 200, loaded.text
    assert admin(lora_server, "unload_lora_adapter", {"lora_name": DROPPED}).status_code == 200
    kept_answer = chat(lora_client, KEPT)
    assert kept_answer[0] not in (reference["adapter"], reference["base"]), "other weights, another answer"
    lora_server.notes["before_restart"] = BeforeRestart(kept_answer, lora_server.log_path.parent / "lora_adapters.json")


@pytest.fixture(scope="module")
def before_restart(pool: ServerPool) -> BeforeRestart:
    """What the test above left (it runs among the lora server's tests; this one among the run's last)."""
    first = pool.started.get("lora")
    assert first is not None and "before_restart" in first.server.notes, "test_adapters_loaded_before_the_restart first"
    kept: BeforeRestart = first.server.notes["before_restart"]
    return kept


@pytest.fixture(scope="module")
def lora_again(pool: ServerPool, before_restart: BeforeRestart) -> Server:
    """A new server on the same config and data dir, booted once the first has exited (``servers.lora_restart``)."""
    return pool.get("lora-again")


def test_adapters_loaded_at_run_time_are_served_again_after_a_restart(
    lora_again: Server, before_restart: BeforeRestart
) -> None:
    client = openai.OpenAI(base_url=f"{lora_again.base_url}/v1", api_key=lora_again.api_key, max_retries=0)
    models = {model.id: model.model_dump() for model in client.models.list()}
    assert models[KEPT]["parent"] == CHAT_MODEL and models[KEPT]["root"] == CHAT_MODEL
    assert ADAPTER in models and DROPPED not in models
    assert chat(client, KEPT) == before_restart.kept_answer
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=DROPPED, messages=MESSAGES, max_tokens=1)
    assert json.loads(before_restart.state_file.read_text()) == [
        {"lora_name": KEPT, "lora_path": "other", "base_model": CHAT_MODEL}
    ]
