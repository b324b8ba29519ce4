"""Images in chat, Responses and /tokenize, with a fake engine that reads images (``max_images``): the parts reach
the engine decoded and in order, the prompt counts their tokens, and every bad image is a 400 naming its part."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from openai_routes.core.engine import ModelCapabilities
from openai_routes.core.limits import MediaLimits
from openai_routes.pipeline.images import FoundImage, check_images, find_images
from openai_routes.protocol.chat import ChatMessage
from tests.unit.fakes import CHAT_MODEL, FakeGenerateEngine
from tests.unit.test_responses import Harness, error_of, serve


def png(width: int, height: int, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url, "detail": "low"}}


def chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "?"}]}]}


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    engine = FakeGenerateEngine(context=4096, capabilities=ModelCapabilities(max_images=2))
    async with serve(tmp_path, engine) as harness:
        yield harness


async def test_images_reach_the_engine_in_order_and_count_in_the_prompt(h: Harness) -> None:
    text_only = (await h.client.post("/chat/completions", json=chat())).json()["usage"]["prompt_tokens"]
    response = await h.client.post(
        "/chat/completions", json=chat(image(data_url(png(32, 32))), image(data_url(png(64, 16))))
    )
    assert response.status_code == 200, response.text
    # the fake's image tokens: one per 16 x 16 pixels, after each "<image>" placeholder
    assert response.json()["usage"]["prompt_tokens"] == text_only + 4 + 4
    [images] = h.generator.images[-1:]
    assert [one.image.size for one in images] == [(32, 32), (64, 16)] and images[0].image.mode == "RGB"
    assert [one.param for one in images] == ["messages[0].content[0].image_url", "messages[0].content[1].image_url"]
    assert images[0].detail == "low"
    assert h.generator.calls[-1].media == [one.param for one in images]  # the rendered media reach generate


def test_images_are_found_with_the_part_they_came_from() -> None:
    messages = [{"role": "user", "content": [image(data_url(png(32, 32))), {"type": "text", "text": "hi"}]}]
    found = find_images([ChatMessage.model_validate(message) for message in messages])
    assert [one.param for one in found] == ["messages[0].content[0].image_url"]


@pytest.mark.parametrize(
    ("parts", "param", "says"),
    [
        ([image(data_url(b"no image here"))], "messages[0].content[0].image_url", "could not be decoded"),
        ([image(data_url(png(8, 8, "BMP"), "image/bmp"))], "messages[0].content[0].image_url", "Unsupported"),
        ([image(data_url(png(8, 8)))] * 3, "messages[0].content[2].image_url", "At most 2 images"),
        ([image("ftp://example.com/a.png")], "messages[0].content[0].image_url", "data URL or an http(s) URL"),
        ([image("data:text/plain;base64,aGk=")], "messages[0].content[0].image_url", "not an image"),
    ],
    ids=["undecodable", "bmp", "too-many", "scheme", "not-image"],
)  # fmt: skip
async def test_bad_images_are_400s_on_the_part(h: Harness, parts: list[dict[str, Any]], param: str, says: str) -> None:
    error = error_of(await h.client.post("/chat/completions", json=chat(*parts)), 400)
    assert error["param"] == param and says in error["message"], error
    assert h.generator.calls == []  # nothing reached the engine
    assert (await h.client.post("/chat/completions", json=chat(image(data_url(png(8, 8)))))).status_code == 200


def test_pixels_and_counts_are_checked_against_the_limits() -> None:
    found = [FoundImage(ChatMessage.model_validate({"role": "user", "content": [image("data:x")]}).images[0], "p")]
    with pytest.raises(Exception, match="does not accept image input"):
        check_images(found, ModelCapabilities(), MediaLimits())
    with pytest.raises(Exception, match="At most 1 images"):
        check_images(found * 2, ModelCapabilities(max_images=8), MediaLimits(max_images_per_request=1))
    check_images(found, ModelCapabilities(max_images=1), MediaLimits())


async def test_too_many_pixels_is_a_400(tmp_path: Path) -> None:
    from openai_routes.pipeline.images import decode

    with pytest.raises(Exception, match="more than the 100 allowed") as caught:
        decode(png(11, 10), "messages[0].content[0].image_url", 100)
    assert getattr(caught.value, "param", None) == "messages[0].content[0].image_url"


async def test_a_text_only_model_refuses_images(tmp_path: Path) -> None:
    async with serve(tmp_path) as h:  # the default fake reads no images
        error = error_of(await h.client.post("/chat/completions", json=chat(image(data_url(png(8, 8))))), 400)
        assert error["param"] == "messages[0].content[0].image_url" and "does not accept image" in error["message"]


async def test_responses_input_image_by_data_url_and_by_file_id_of_the_caller_only(h: Harness) -> None:
    picture = png(32, 32)
    upload = await h.client.post("/files", data={"purpose": "vision"}, files={"file": ("p.png", picture)})
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["id"]
    by_file = {"type": "input_image", "file_id": file_id}
    by_url = {"type": "input_image", "image_url": data_url(picture)}
    counts = []
    for part in (by_url, by_file):
        body = {
            "model": CHAT_MODEL,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "?"}, part]}],
        }
        response = await h.client.post("/responses", json=body)
        assert response.status_code == 200, response.text
        counts.append(response.json()["usage"]["input_tokens"])
        items = (await h.client.get(f"/responses/{response.json()['id']}/input_items")).json()["data"]
        assert items[0]["content"][1]["type"] == "input_image"
    assert counts[0] == counts[1]
    body = {"model": CHAT_MODEL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "?"}, by_file]}]}
    error = error_of(await h.other.post("/responses", json=body), 404)  # another key's file does not exist
    assert error["param"] == "input[0].content[1].file_id"
    both = {"type": "input_image", "file_id": file_id, "image_url": data_url(picture)}
    body = {"model": CHAT_MODEL, "input": [{"role": "user", "content": [both]}]}
    assert error_of(await h.client.post("/responses", json=body), 400)["param"] == "input[0].content[0]"
