"""``/v1/models`` through the official SDK and raw HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL


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
