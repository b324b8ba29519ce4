"""Image URLs on public-looking names, fetched or refused by the real server (``tests/configs/image-fetch.yaml``:
tiny-vlm, ``media.allowed_domains: [example.com, 127.0.0.1]``), with the official SDK.

The service has no switch that would let a test exempt an address from its SSRF check, and must not have one. So
the test makes the network real instead: a public address (``PUBLIC_ADDRESS``) is added to this machine's loopback
interface while the module runs, and an HTTP server listens on it; to the fetcher it is as public as any host on the
internet. The server resolves the public-looking names of ``tests.e2e.servers.IMAGE_HOSTS`` through an /etc/hosts of
its own (a private mount namespace: ``tests.e2e.server.with_hosts``), by the system's resolver like any other name.
Both need root: without it these tests fail, they do not skip.

Shown here: an allowed name on the public address is fetched, once, with the URL's name as Host while the connection
goes to the address that was checked; a public name outside ``allowed_domains`` is refused; names whose DNS answer is
loopback (or public and loopback) are refused although allowed; a redirect from the allowed public server to loopback
(an address, or an allowed name of loopback) is refused. Each refusal is a 400 naming the part, whose message repeats
neither the URL nor its query, and the server it would have reached records no request.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.e2e.pool import ServerPool
from tests.e2e.servers import ALLOWED_HOST, LOOPBACK_HOST, MIXED_HOST, OTHER_HOST, PUBLIC_ADDRESS
from tests.e2e.test_vision import VLM, bad_request, image_part, png

pytestmark = pytest.mark.stress  # a server of its own, with vLLM's image warm-up: make test-stress

SECRET = "sig=s3cr3t-token"
PART = "messages[0].content[1].image_url"


@pytest.fixture(scope="module")
def image_fetch(pool: ServerPool) -> openai.OpenAI:
    server = pool.get("image-fetch")
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)


def ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def public_address() -> Iterator[str]:
    """``PUBLIC_ADDRESS`` on the loopback interface for the module's duration, removed after it, failed or not."""
    if os.geteuid() != 0:
        pytest.fail("these tests need root: they add a public address to lo and give the server hosts of its own")
    added = ip("addr", "add", f"{PUBLIC_ADDRESS}/32", "dev", "lo")
    if added.returncode != 0 and "already assigned" not in added.stderr:  # a killed run left it: taken over
        pytest.fail(f"cannot add {PUBLIC_ADDRESS} to lo: {added.stderr.strip()}")
    try:
        yield PUBLIC_ADDRESS
    finally:
        removed = ip("addr", "del", f"{PUBLIC_ADDRESS}/32", "dev", "lo")
        assert removed.returncode == 0, f"{PUBLIC_ADDRESS} left on lo: {removed.stderr.strip()}"


