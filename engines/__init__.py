"""Model engines behind ``openai_routes.engine``: the only package that imports vLLM."""
