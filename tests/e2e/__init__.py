"""End-to-end tests: a real ``bentoml serve`` driven by the official ``openai`` SDK and raw HTTP."""
