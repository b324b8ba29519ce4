"""bento-oai tests: ``unit`` (no engine) and ``e2e`` (real ``bentoml serve``, real vLLM engine)."""
