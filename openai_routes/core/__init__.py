"""The domain: the engine port, the request context, errors, the model registry, limits, ids and metrics.

Imports nothing else of ``openai_routes``; every other layer may import it.
"""
