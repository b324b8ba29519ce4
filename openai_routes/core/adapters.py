"""The port through which the admin routes load and unload LoRA adapters at run time (vLLM's
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter``).

``engines/lora_adapters.py`` implements it on vLLM: an adapter it loads becomes a model in the registry whose
``parent`` is its base. Refusals are ``APIError``s (a 400 for a bad adapter or path, a 404 for an unknown name).
"""

from __future__ import annotations

from typing import Protocol


class AdapterLoader(Protocol):
    async def load(self, name: str, path: str, base: str | None) -> None:
        """Load the adapter at ``path`` (a directory name under the adapters directory, or a BentoML model tag) as
        the model ``name`` on ``base`` (the one base that takes adapters when ``None``)."""
        ...

    async def unload(self, name: str) -> None:
        """Stop serving the adapter ``name`` (a 404 for a name that is no loaded adapter)."""
        ...


class NoAdapters:
    """The loader of a server that loads no adapters at run time (its routes answer 404 before reaching it)."""

    async def load(self, name: str, path: str, base: str | None) -> None:
        raise NotImplementedError

    async def unload(self, name: str) -> None:
        raise NotImplementedError
