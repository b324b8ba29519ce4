"""The Bento as a container, for real: ``scripts/container.py`` (``make container``) builds the default config's
image with ``bentoml containerize``, and the image runs as the README says a user runs it: not as root, its
models from inside the image, API keys from ``-e``, the state on a named volume. The official SDK then gets a
chat answer, a stream, embeddings and a Responses round trip; a wrong key gets 401; the stored response survives
a restart on the same volume; ``stop`` (SIGTERM) exits 0 within the grace with no process left.

Every image, container and volume the test made is removed at the end (the base's stand-in too, where the test
had to build one), and so is the Bento. ``make test-container``; CI runs it after ``make test``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.e2e.server import ROOT, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

RUNTIME = "podman"
STATE_DIR = "/home/bentoml/bento-oai"  # bento_image.STATE_DIR: the README's `-v` target
CHAT_MODEL = "smollm2-135m-instruct"
EMBEDDING_MODEL = "all-minilm-l6-v2"
GRACE = 30  # configs/default.yaml's limits.shutdown_grace


def podman_env() -> dict[str, str]:
    return {"CONTAINERS_CONF": str(ROOT / "container" / "containers.conf"), **os.environ}


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run([RUNTIME, *args], capture_output=True, text=True, env=podman_env())
    if check and result.returncode:
        raise AssertionError(f"{RUNTIME} {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result.stdout


def container_log(name: str) -> str:
    """The container's output, both streams (``podman logs`` replays the service's stderr on its own stderr)."""
    logs = subprocess.run(
        [RUNTIME, "logs", name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=podman_env()
    )
    return logs.stdout


def image_ids() -> set[str]:
    return set(podman("images", "--all", "--quiet", "--no-trunc").split())


@dataclass
class Built:
    image: str
    seconds: float


@pytest.fixture(scope="module")
def built() -> Iterator[Built]:
    before = image_ids()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "scripts/container.py", "--config", "configs/default.yaml"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    print(result.stdout[-4000:], result.stderr[-4000:])
    assert result.returncode == 0, result.stderr[-4000:]
    image = result.stdout.strip().splitlines()[-1]
    info = Built(image=image, seconds=time.monotonic() - started)
    size = int(podman("image", "inspect", image, "--format", "{{.Size}}"))
    print(f"image {image} built in {info.seconds:.0f} s, {size / 1e9:.2f} GB")
    try:
        yield info
    finally:
        for image_id in image_ids() - before:
            podman("rmi", "--force", image_id, check=False)
        podman("image", "prune", "--force", check=False)
        subprocess.run([str(Path(sys.executable).parent / "bentoml"), "delete", "--yes", image], check=False)


@dataclass
class Container:
    name: str
    port: int
    key: str
    volume: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=key or self.key, max_retries=0, timeout=300)


def run_container(image: str, name: str, volume: str, key: str) -> Container:
    port = free_port()
    # The README's command, with host networking (this machine's podman) and a free port instead of -p 3000:3000.
    podman(
        "run", "--detach", "--name", name, "--network", "host", "--shm-size", "1g", "-e", f"BENTO_OAI_API_KEYS={key}",
        "-v", f"{volume}:{STATE_DIR}", image, "--port", str(port),
    )  # fmt: skip
    container = Container(name=name, port=port, key=key, volume=volume)
    started = time.monotonic()
    while time.monotonic() < started + 900:
        state = json.loads(podman("inspect", name))[0]["State"]
        assert state["Running"], f"the container exited {state['ExitCode']}:\n{container_log(name)[-4000:]}"
        try:
            if httpx.get(f"{container.base_url}/readyz", timeout=5).status_code == 200:
                print(f"{name}: run to ready in {time.monotonic() - started:.0f} s")
                return container
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise AssertionError(f"never ready:\n{container_log(name)[-4000:]}")


def stop(container: Container) -> tuple[int, float]:
    """``podman stop`` (SIGTERM, then SIGKILL after the grace): the exit code and how long it took."""
    started = time.monotonic()
    podman("stop", "--time", str(GRACE + 30), container.name)
    state = json.loads(podman("inspect", container.name))[0]["State"]
    return state["ExitCode"], time.monotonic() - started


@pytest.fixture(scope="module")
def volume() -> Iterator[str]:
    name = f"bento-oai-test-{secrets.token_hex(4)}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def first(built: Built, volume: str) -> Iterator[Container]:
    name = f"bento-oai-test-{secrets.token_hex(4)}"
    # The first start on a new volume also decides `dtype: auto` (about a minute); a restart reads the record.
    container = run_container(built.image, name, volume, key=f"sk-test-{secrets.token_urlsafe(16)}")
    decided = [line for line in container_log(name).splitlines() if "dtype auto" in line]
    print("\n".join(decided))  # the machine's decision inside the container, in the test log
    yield container
    podman("rm", "--force", name, check=False)


def test_the_service_runs_as_a_user_not_root(first: Container) -> None:
    assert podman("exec", first.name, "id", "-u").strip() != "0"
    processes = podman("top", first.name, "user").split()[1:]
    assert processes and "root" not in processes, processes


def test_chat_answers_from_the_models_inside_the_image(first: Container) -> None:
    reply = first.client().chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0
    )
    assert reply.choices[0].message.content == "The capital of France is Paris."
    models = podman("exec", first.name, "ls", "/home/bentoml/bento/models").split()
    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(models)


def test_stream_embeddings_and_wrong_key(first: Container) -> None:
    client = first.client()
    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1 and "".join(pieces)
    vectors = client.embeddings.create(model=EMBEDDING_MODEL, input=["a cat", "a dog"]).data
    assert [len(item.embedding) for item in vectors] == [384, 384]
    with pytest.raises(openai.AuthenticationError) as refused:
        first.client(key="sk-wrong").models.list()
    assert refused.value.status_code == 401


def test_stored_response_survives_a_restart_and_stop_exits_zero(built: Built, first: Container) -> None:
    response = first.client().responses.create(
        model=CHAT_MODEL, input="What is the capital of France?", temperature=0, max_output_tokens=16, store=True
    )
    assert response.status == "completed" and response.output_text
    pid = json.loads(podman("inspect", first.name))[0]["State"]["Pid"]
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    # A stream in flight when SIGTERM comes is drained: it ends as it would have, then the container exits 0.
    stream = first.client().chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Tell me a story."}], max_tokens=48, stream=True,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    chunks = iter(stream)
    assert next(chunks)
    with ThreadPoolExecutor(1) as pool:
        stopping = pool.submit(stop, first)
        finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
        exit_code, seconds = stopping.result()
    assert finishes == ["length"]
    assert exit_code == 0, container_log(first.name)[-4000:]
    assert seconds < GRACE + 10, seconds
    assert not [process for process in tree if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
    podman("rm", first.name)

    name = f"bento-oai-test-{secrets.token_hex(4)}"
    try:
        second = run_container(built.image, name, first.volume, key=first.key)
        again = second.client().responses.retrieve(response.id)
        assert (again.id, again.output_text) == (response.id, response.output_text)
        exit_code, _ = stop(second)
        assert exit_code == 0
    finally:
        podman("rm", "--force", name, check=False)
