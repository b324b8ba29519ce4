"""The playground page in a real headless Chromium (Debian's ``chromium``, driven by Playwright) on the real service.

Each visit records every request the page makes and must end with none outside the service. The page asks for
the key and keeps it in session storage only; the answer grows over several animation frames and shows the
figures the server's own usage gives (checked against ``/tokenize``); Stop brings the engine's own running count
back to 0; a wrong key shows the server's 401 message; the Code tab's Python and curl run as they are shown. A
second server with ``auth.mode: disabled`` (the generation-defaults tests' server) serves the same page, which then
asks for no key. On the vision server (``tests/configs/vision.yaml``) the page attaches images, picked or pasted, for
the model that takes them and offers nothing of the kind for the text-only one.

``BENTO_OAI_PLAYGROUND_SCREENSHOT=docs/playground.png`` makes the conversation test write the README's picture.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, FilePayload, Locator, Page, expect, sync_playwright

from tests.e2e.conftest import CHAT_MODEL
from tests.e2e.pool import ServerPool
from tests.e2e.probes import engine_running, wait_engine_idle, wait_for
from tests.e2e.server import Server

QUESTION = "What is the capital of France?"
# What the probe used (env/machines/python.md): without the background-networking flags Chromium keeps trying
# Google's hosts, which this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 120_000  # generous: an answer of a few hundred tokens on 2 shared cores
# Records the answer's text length at every animation frame while it changes: the growth the user sees.
RECORD_GROWTH = """() => {
  window.growth = [];
  const tick = () => {
    const answers = document.querySelectorAll(".message.assistant .content");
    const length = answers.length ? answers[answers.length - 1].textContent.length : 0;
    if (window.growth.at(-1) !== length) window.growth.push(length);
    requestAnimationFrame(tick);
  };
  tick();
}"""


@dataclass
class Visit:
    """One browser context (its own session storage) on the service, with every request it made."""

    context: BrowserContext
    page: Page
    base_url: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside(self) -> list[str]:
        inside = (f"{self.base_url}/", f"blob:{self.base_url}/")  # blob: URLs the page made (image thumbnails)
        return [url for url in self.requests if not url.startswith(inside)]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_visit(chromium: Browser, base_url: str, **options: Any) -> Visit:
    context = chromium.new_context(base_url=base_url, viewport={"width": 1280, "height": 800}, **options)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    visit = Visit(context, page, base_url)
    page.on("request", lambda request: visit.requests.append(request.url))
    page.on("pageerror", lambda error: visit.errors.append(str(error)))
    return visit


def close_visit(visit: Visit) -> None:
    visit.context.close()
    assert visit.requests, "the page made no request at all"
    assert not visit.outside(), f"requests outside the service: {visit.outside()}"
    assert not visit.errors, f"uncaught errors in the page: {visit.errors}"


@pytest.fixture
def visit(chromium: Browser, server: Server) -> Iterator[Visit]:
    opened = open_visit(chromium, server.base_url, permissions=["clipboard-read", "clipboard-write"])
    yield opened
    close_visit(opened)


def enter_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def models_loaded(page: Page) -> list[str]:
    page.wait_for_selector("#model:enabled")
    return [option.get_attribute("value") or "" for option in page.locator("#model option").all()]


def set_sampling(page: Page, temperature: str, max_tokens: str) -> None:
    page.fill("#temperature", temperature)
    page.fill("#max-tokens", max_tokens)


def ask(page: Page, text: str) -> Locator:
    """Send ``text`` with Enter and return the answer's element (its figures appear when it is complete)."""
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    return page.locator(".message.assistant").last


FIGURES = {
    "promptTokens": "prompt",
    "completionTokens": "completion",
    "ttftMs": "ttft_ms",
    "tokensPerSecond": "tokens_per_second",
}


def figures(answer: Locator) -> dict[str, float]:
    """The figures the page shows under a finished answer (its ``data-*`` attributes: the numbers shown)."""
    meta = answer.locator(".meta")
    meta.wait_for()
    values = meta.evaluate("node => ({...node.dataset})")
    return {FIGURES[key]: float(value) for key, value in values.items()}


def prompt_tokens(http: httpx.Client, messages: list[dict[str, Any]], model: str = CHAT_MODEL) -> int:
    response = http.post("/tokenize", json={"model": model, "messages": messages})
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


@pytest.fixture
def open_server(pool: ServerPool) -> Server:
    """The greedy copy of the chat model (and its alias) of test_generation_defaults, beside test_hermes' model, with
    ``auth.mode: disabled``: their server, which this test shares (``tests/configs/generation-defaults.yaml``)."""
    return pool.get("generation-defaults")


