"""The server with small limits (``tests/configs/limited.yaml``) that the backpressure, hostile-input and
engine-death tests share (fixtures ``limited`` and ``limited_http``, in conftest): its figures and the request
bodies sized for them.
"""

from __future__ import annotations

from typing import Any

import openai

from tests.e2e.server import Server
from tests.e2e.servers import CHAT_MODEL

MAX_BODY = 65536
MAX_TOKENS = 128  # the config's cap: an admitted request generates for seconds, so saturation outlasts the probes
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def sdk(server: Server, timeout: float = 120) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=server.api_key, max_retries=0, timeout=timeout)


def long_body() -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "ignore_eos": True}


def long_sdk_call() -> dict[str, Any]:
    """``long_body`` as SDK arguments (it refuses unknown keywords: vLLM's ``ignore_eos`` goes in ``extra_body``)."""
    return {"model": CHAT_MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "extra_body": {"ignore_eos": True}}


def short_body(**fields: Any) -> dict[str, Any]:
    return {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, **fields}
