"""Service configuration: every shipped config loads, and broken configs are refused with a reason."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from settings import DEFAULT_CONFIG, ROOT, ServiceConfig, StoreConfig, load_config

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "models": [
        {"id": "chat", "aliases": ["c"], "source": {"bentoml": "chat-model"}},
        {"id": "embed", "task": "embed", "source": {"huggingface": "org/embed"}},
    ]
}


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def with_changes(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(MINIMAL)
    config.update(changes)
    return config


def test_there_are_configs() -> None:
    assert ROOT / DEFAULT_CONFIG in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=[path.name for path in CONFIGS])
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.models
    names = [name for model in config.models for name in (model.id, *model.aliases)]
    assert len(names) == len(set(names))


def test_relative_paths_are_resolved_from_the_project_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config(DEFAULT_CONFIG) == load_config(ROOT / DEFAULT_CONFIG) == load_config()


def test_default_config_serves_a_chat_and_an_embedding_model() -> None:
    config = load_config()
    assert {model.task for model in config.models} == {"chat", "embed"}
    assert {model.runner for model in config.models} == {"generate", "pooling"}
    assert config.auth.mode == "keys"


def test_minimal_config_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert isinstance(config, ServiceConfig)
    assert (config.platform, config.auth.mode, config.auth.keys_file) == ("cpu", "keys", None)
    assert config.limits.max_n == 8 and config.limits.max_tokens is None
    chat, embed = config.models
    assert (chat.task, chat.runner, chat.owned_by, chat.source.revision) == ("chat", "generate", "bento-oai", "main")
    assert (embed.runner, embed.source.huggingface) == ("pooling", "org/embed")


def test_traffic_defaults_to_bentomls_timeout_only(tmp_path: Path) -> None:
    """No concurrency unless a config sets one: BentoCloud then scales on CPU use, as BentoML's default does."""
    assert load_config(write(tmp_path, MINIMAL)).traffic.service_option() == {"timeout": 3600}


def test_traffic_passes_what_is_set(tmp_path: Path) -> None:
    config = with_changes(traffic={"concurrency": 128, "external_queue": True, "timeout": 900})
    option = load_config(write(tmp_path, config)).traffic.service_option()
    assert option == {"concurrency": 128, "external_queue": True, "timeout": 900}


def model(**fields: Any) -> dict[str, Any]:
    return {"id": "m", "source": {"path": "/models/m"}, **fields}


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (with_changes(models=[model(), model()]), "used twice: m"),
        (with_changes(models=[model(id="a", aliases=["b"]), model(id="b")]), "used twice: b"),
        (with_changes(models=[model(aliases=["m"])]), "used twice: m"),
        (with_changes(models=[model(aliases=["x", "x"])]), "used twice: x"),
        (with_changes(models=[model(source={"bentoml": "a", "huggingface": "org/a"})]), "exactly one"),
        (with_changes(models=[model(source={"path": "/p", "bentoml": "a"})]), "exactly one"),
        (with_changes(models=[model(source={})]), "exactly one"),
        (with_changes(models=[model(source={"revision": "v1"})]), "exactly one"),
        (with_changes(models=[model(source={"s3": "bucket/m"})]), "s3"),
        (with_changes(models=[model(tasks="chat")]), "tasks"),
        (with_changes(models=[model(task="rerank")]), "task"),
        (with_changes(models=[model(id="")]), "id"),
        (with_changes(models=[]), "models"),
        (with_changes(modles=[]), "modles"),
        (with_changes(auth={"mode": "open"}), "mode"),
        (with_changes(auth={"keys": ["sk-committed"]}), "keys"),
        (with_changes(limits={"max_n": 0}), "max_n"),
        (with_changes(limits={"max_token": 100}), "max_token"),  # a typo must not silently lift the cap
        (with_changes(platform="tpu"), "platform"),
        (with_changes(traffic={"concurrency": 0}), "concurrency"),
        (with_changes(traffic={"concurency": 16}), "concurency"),
        (with_changes(traffic={"external_queue": True}), "'external_queue' needs 'concurrency'"),
        (with_changes(traffic={"timeout": 600}), "must exceed 'limits.request_timeout'"),
        (with_changes(traffic={"timeout": 30}, limits={"request_timeout": 60}), "must exceed"),
        (with_changes(traffic={"concurrency": 129}), "at most 'limits.max_in_flight' times"),  # 2 models x 64
        (with_changes(traffic={"concurrency": 9}, limits={"max_in_flight": 4}), "at most"),
        (with_changes(store={"ttl": 0}), "ttl"),
        (with_changes(store={"purge_every": -1}), "purge_every"),
        (with_changes(store={"max_response_bytes": 0}), "max_response_bytes"),
        (with_changes(store={"url": "postgresql://u:secret@db/x"}), "url"),  # the password never lives in YAML
    ],
)
def test_invalid_configs_are_refused(tmp_path: Path, config: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_config(write(tmp_path, config))
    assert reason in str(info.value)


def test_an_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ValidationError):
        load_config(path)


def test_store_defaults(tmp_path: Path) -> None:
    store = load_config(write(tmp_path, MINIMAL)).store
    assert (store.ttl, store.purge_every, store.max_response_bytes, store.data_dir) == (2592000, 3600, 4194304, ".data")


def test_store_settings_load(tmp_path: Path) -> None:
    config = with_changes(store={"ttl": 60, "purge_every": 0.5, "max_response_bytes": 1024, "data_dir": "/var/x"})
    store = load_config(write(tmp_path, config)).store
    assert store == StoreConfig(ttl=60, purge_every=0.5, max_response_bytes=1024, data_dir="/var/x")


def test_the_store_url_is_the_environments_or_a_sqlite_file() -> None:
    """The URL (a secret: PostgreSQL's password) comes from the environment only; else SQLite under ``data_dir``,
    relative to the project root unless absolute."""
    url = "postgresql://bento:secret@db.internal:5432/responses"
    assert StoreConfig().database_url({"BENTO_OAI_STORE_URL": url}) == url
    assert StoreConfig().database_url({}) == f"sqlite+aiosqlite:///{ROOT}/.data/responses.db"
    assert StoreConfig().database_url({"BENTO_OAI_STORE_URL": ""}) == f"sqlite+aiosqlite:///{ROOT}/.data/responses.db"
    assert StoreConfig(data_dir="/srv/data").database_url({}) == "sqlite+aiosqlite:////srv/data/responses.db"
    assert StoreConfig(data_dir="not-yet").database_url({}).endswith("/not-yet/responses.db")
    assert not (ROOT / "not-yet").exists()  # the store creates the directory when it opens, not the config


def test_the_engine_environment_is_exported_under_what_is_already_set(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(DEFAULT_CONFIG).model_copy(
        update={"env": {"BENTO_OAI_T1": "config", "BENTO_OAI_T2": "config"}}
    )
    monkeypatch.delenv("BENTO_OAI_T1", raising=False)
    monkeypatch.setenv("BENTO_OAI_T2", "operator")
    for lever in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):  # undone after the test
        monkeypatch.setenv(lever, "placeholder")
        monkeypatch.delenv(lever)
    config.export_env()
    assert (os.environ["BENTO_OAI_T1"], os.environ["BENTO_OAI_T2"]) == ("config", "operator")
    monkeypatch.delenv("BENTO_OAI_T1")