class Recorder(ThreadingHTTPServer):
    """Records the path and Host header of every request; answers a PNG, or a 302 to ``redirects[path]``."""

    def __init__(self, address: str) -> None:
        self.seen: list[tuple[str, str]] = []
        self.redirects: dict[str, str] = {}
        super().__init__((address, 0), RecorderHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class RecorderHandler(BaseHTTPRequestHandler):
    server: Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Host", "")))
        location = self.server.redirects.get(urlsplit(self.path).path)
        body = b"" if location else png(64, 64)
        self.send_response(302 if location else 200)
        if location:
            self.send_header("Location", location)
        else:
            self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def recording(address: str) -> Iterator[Recorder]:
    """A ``Recorder`` on ``address`` in a thread, checked to record (a probe), then emptied."""
    server = Recorder(address)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = httpx.get(f"http://{address}:{server.port}/probe", timeout=5, trust_env=False)
        assert probe.status_code == 200 and server.seen == [("/probe", f"{address}:{server.port}")], server.seen
        server.seen.clear()
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def public(public_address: str) -> Iterator[Recorder]:
    with recording(public_address) as server:
        yield server


@pytest.fixture(scope="module")
def loopback() -> Iterator[Recorder]:
    with recording("127.0.0.1") as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(public: Recorder, loopback: Recorder) -> None:
    for server in (public, loopback):
        server.seen.clear()
        server.redirects.clear()


def ask(client: openai.OpenAI, *images: str) -> int:
    content = [*(image_part(url) for url in images), {"type": "text", "text": "What is this?"}]
    messages: Any = [{"role": "user", "content": content}]
    reply = client.chat.completions.create(model=VLM, messages=messages, max_tokens=2, temperature=0)
    assert reply.usage is not None and reply.choices[0].finish_reason in ("stop", "length")
    return reply.usage.prompt_tokens


def test_an_allowed_public_name_is_fetched_once(image_fetch: openai.OpenAI, public: Recorder) -> None:
    url = f"http://{ALLOWED_HOST}:{public.port}/cat.png?{SECRET}"
    assert ask(image_fetch, url) > ask(image_fetch)  # the fetched PNG reached the engine as an image
    # one GET, on the checked public address, carrying the URL's own name
    assert public.seen == [(f"/cat.png?{SECRET}", f"{ALLOWED_HOST}:{public.port}")], public.seen


def test_a_responses_input_image_by_url_is_fetched_once(image_fetch: openai.OpenAI, public: Recorder) -> None:
    url = f"http://{ALLOWED_HOST}:{public.port}/dog.png"
    text: Any = {"type": "input_text", "text": "What is this?"}
    bare = image_fetch.responses.create(model=VLM, max_output_tokens=16, input=[{"role": "user", "content": [text]}])
    seen = image_fetch.responses.create(
        model=VLM, max_output_tokens=16,
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "auto"}, text]}],
    )  # fmt: skip
    assert seen.usage is not None and bare.usage is not None and seen.usage.input_tokens > bare.usage.input_tokens
    assert public.seen == [("/dog.png", f"{ALLOWED_HOST}:{public.port}")], public.seen


NOT_PUBLIC = "points to an address that is not public"
REFUSED = {
    "name-not-allowed": (f"http://{OTHER_HOST}:{{public}}/cat.png", "", "does not fetch images from"),
    "name-of-loopback": (f"http://{LOOPBACK_HOST}:{{loopback}}/cat.png", "", NOT_PUBLIC),
    "name-of-public-and-loopback": (f"http://{MIXED_HOST}:{{public}}/cat.png", "", NOT_PUBLIC),
    "redirect-to-loopback": (
        f"http://{ALLOWED_HOST}:{{public}}/away",
        "http://127.0.0.1:{loopback}/cat.png",
        f"redirected to {NOT_PUBLIC}",
    ),
    "redirect-to-a-name-of-loopback": (
        f"http://{ALLOWED_HOST}:{{public}}/away",
        f"http://{LOOPBACK_HOST}:{{loopback}}/cat.png",
        f"redirected to {NOT_PUBLIC}",
    ),
}


@pytest.mark.parametrize(("url", "redirect", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_what_is_not_allowed_or_not_public_is_refused_unfetched(
    image_fetch: openai.OpenAI, public: Recorder, loopback: Recorder, url: str, redirect: str, reason: str
) -> None:
    full = url.format(public=public.port, loopback=loopback.port) + "?" + SECRET
    if redirect:
        public.redirects["/away"] = redirect.format(loopback=loopback.port) + "?" + SECRET
    error = bad_request(image_fetch, [{"type": "text", "text": "What is this?"}, image_part(full)])
    body: Any = error.body
    assert body["param"] == PART and body["code"] == "invalid_image_url", body
    assert reason in body["message"], body
    for echoed in ("s3cr3t", "example.", "127.0.0.1", PUBLIC_ADDRESS, "/cat.png", "/away"):
        assert echoed not in body["message"], body
    assert loopback.seen == [], loopback.seen
    # the allowed public server is asked once when it is the redirect's first hop, else never
    assert public.seen == ([(f"/away?{SECRET}", f"{ALLOWED_HOST}:{public.port}")] if redirect else []), public.seen