@pytest.mark.slow
def test_with_auth_disabled_the_page_asks_no_key(chromium: Browser, open_server: Server) -> None:
    visit = open_visit(chromium, open_server.base_url)
    try:
        page = visit.page
        page.goto("/")
        assert models_loaded(page) == [CHAT_MODEL, "smollm2", "smollm2-hermes"]
        assert page.locator("#key-form").is_hidden() and page.locator("#notice").is_hidden()
        set_sampling(page, "0", "32")
        answer = ask(page, QUESTION)
        figures(answer)
        assert "Paris" in answer.locator(".content").inner_text()
        page.fill("#prompt", QUESTION)
        page.click("#tab-code")
        python, curl = page.locator("#code-python").inner_text(), page.locator("#code-curl").inner_text()
        assert 'api_key="unused"' in python and "Authorization" not in curl
        env = {name: value for name, value in os.environ.items() if name != "OPENAI_API_KEY"}
        ran = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=120)
        assert ran.returncode == 0 and "Paris" in ran.stdout, ran.stderr
    finally:
        close_visit(visit)


def test_the_page_is_the_root_and_bentoml_routes_stay(server: Server) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as anonymous:
        root, page = anonymous.get("/"), anonymous.get("/playground")
        assert root.status_code == page.status_code == 200
        assert root.headers["content-type"] == "text/html; charset=utf-8"
        assert root.content == page.content and "<title>bento-oai playground</title>" in root.text
        assert server.api_key not in root.text and "set-cookie" not in root.headers
        assert anonymous.get("/playground/config").json() == {"api_key_required": True}
        assert anonymous.get("/docs.json").json()["openapi"]
        for path in ("/livez", "/readyz", "/metrics"):
            assert anonymous.get(path).status_code == 200, path
        assert anonymous.get("/v1/models").status_code == 401  # the API is still protected
        assert anonymous.post("/tokenize", json={"prompt": "hi"}).status_code == 401


def test_a_wrong_key_shows_the_servers_401_message(visit: Visit, server: Server) -> None:
    page = visit.page
    page.goto("/")
    notice = page.locator("#notice")
    expect(notice).to_contain_text("Enter this server's API key")  # written once the page has read its config
    enter_key(page, "sk-wrong")
    expect(notice).to_contain_text("401")  # (the page's policy forbids eval: no wait_for_function strings)
    message = notice.inner_text()
    assert "refused the API key (401)" in message and "Incorrect API key provided" in message, message
    assert page.locator("#send").is_disabled() and page.locator("#prompt").is_disabled()
    enter_key(page, server.api_key)  # the right one afterwards: the page recovers
    assert CHAT_MODEL in models_loaded(page)
    expect(notice).to_be_hidden()


