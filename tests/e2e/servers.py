"""Every server the e2e tests start (``SPECS``, for ``tests.e2e.pool``), and the fixture names that need each.

One server per distinct config, shared by every module that uses it; configs that do not conflict are merged
(``tests/configs/generation-defaults.yaml``: the greedy model copy and the Hermes-template model, auth disabled, a
10-second deadline; the lora server's two lives are also the store's graceful restart). A server a
test ends (SIGTERM, SIGKILL, a killed engine) is used by that test alone, or by tests that run before it
(``ends_server``): the drain test ends the default server (its SIGTERM is the default server's graceful stop), the
grace test the first replica (its config has the 3-second grace), the arbiter's SIGKILL the second replica, the
worker's the built Bento's, the store's first life (a stream cut by the end of the grace) the lora server, and the
store's SIGKILL during writes its second life (``after``), which boots once the first has exited, while other tests
run: the tests that need a second life run last (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import openai
import yaml

from tests.e2e.pool import ServerPool, ServerSpec
from tests.e2e.probes import wait_for
from tests.e2e.server import BENTOML, ROOT, Server

CHAT_MODEL = "smollm2-135m-instruct"
GREEDY = {"do_sample": True, "temperature": 1.0, "top_k": 1}
SHORT_GRACE = "tests/configs/short-grace.yaml"
DEFAULT_CONFIG = "configs/default.yaml"

# The names of the image-fetch server's own /etc/hosts (test_image_fetch.py). PUBLIC_ADDRESS (scanme.nmap.org's) is
# added to this machine's loopback interface while those tests run, so that their HTTP server has a public address.
PUBLIC_ADDRESS = "45.33.32.156"
ALLOWED_HOST = "images.example.com"  # in the config's allowed_domains
OTHER_HOST = "images.example.net"  # public too, not in allowed_domains
LOOPBACK_HOST = "loopback.example.com"  # allowed, but its DNS answer is loopback
MIXED_HOST = "mixed.example.com"  # allowed, resolves to the public address and to loopback
IMAGE_HOSTS = (
    f"{PUBLIC_ADDRESS} {ALLOWED_HOST} {OTHER_HOST} {MIXED_HOST}",
    f"127.0.0.1 {LOOPBACK_HOST} {MIXED_HOST}",
)


def greedy_copy(target: Path) -> Path:
    """The store's chat model with a greedy ``generation_config.json`` (weights linked, not copied)."""
    import bentoml

    source = Path(bentoml.models.get(CHAT_MODEL).path)
    target.mkdir()
    for file in source.iterdir():
        if file.name != "generation_config.json":
            (target / file.name).symlink_to(file)
    generation = json.loads((source / "generation_config.json").read_text())
    (target / "generation_config.json").write_text(json.dumps({**generation, **GREEDY}, indent=2))
    return target


def greedy_config(_pool: ServerPool, server: Server) -> None:
    """``tests/configs/generation-defaults.yaml`` serving the greedy copy from its path."""
    directory = server.log_path.parent
    config = yaml.safe_load((ROOT / "tests" / "configs" / "generation-defaults.yaml").read_text())
    config["models"][0]["source"] = {"path": str(greedy_copy(directory / "model"))}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    server.config = str(path)


ADMIN_KEY = "sk-admin-lora-tests"
KILLED_BATCH_LINES = 96  # the batch the worker test leaves running (test_orphans.start_batch)


def lora_config(pool: ServerPool, server: Server) -> None:
    """``tests/configs/lora.yaml`` with the adapters PEFT makes in the server's directory: ``static`` (the config's),
    ``runtime`` (the same weights, for loading at run time), ``other`` (other weights: the restart test's),
    ``rank16`` (over the config's max_lora_rank 8) and ``escape`` (a symlink out of the adapters directory). PEFT's
    reference answers are computed meanwhile, while the server boots (``peft_reference``)."""
    import bentoml

    from tests.lora_adapter import make_adapter

    directory = server.log_path.parent
    adapters = directory / "adapters"
    base = Path(bentoml.models.get(CHAT_MODEL).path)
    static = make_adapter(base, adapters / "static")
    make_adapter(base, adapters / "other", seed=1)
    make_adapter(base, adapters / "rank16", rank=16)
    (adapters / "runtime").symlink_to(static)
    (adapters / "escape").symlink_to(base)
    peft_reference(pool)
    config = yaml.safe_load((ROOT / "tests" / "configs" / "lora.yaml").read_text())
    config["models"][0]["adapters"][0]["source"] = {"path": str(static)}
    config["adapters_dir"] = str(adapters)
    config["store"] = {"data_dir": str(directory)}
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    server.config = str(path)


def peft_reference(pool: ServerPool) -> Future[dict[str, list[int]]]:
    """transformers + PEFT's greedy tokens with the lora server's ``static`` adapter and without (``reference.json``
    in its directory), computed once, in a thread started with the server's boot: they take ~8 s of CPU, mostly on
    the core the boot's imports leave idle."""

    def start() -> Future[dict[str, list[int]]]:
        import bentoml

        from tests.lora_adapter import reference

        directory = pool.directory / "lora"
        base = Path(bentoml.models.get(CHAT_MODEL).path)
        answers: Future[dict[str, list[int]]] = Future()

        def run() -> None:
            try:
                answers.set_result(reference(base, directory / "adapters" / "static", directory / "reference.json"))
            except BaseException as exc:
                answers.set_exception(exc)

        threading.Thread(target=run, name="peft-reference", daemon=True).start()
        return answers

    answers: Future[dict[str, list[int]]] = pool.resource("peft-reference", start, lambda answers: answers.exception())
    return answers


