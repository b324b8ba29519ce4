"""The OpenAI-compatible ASGI app (protocol, routers, auth, errors, streaming); never imports vLLM."""
