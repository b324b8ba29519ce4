"""Model engines behind ``openai_routes.core.engine``: the only package that imports vLLM."""
