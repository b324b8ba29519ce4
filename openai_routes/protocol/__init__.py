"""Pydantic models of the OpenAI wire protocol, one module per endpoint; no I/O."""