def lora_restart(pool: ServerPool, server: Server) -> None:
    """The lora server's second life (its restart): the same config, so the same data dir and run-time adapters."""
    server.config = pool.started["lora"].server.config


def lora_env(pool: ServerPool, directory: Path) -> dict[str, str]:
    """Both lives of the lora server: the admin key, and one SQLite store (the graceful restart's, see
    ``sqlite_store``)."""
    return {"BENTO_OAI_ADMIN_KEYS": ADMIN_KEY, **sqlite_store(pool, directory)}


def bentoml_cli(*args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([str(BENTOML), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"bentoml {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def bento_tag(pool: ServerPool) -> str:
    """``make build`` without the Makefile (the models are in the store already), once; deleted with the pool so
    that the store does not grow."""

    def build() -> str:
        output = bentoml_cli("build", "--arg", f"config={DEFAULT_CONFIG}", "--output", "tag")
        tags = [line.removeprefix("__tag__:") for line in output.splitlines() if line.startswith("__tag__:")]
        assert len(tags) == 1, output
        return tags[0]

    tag: str = pool.resource("bento", build, lambda tag: bentoml_cli("delete", "--yes", tag))
    return tag


def built_bento(pool: ServerPool, server: Server) -> None:
    """The built Bento served from an empty directory, with a config the Bento does not hold: the frozen build-time
    config must win."""
    server.target = bento_tag(pool)
    server.cwd = server.log_path.parent / "empty"
    server.cwd.mkdir()
    server.config = "configs/not-in-the-bento.yaml"


def sqlite_store(pool: ServerPool, _directory: Path) -> dict[str, str]:
    """One SQLite file for the graceful restart's two lives (the first writes it, the second reads it once the first
    has stopped)."""
    return {"BENTO_OAI_STORE_URL": f"sqlite+aiosqlite:///{sqlite_dir(pool) / 'responses.db'}"}


def sqlite_dir(pool: ServerPool) -> Path:
    directory = pool.directory / "sqlite-store"
    directory.mkdir(exist_ok=True)
    return directory


def postgres_store(pool: ServerPool, _directory: Path) -> dict[str, str]:
    """One real PostgreSQL (pgserver) for the two replicas, started with the first of them."""

    def create() -> Any:
        from pgserver.postgres_server import get_server

        return get_server(str(pool.directory / "pgdata"), cleanup_mode="stop")

    postgres = pool.resource("postgres", create, lambda server: server.cleanup())
    return {"BENTO_OAI_STORE_URL": str(postgres.get_uri())}


def serves_again(server: Server) -> None:
    """The orphan test killed this server's worker: circus must start a new one, with new engines, that serves
    (the old worker is gone, so a ready answer comes from the new one); checked before the pool stops it, while the
    next tests run. The batch the killed worker was running is finished by the new one (its claims lapse after a
    lease): every line answered, each once."""
    wait_for(server.is_ready, 600, "a new worker ready after the SIGKILL of the old one", 2)
    batch_id = server.notes.get("batch")
    if batch_id is None:
        return
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key)
    wait_for(lambda: client.batches.retrieve(batch_id).status == "completed", 300, "the killed batch to complete", 1)
    done = client.batches.retrieve(batch_id)
    assert done.output_file_id is not None and done.error_file_id is None, done
    output = [json.loads(line)["custom_id"] for line in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(output) == sorted(f"k{i}" for i in range(KILLED_BATCH_LINES)), output


SPECS = [
    ServerSpec("default", ("server", "drain_server"), check_watchdog=True),
    ServerSpec("limited", ("limited",), config="tests/configs/limited.yaml"),
    ServerSpec(
        "vision",
        ("vision", "vision_server"),
        config="tests/configs/vision.yaml",  # make test-stress only, for now
    ),
    ServerSpec("image-fetch", ("image_fetch",), config="tests/configs/image-fetch.yaml", hosts=IMAGE_HOSTS),
    ServerSpec(
        "generation-defaults",
        ("greedy_server", "open_server", "deadline_server", "engine_queue", "hermes"),
        build=greedy_config,
    ),
    ServerSpec("replica-one", ("replicas", "grace_server"), config=SHORT_GRACE, env=postgres_store, key_group="store"),
    ServerSpec(
        "replica-two", ("replicas", "arbiter_victim"), config=SHORT_GRACE, env=postgres_store, key_group="store"
    ),
    ServerSpec("bento", ("bento_server", "worker_victim"), build=built_bento, settle=serves_again),
    ServerSpec("lora", ("lora_server", "first_life"), build=lora_config, env=lora_env, key_group="store"),
    ServerSpec(
        "lora-again", ("lora_again", "second_life"), build=lora_restart, env=lora_env, key_group="store", after="lora"
    ),
]
