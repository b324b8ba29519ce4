"""``/v1/models`` through the official SDK and raw HTTP, with each model's context length (``max_model_len``)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest

from settings import load_config
from tests.e2e.conftest import CHAT_MODEL

EMBED_MODEL = "all-minilm-l6-v2"


def test_list_models_has_ids_and_aliases(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {CHAT_MODEL, "smollm2"} <= set(models)
    assert all(model.object == "model" and model.owned_by and model.created > 0 for model in models.values())


def test_retrieve_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve(CHAT_MODEL)
    assert model.id == CHAT_MODEL


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("org/no-such-model")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_health_endpoints_need_no_key(http: httpx.Client) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert httpx.get(f"{http.base_url}{path}").status_code == 200, path


def sentence_transformers_length(model: str) -> int:
    """The embedder's maximum sequence length as its own files declare it (vLLM's source for it)."""
    import bentoml

    config = Path(bentoml.models.get(model).path) / "sentence_bert_config.json"
    return int(json.loads(config.read_text())["max_seq_length"])


def test_models_carry_max_model_len(client: openai.OpenAI) -> None:
    [chat] = [model for model in load_config().models if model.id == CHAT_MODEL]
    expected = {
        CHAT_MODEL: chat.engine["max_model_len"],
        "smollm2": chat.engine["max_model_len"],
        EMBED_MODEL: sentence_transformers_length(EMBED_MODEL),
    }
    assert expected[CHAT_MODEL] == 2048
    listed = {model.id: (model.model_extra or {}).get("max_model_len") for model in client.models.list()}
    assert {name: listed[name] for name in expected} == expected
    for name, length in expected.items():
        assert (client.models.retrieve(name).model_extra or {}).get("max_model_len") == length, name


def test_embedder_takes_exactly_max_model_len_tokens(client: openai.OpenAI) -> None:
    length = (client.models.retrieve(EMBED_MODEL).model_extra or {})["max_model_len"]
    ids = [1037] * length  # one ordinary word piece, repeated
    assert client.embeddings.create(model=EMBED_MODEL, input=[ids]).usage.prompt_tokens == length
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED_MODEL, input=[[*ids, 1037]])
    assert info.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
