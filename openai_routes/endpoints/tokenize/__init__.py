"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's, at the server's root)."""