def test_an_answer_streams_in_with_its_figures_and_the_conversation_goes_on(
    visit: Visit, server: Server, http: httpx.Client, tmp_path: Path
) -> None:
    page = visit.page
    page.goto("/")
    enter_key(page, server.api_key)
    assert models_loaded(page)[0] == CHAT_MODEL
    assert page.evaluate("sessionStorage.getItem('bento-oai.api-key')") == server.api_key
    assert visit.context.cookies() == []
    set_sampling(page, "0", "64")
    page.evaluate(RECORD_GROWTH)
    answer = ask(page, QUESTION)
    first = figures(answer)
    text = answer.locator(".content").inner_text()
    growth = page.evaluate("window.growth")
    print(f"\nplayground: {text!r} grew over {len(growth) - 1} frames {growth}; figures {first}")
    assert "Paris" in text
    assert len(growth) >= 4 and growth == sorted(growth), growth  # empty, then at least three sizes
    assert answer.locator(".content p").count() >= 1  # rendered as Markdown
    asked = [{"role": "user", "content": QUESTION}]
    assert first["prompt"] == prompt_tokens(http, asked)
    assert 0 < first["completion"] <= 64 and first["ttft_ms"] > 0 and first["tokens_per_second"] > 0
    shown = answer.locator(".meta").inner_text()
    assert f"{first['prompt']:.0f} prompt + {first['completion']:.0f} completion tokens" in shown, shown
    ttft = re.search(r"time to first token (\d+\.\d\d) s", shown)
    assert ttft is not None and abs(float(ttft.group(1)) - first["ttft_ms"] / 1000) <= 0.006, shown

    follow_up = "Write a Python function that adds two numbers."
    page.fill("#prompt", follow_up)
    sent = curl_body(page)["messages"]  # the next call, as the Code tab shows it: the history, then the draft
    assert [message["role"] for message in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == QUESTION and "Paris" in sent[1]["content"] and sent[2]["content"] == follow_up
    page.click("#tab-chat")
    second = figures(ask(page, follow_up))
    assert second["prompt"] == prompt_tokens(http, sent)  # the conversation went on with the first answer in it
    page.screenshot(path=os.environ.get("BENTO_OAI_PLAYGROUND_SCREENSHOT") or str(tmp_path / "playground.png"))

    page.click("#clear")
    assert page.locator("#log > li").count() == 0
    again = figures(ask(page, QUESTION))
    assert again["prompt"] == first["prompt"]  # a new conversation: the history went with Clear


def curl_body(page: Page) -> dict[str, Any]:
    """The JSON body of the Code tab's curl command (its ``-d '...'``, unquoted as the shell would)."""
    page.click("#tab-code")
    curl = page.locator("#code-curl").inner_text()
    quoted = curl[curl.index("-d '") + 4 : curl.rindex("'")]
    body: dict[str, Any] = json.loads(quoted.replace("'\\''", "'"))
    return body


def test_stop_aborts_the_generation_in_the_engine(visit: Visit, server: Server) -> None:
    page = visit.page
    wait_engine_idle(server, CHAT_MODEL, timeout=60)
    page.goto("/")
    enter_key(page, server.api_key)
    models_loaded(page)
    set_sampling(page, "0", "1500")
    answer = ask(page, "Write a very long story about a lighthouse keeper.")
    content = answer.locator(".content")
    wait_for(lambda: len(content.inner_text()) > 20, 120, "the long answer under way")
    assert engine_running(server.base_url, CHAT_MODEL) == 1
    page.click("#stop")
    freed = wait_engine_idle(server, CHAT_MODEL, timeout=10)
    print(f"\nplayground: Stop freed the engine in {freed:.2f} s")
    meta = answer.locator(".meta")
    assert "stopped" in meta.inner_text()
    length = len(content.inner_text())
    page.wait_for_timeout(1000)
    assert len(content.inner_text()) == length  # nothing more arrives
    assert page.locator("#send").is_visible() and page.locator("#stop").is_hidden()

    # The page answers again after a stop, and Escape stops too. The same prompt in a new conversation gives the same
    # long greedy answer (a follow-up would depend on where the stop cut the first one, and may end at once).
    page.click("#clear")
    again = ask(page, "Write a very long story about a lighthouse keeper.")
    wait_for(lambda: len(again.locator(".content").inner_text()) > 20, 120, "the next long answer under way")
    assert engine_running(server.base_url, CHAT_MODEL) == 1
    page.press("#prompt", "Escape")
    wait_engine_idle(server, CHAT_MODEL, timeout=10)
    assert "stopped" in again.locator(".meta").inner_text()


def test_the_code_tab_shows_calls_that_run_as_shown(visit: Visit, server: Server) -> None:
    page = visit.page
    page.goto("/")
    enter_key(page, server.api_key)
    models_loaded(page)
    set_sampling(page, "0", "32")
    page.fill("#prompt", QUESTION)  # the message being typed is part of the call
    page.click("#tab-code")
    assert page.locator("#panel-chat").is_hidden()
    python = page.locator("#code-python").inner_text()
    curl = page.locator("#code-curl").inner_text()
    assert server.api_key not in python + curl
    assert f'model="{CHAT_MODEL}"' in python and "temperature=0," in python and "max_tokens=32," in python
    page.click('[data-copy="code-python"]')
    assert page.evaluate("navigator.clipboard.readText()") == python

    env = {**os.environ, "OPENAI_API_KEY": server.api_key}
    ran = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "Paris" in ran.stdout and "completion tokens]" in ran.stdout, ran.stdout
    ran = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "Paris" in ran.stdout and ran.stdout.rstrip().endswith("data: [DONE]"), ran.stdout

    page.focus("#tab-code")
    page.keyboard.press("ArrowLeft")  # the tabs answer the arrow keys
    assert page.locator("#panel-chat").is_visible() and page.input_value("#prompt") == QUESTION


def test_a_phone_width_and_the_keyboard(chromium: Browser, server: Server) -> None:
    visit = open_visit(chromium, server.base_url)
    try:
        page = visit.page
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto("/")
        enter_key(page, server.api_key)
        models_loaded(page)
        set_sampling(page, "0", "16")
        page.fill("#prompt", "One line")
        page.press("#prompt", "Shift+Enter")
        page.keyboard.type("and another")
        assert page.input_value("#prompt") == "One line\nand another"  # Shift+Enter broke the line, sent nothing
        assert page.locator("#log > li").count() == 0
        page.press("#prompt", "Enter")
        figures(page.locator(".message.assistant").last)
        assert page.locator(".message.user .content").inner_text() == "One line\nand another"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at a phone's 390"
        box = page.locator("#send").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390
    finally:
        close_visit(visit)


def test_markdown_renders_as_elements_and_never_as_markup(visit: Visit, server: Server) -> None:
    page = visit.page
    page.goto("/playground")
    rendered = page.evaluate(
        """async () => {
          const { render } = await import("/playground/static/markdown.js");
          const box = document.createElement("div");
          box.append(render(
            "# Title\\n\\nSome **bold** and `code` <img src=x onerror=alert(1)>\\n\\n" +
            "```python\\nprint('<b>hi</b>')\\n```\\n\\n- a\\n- b\\n\\n[x](javascript:alert(1))\\n\\n```js\\nunclosed"
          ));
          return {
            tags: [...box.children].map(node => node.tagName.toLowerCase()),
            img: box.querySelectorAll("img, b, script").length,
            code: [...box.querySelectorAll("pre code")].map(node => [node.className, node.textContent]),
            links: box.querySelectorAll("a").length,
            text: box.textContent,
          };
        }"""
    )
    assert rendered["tags"] == ["h1", "p", "pre", "ul", "p", "pre"]
    assert rendered["img"] == 0 and rendered["links"] == 0
    assert rendered["code"] == [["language-python", "print('<b>hi</b>')"], ["language-js", "unclosed"]]
    assert "<img src=x onerror=alert(1)>" in rendered["text"]


@pytest.fixture
def vision_server(pool: ServerPool) -> Server:
    """tiny-vlm (takes images) beside smollm2-hermes (text only): test_vision's server."""
    return pool.get("vision")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


# A clipboard paste of one PNG into the message box, as the browser dispatches it.
PASTE = """(encoded) => {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], "pasted.png", { type: "image/png" }));
  const paste = new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
  document.getElementById("prompt").dispatchEvent(paste);
}"""


@pytest.mark.stress  # on the vision server, in make test-stress for now
def test_images_attach_for_the_model_that_takes_them(chromium: Browser, vision_server: Server) -> None:
    visit = open_visit(chromium, vision_server.base_url)
    page, sent = visit.page, []
    page.on("request", lambda request: sent.append(request.post_data_json) if "/chat/" in request.url else None)
    try:
        page.goto("/")
        enter_key(page, vision_server.api_key)
        assert sorted(models_loaded(page)) == ["smollm2-hermes", "tiny-vlm"]
        page.select_option("#model", "smollm2-hermes")
        expect(page.locator("#attach")).to_be_hidden()
        page.select_option("#model", "tiny-vlm")
        expect(page.locator("#attach")).to_be_visible()
        picked = FilePayload(name="red.png", mimeType="image/png", buffer=png(256, 256))
        page.set_input_files("#attach-file", files=[picked])
        page.evaluate(PASTE, base64.b64encode(png(64, 32)).decode())
        expect(page.locator("#attachments img")).to_have_count(2)
        set_sampling(page, "0", "4")
        shown = figures(ask(page, "What is this?"))
        assert page.locator(".message.user .thumbs img").count() == 2 and page.locator("#attachments").is_hidden()
    finally:
        close_visit(visit)
    messages = sent[-1]["messages"]
    text, *images = messages[-1]["content"]
    assert text == {"type": "text", "text": "What is this?"}
    assert [part["type"] for part in images] == ["image_url", "image_url"], images
    assert all(part["image_url"]["url"].startswith("data:image/png;base64,") for part in images)
    with httpx.Client(base_url=vision_server.base_url, timeout=60) as http:
        http.headers["Authorization"] = f"Bearer {vision_server.api_key}"
        text_only = prompt_tokens(http, [{"role": "user", "content": "What is this?"}], "tiny-vlm")
        images = 9 * 9 + 2  # tiny-vlm's image tokens: 256 x 256 pixels are 9 x 9, 64 x 32 are 1 x 2
        assert shown["prompt"] == prompt_tokens(http, messages, "tiny-vlm") > text_only + images, (shown, text_only)
