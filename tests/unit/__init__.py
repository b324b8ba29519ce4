"""Unit tests of the route logic with fake engines (no vLLM, no server)."""
