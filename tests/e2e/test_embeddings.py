"""``/v1/embeddings`` on the embedded all-MiniLM-L6-v2, through the official SDK, against the real engine."""

from __future__ import annotations

import base64
import math
import os
import struct

import httpx
import openai
import pytest

from tests.e2e.conftest import CHAT_MODEL

EMBED_MODEL = "all-minilm-l6-v2"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def vectors(client: openai.OpenAI, inputs: list[str], **kwargs: object) -> list[list[float]]:
    response = client.embeddings.create(model=EMBED_MODEL, input=inputs, **kwargs)  # type: ignore[arg-type]
    return [item.embedding for item in response.data]


def test_float_vectors_are_unit_norm_and_ordered(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model=EMBED_MODEL, input=SENTENCES, encoding_format="float")
    assert response.object == "list" and response.model == EMBED_MODEL
    assert [item.index for item in response.data] == [0, 1, 2]
    for item in response.data:
        assert item.object == "embedding" and len(item.embedding) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in item.embedding)), 1.0, abs_tol=1e-4)


def test_similar_pair_scores_higher_than_unrelated(client: openai.OpenAI) -> None:
    food, bread, stocks = vectors(client, SENTENCES)
    assert cosine(food, bread) > 0.7
    assert cosine(food, stocks) < 0.2


def test_base64_equals_float(client: openai.OpenAI, http: httpx.Client) -> None:
    floats = vectors(client, SENTENCES, encoding_format="float")
    raw = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": SENTENCES, "encoding_format": "base64"})
    assert raw.status_code == 200
    for item, expected in zip(raw.json()["data"], floats, strict=True):
        decoded = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(decoded) // 4}f", decoded)) == pytest.approx(expected, abs=1e-6)
    # The SDK asks for base64 by default and decodes it itself.
    default = client.embeddings.create(model=EMBED_MODEL, input=SENTENCES)
    for item, expected in zip(default.data, floats, strict=True):
        assert item.embedding == pytest.approx(expected, abs=1e-6)


def test_batch_equals_singles(client: openai.OpenAI) -> None:
    batch = vectors(client, SENTENCES)
    for sentence, expected in zip(SENTENCES, batch, strict=True):
        (single,) = vectors(client, [sentence])
        assert cosine(single, expected) > 0.9999


def test_usage_is_exact_token_count(client: openai.OpenAI) -> None:
    total = 0
    for sentence in SENTENCES:
        usage = client.embeddings.create(model=EMBED_MODEL, input=sentence).usage
        assert usage.prompt_tokens == usage.total_tokens > 2  # [CLS] ... [SEP]
        total += usage.prompt_tokens
    batch = client.embeddings.create(model=EMBED_MODEL, input=SENTENCES).usage
    assert batch.prompt_tokens == batch.total_tokens == total


def test_token_id_inputs(client: openai.OpenAI) -> None:
    (text_vector,) = vectors(client, ["hello world"])
    # [CLS] hello world [SEP] in the MiniLM (BERT uncased) vocabulary.
    ids = [101, 7592, 2088, 102]
    one = client.embeddings.create(model=EMBED_MODEL, input=ids)
    assert one.usage.prompt_tokens == 4
    assert cosine(one.data[0].embedding, text_vector) > 0.9999
    two = client.embeddings.create(model=EMBED_MODEL, input=[ids, ids])
    assert len(two.data) == 2 and two.usage.prompt_tokens == 8


def test_batch_of_256(client: openai.OpenAI) -> None:
    inputs = [f"sentence number {i} about topic {i % 7}" for i in range(256)]
    response = client.embeddings.create(model=EMBED_MODEL, input=inputs)
    assert [item.index for item in response.data] == list(range(256))
    (probe,) = vectors(client, [inputs[200]])
    assert cosine(probe, response.data[200].embedding) > 0.9999


def test_dimensions_native_ok_other_rejected(client: openai.OpenAI) -> None:
    assert len(vectors(client, ["x"], dimensions=384)[0]) == 384
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=EMBED_MODEL, input="x", dimensions=100)
    assert info.value.body["param"] == "dimensions"  # type: ignore[index]


@pytest.mark.parametrize(
    "payload",
    [
        {"input": ""},
        {"input": []},
        {"input": ["", "x"]},
        {"input": "word " * 400},
        {"input": [[]]},
        {"input": [1, -5]},
    ],
    ids=["empty-string", "empty-list", "empty-string-in-list", "too-long", "empty-token-list", "negative-token"],
)
def test_bad_input_is_400_on_input(http: httpx.Client, payload: dict[str, object]) -> None:
    response = http.post("/v1/embeddings", json={"model": EMBED_MODEL, **payload})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "input"


def test_wrong_task_is_400_and_unknown_model_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as embed_chat:
        client.embeddings.create(model=CHAT_MODEL, input="x")
    assert embed_chat.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as chat_embed:
        client.chat.completions.create(model=EMBED_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert chat_embed.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.embeddings.create(model="no-such-embedder", input="x")
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_alias_routes_to_the_same_engine(client: openai.OpenAI) -> None:
    alias = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=SENTENCES[0])
    (direct,) = vectors(client, SENTENCES[:1])
    assert cosine(alias.data[0].embedding, direct) > 0.9999
    assert {m.id for m in client.models.list()} >= {EMBED_MODEL, "sentence-transformers/all-MiniLM-L6-v2"}


def test_matches_sentence_transformers_reference(client: openai.OpenAI) -> None:
    """Our vectors equal sentence-transformers' on the same weights (the model in the BentoML store)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import bentoml
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(bentoml.models.get(EMBED_MODEL).path, device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True).tolist()
    for ours, theirs in zip(vectors(client, SENTENCES), expected, strict=True):
        assert cosine(ours, theirs) >= 0.999
