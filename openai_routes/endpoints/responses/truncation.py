"""``truncation: "auto"``: a prompt too long for the context loses its oldest input items until it fits.

Only whole items go, oldest first, from the chain's history and the input alike; the instructions (the system
message) and the newest user message stay, and a cut never leaves a function call's output without its call. The
prompt is rendered once when it fits; otherwise a binary search over how many leading items to drop renders it about
log2(items) more times. ``truncation: "disabled"`` (the default) keeps the 400 ``context_length_exceeded``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from openai_routes.core.errors import APIError
from openai_routes.protocol.items import FunctionCallOutputItem, InputItem, MessageItem

T = TypeVar("T")


def cut_points(items: Sequence[InputItem]) -> list[int]:
    """How many leading items may be dropped: up to the newest user message (kept), never leaving an orphan
    function call output first. 0 (nothing dropped) is always first."""
    users = [i for i, item in enumerate(items) if isinstance(item, MessageItem) and item.role == "user"]
    last = users[-1] if users else len(items) - 1
    return [0, *(k for k in range(1, last + 1) if not isinstance(items[k], FunctionCallOutputItem))]


def too_long(exc: APIError) -> bool:
    return exc.code == "context_length_exceeded"


async def fitted(prepare: Callable[[int], Awaitable[T]], items: Sequence[InputItem], auto: bool) -> T:
    """``prepare(dropped)`` for the fewest dropped leading items that fit the context (none when ``auto`` is off)."""
    try:
        return await prepare(0)
    except APIError as exc:
        if not auto or not too_long(exc):
            raise
    cuts = cut_points(items)
    best = await prepare(cuts[-1])  # the most that may go; still too long: its error stands
    low, high = 1, len(cuts) - 1  # cuts[high] fits, cuts[low - 1] does not
    while low < high:
        middle = (low + high) // 2
        try:
            attempt = await prepare(cuts[middle])
        except APIError as exc:
            if not too_long(exc):
                raise
            low = middle + 1
        else:
            best, high = attempt, middle
    return best
