"""Images in, through the real engine: ``tiny-vlm`` (a tiny random PaddleOCR-VL, ``make tiny-vlm``) on the server
of ``tests/configs/vision.yaml``, with the official SDK. Its answers are noise; what is checked is the path: image
parts reach the engine as images (the prompt grows by the engine's image tokens, more for a larger image), and bad
images are 400s naming the part, after which the server still serves.

Image URLs the server must not fetch (its own loopback over IPv4 and IPv6, the cloud metadata address, ``localhost``)
are refused with a 400 naming the part, without the URL's query, and a real HTTP server listening on those loopback
addresses records no request. What needs a public address and names of its own (a redirect to loopback from a
public first hop, public-looking names resolving to loopback, "fetched only when allowed" by ``media.allowed_domains``)
is in ``test_image_fetch.py``, on a server of its own: an allowlist here would refuse these URLs before their address
is checked. ``tests/unit/test_image_fetch.py`` covers ``media.remote_fetch: false``, which no test server's config sets.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from PIL import Image

from tests.e2e.pool import ServerPool
from tests.e2e.servers import CHAT_MODEL

VLM = "tiny-vlm"

pytestmark = pytest.mark.stress  # its server's boot does not fit in make test's 15 minutes yet


@pytest.fixture(scope="module")
def vision(pool: ServerPool) -> openai.OpenAI:
    server = pool.get("vision")
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0)


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30), format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format)
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_part(url: str, detail: str = "auto") -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def ask(client: openai.OpenAI, *images: str, model: str = VLM) -> int:
    content = [*(image_part(url) for url in images), {"type": "text", "text": "What is this?"}]
    messages: Any = [{"role": "user", "content": content}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
    assert reply.usage is not None and reply.choices[0].finish_reason in ("stop", "length")
    return reply.usage.prompt_tokens


def test_an_images_tokens_grow_with_its_size(vision: openai.OpenAI) -> None:
    text_only = ask(vision)
    small, medium, big, large = (ask(vision, data_url(png(side, side))) for side in (64, 128, 256, 512))
    assert text_only < small < medium < big < large, (text_only, small, medium, big, large)
    assert large - small == 256 - 4  # tiny-vlm: a token per 28 x 28 pixels, at most 256 (scripts/tiny_vlm.py)
    wide = ask(vision, data_url(png(512, 64)))  # the long side of 512, the pixels of a 181 x 181 square
    assert medium < wide < big, (medium, wide, big)
    two = ask(vision, data_url(png(64, 64)), data_url(png(512, 512)))
    assert two - text_only == (small - text_only) + (large - text_only)


def test_streaming_and_n_with_an_image(vision: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": [image_part(data_url(png(64, 64))), {"type": "text", "text": "Hi"}]}]
    stream = vision.chat.completions.create(
        model=VLM, messages=messages, max_tokens=4, n=2, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 20 and usage.completion_tokens <= 8
    assert {choice.index for chunk in chunks for choice in chunk.choices} == {0, 1}


def test_json_mode_with_an_image(vision: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": [image_part(data_url(png(64, 64))), {"type": "text", "text": "JSON"}]}]
    reply = vision.chat.completions.create(
        model=VLM, messages=messages, max_tokens=12,
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert reply.choices[0].message.content is not None


COLOR = {
    "type": "object",
    "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
    "required": ["color"],
    "additionalProperties": False,
}  # bounded: the random model's grammar-constrained answer ends within a few tokens


def test_a_json_schema_and_a_forced_tool_hold_with_an_image(vision: openai.OpenAI) -> None:
    text: Any = {"type": "text", "text": "Which color is it?"}
    picture = image_part(data_url(png(64, 64)))
    messages: Any = [{"role": "user", "content": [picture, text]}]
    schema: Any = {"type": "json_schema", "json_schema": {"name": "color", "schema": COLOR, "strict": True}}
    answer = vision.chat.completions.create(model=VLM, messages=messages, max_tokens=32, response_format=schema)
    assert json.loads(answer.choices[0].message.content or "")["color"] in ("red", "green", "blue")
    tool: Any = {"type": "function", "function": {"name": "describe", "parameters": COLOR}}

    def forced(content: Any, choice: Any) -> Any:
        return vision.chat.completions.create(
            model=VLM,
            messages=[{"role": "user", "content": content}],
            max_tokens=32,
            tools=[tool],
            tool_choice=choice,
            parallel_tool_calls=False,
        )

    for choice in [{"type": "function", "function": {"name": "describe"}}, "required"]:
        reply = forced([picture, text], choice)
        calls = reply.choices[0].message.tool_calls or []
        assert len(calls) == 1 and calls[0].type == "function" and calls[0].function.name == "describe", reply
        assert json.loads(calls[0].function.arguments)["color"] in ("red", "green", "blue")
        bare = forced([text], choice)
        assert reply.usage is not None and bare.usage is not None
        assert reply.usage.prompt_tokens > bare.usage.prompt_tokens  # the image went in beside the tools


def test_responses_input_image_by_data_url_and_by_file_id(vision: openai.OpenAI) -> None:
    picture = png(256, 256)
    by_url = vision.responses.create(
        model=VLM, max_output_tokens=16,
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": data_url(picture), "detail": "low"},
                                            {"type": "input_text", "text": "What is this?"}]}],
    )  # fmt: skip
    uploaded = vision.files.create(file=("picture.png", picture, "image/png"), purpose="vision")
    by_file = vision.responses.create(
        model=VLM, max_output_tokens=16,
        input=[{"role": "user", "content": [{"type": "input_image", "file_id": uploaded.id, "detail": "auto"},
                                            {"type": "input_text", "text": "What is this?"}]}],
    )  # fmt: skip
    assert by_url.usage is not None and by_file.usage is not None
    assert by_url.usage.input_tokens == by_file.usage.input_tokens > 9 * 9  # 256 x 256 pixels: 9 x 9 image tokens
    assert by_url.status in ("completed", "incomplete") and by_file.status in ("completed", "incomplete")  # noise


def test_tokenize_counts_the_images(vision: openai.OpenAI) -> None:
    text = {"type": "text", "text": "What is this?"}  # as ask() sends it
    messages = [{"role": "user", "content": [image_part(data_url(png(256, 256))), text]}]
    counted = vision.post("/../tokenize", body={"model": VLM, "messages": messages}, cast_to=object)
    assert isinstance(counted, dict)
    assert counted["count"] == ask(vision, data_url(png(256, 256)))


def bad_request(client: openai.OpenAI, content: list[dict[str, object]], model: str = VLM) -> openai.BadRequestError:
    messages: Any = [{"role": "user", "content": content}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=messages, max_tokens=2)
    return caught.value


@pytest.mark.parametrize(
    ("content", "param"),
    [
        (
            [{"type": "text", "text": "hi"}, image_part(data_url(b"not an image at all"))],
            "messages[0].content[1].image_url",
        ),
        ([image_part(data_url(png(1001, 1000)))], "messages[0].content[0].image_url"),
        ([image_part(data_url(png(8, 8, format="BMP"), "image/bmp"))], "messages[0].content[0].image_url"),
        ([image_part(data_url(png(8, 8)))] * 4, "messages[0].content[3].image_url"),
    ],
    ids=["undecodable", "too-many-pixels", "unsupported-format", "too-many-images"],
)
def test_bad_images_are_400s_on_the_part(vision: openai.OpenAI, content: list[dict[str, object]], param: str) -> None:
    error = bad_request(vision, content)
    assert error.body is not None and error.body["param"] == param, error.body  # type: ignore[index]
    assert ask(vision, data_url(png(32, 32))) > 0  # still serving


def test_the_text_only_model_refuses_images(vision: openai.OpenAI) -> None:
    error = bad_request(vision, [{"type": "text", "text": "hi"}, image_part(data_url(png(8, 8)))], "smollm2-hermes")
    assert error.body["param"] == "messages[0].content[1].image_url"  # type: ignore[index]
    assert "does not accept image input" in error.body["message"]  # type: ignore[index]
    assert CHAT_MODEL  # the default server's model is text-only too (its ModelCapabilities.max_images is 0)


class RecordingServer(ThreadingHTTPServer):
    """Answers every GET with a PNG and records its path: a URL the service must not fetch leaves no line here."""

    def __init__(self, host: str, seen: list[str]) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.seen = seen
        super().__init__((host, 0), RecordingHandler)


class RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.seen.append(self.path)
        body = png(8, 8)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class Loopback:
    """Recording servers on 127.0.0.1 and (where the machine has IPv6) ::1, and every path they were asked for."""

    port: int
    port6: int | None
    seen: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def loopback() -> Iterator[Loopback]:
    seen: list[str] = []
    servers = [RecordingServer("127.0.0.1", seen)]
    with contextlib.suppress(OSError):  # no IPv6 loopback on this machine
        servers.append(RecordingServer("::1", seen))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = [server.server_address[1] for server in servers]
    with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/probe", timeout=5) as answer:  # it does record
        assert answer.status == 200 and seen == ["/probe"]
    seen.clear()
    yield Loopback(ports[0], ports[1] if len(ports) > 1 else None, seen)
    for server in servers:
        server.shutdown()
        server.server_close()


SECRET = "sig=s3cr3t-token"
REFUSED_URLS = {
    "loopback": "http://127.0.0.1:{port}/x.png",
    "ipv6-loopback": "http://[::1]:{port6}/x.png",
    "metadata": "http://169.254.169.254/latest/meta-data",
    "localhost": "http://localhost:{port}/x.png",  # a DNS name resolving to loopback (/etc/hosts: offline)
}


@pytest.mark.parametrize("url", REFUSED_URLS.values(), ids=REFUSED_URLS.keys())
def test_urls_to_the_servers_own_network_are_refused_unfetched(
    vision: openai.OpenAI, loopback: Loopback, url: str
) -> None:
    if "{port6}" in url and loopback.port6 is None:
        pytest.skip("no IPv6 loopback on this machine")
    full = url.format(port=loopback.port, port6=loopback.port6) + "?" + SECRET
    error = bad_request(vision, [{"type": "text", "text": "What is this?"}, image_part(full)])
    body: Any = error.body
    assert body["param"] == "messages[0].content[1].image_url", body
    assert body["code"] == "invalid_image_url", body
    assert "s3cr3t" not in body["message"] and "/x.png" not in body["message"] and "meta-data" not in body["message"]
    assert loopback.seen == [], loopback.seen
