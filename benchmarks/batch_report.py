"""The Batch API benchmark's figures (``benchmarks.batches``) and their markdown: per setting and round, the
batch's tokens/s over offline vLLM's in the same round, and TTFT p50 under a batch over idle."""

from __future__ import annotations

import argparse
import datetime
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.loadgen import percentile

THROUGHPUT_GOAL = 0.8  # batch tok/s at least this share of offline vLLM's
TTFT_GOAL = 1.5  # interactive TTFT p50 under a batch at most this many times the idle one


@dataclass
class Measured:
    """One setting (or offline) in one round."""

    tokens: int
    seconds: float
    others_cpu: float
    idle_ttft: list[float] = field(default_factory=list)
    loaded_ttft: list[float] = field(default_factory=list)
    full_throughout: bool = True  # the second batch ran all its lines_in_flight through every interactive request

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Figures:
    """Every round's measure, by ``"offline"`` or a setting's name, in the order they ran."""

    settings: list[str]
    prompt_tokens: list[int]
    dtype: str = "?"
    rounds: dict[str, list[Measured]] = field(default_factory=dict)

    def add(self, name: str, measured: Measured) -> None:
        self.rounds.setdefault(name, []).append(measured)
        self._last = name

    def last_line(self) -> str:
        measured = self.rounds[self._last][-1]
        line = f"{self._last}: {measured.tokens_per_s:.1f} tok/s ({measured.seconds:.1f} s)"
        if measured.idle_ttft:
            line += f", TTFT p50 idle {ttft_p50(measured.idle_ttft):.0f} ms, under the batch "
            line += f"{ttft_p50(measured.loaded_ttft):.0f} ms"
        return line + f", others' CPU {measured.others_cpu:.2f}"

    def throughput_ratios(self, setting: str) -> list[float]:
        """Per round: the setting's tok/s over offline's in the same round."""
        offline = self.rounds["offline"]
        return [
            mine.tokens_per_s / base.tokens_per_s for mine, base in zip(self.rounds[setting], offline, strict=False)
        ]

    def ttft_ratios(self, setting: str) -> list[float]:
        """Per round: TTFT p50 under the batch over idle."""
        return [ttft_p50(r.loaded_ttft) / ttft_p50(r.idle_ttft) for r in self.rounds[setting]]


def ttft_p50(samples: Sequence[float]) -> float:
    """In milliseconds."""
    return percentile(samples, 50) * 1000


def _list(values: Sequence[float], digits: int = 2) -> str:
    return ", ".join(f"{value:.{digits}f}" for value in values)


def table(figures: Figures) -> list[str]:
    offline = figures.rounds.get("offline", [])
    lines = [
        "| run | tok/s (median; rounds) | batch / offline (median; rounds) | TTFT p50 idle, ms | TTFT p50 under the "
        "batch, ms | under / idle (median; rounds) | TTFT p90 under / idle | batch full throughout | others' CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| offline `LLM.generate` | {statistics.median(r.tokens_per_s for r in offline):.1f}; "
        f"{_list([r.tokens_per_s for r in offline], 1)} | | | | | | | {_list([r.others_cpu for r in offline])} |",
    ]
    for name in figures.settings:
        rounds = figures.rounds[name]
        rates, speed, slowdown = (
            [r.tokens_per_s for r in rounds],
            figures.throughput_ratios(name),
            figures.ttft_ratios(name),
        )
        idle = [t for r in rounds for t in r.idle_ttft]
        loaded = [t for r in rounds for t in r.loaded_ttft]
        p90 = percentile(loaded, 90) / percentile(idle, 90)
        lines.append(
            f"| batches: {name} | {statistics.median(rates):.1f}; {_list(rates, 1)} "
            f"| **{statistics.median(speed):.2f}×**; {_list(speed)} | {ttft_p50(idle):.0f} | {ttft_p50(loaded):.0f} "
            f"| **{statistics.median(slowdown):.2f}×**; {_list(slowdown)} | {p90:.2f}× "
            f"| {'yes' if all(r.full_throughout for r in rounds) else 'no'} | {_list([r.others_cpu for r in rounds])} |"
        )
    return lines


def verdicts(figures: Figures) -> list[str]:
    lines = []
    for name in figures.settings:
        speed = statistics.median(figures.throughput_ratios(name))
        slowdown = statistics.median(figures.ttft_ratios(name))
        met = [
            f"throughput {speed:.2f}× ({'meets' if speed >= THROUGHPUT_GOAL else 'misses'} >= {THROUGHPUT_GOAL})",
            f"TTFT {slowdown:.2f}× ({'meets' if slowdown <= TTFT_GOAL else 'misses'} <= {TTFT_GOAL})",
        ]
        lines.append(f"- {name}: {'; '.join(met)}.")
    return lines


def render(figures: Figures, machine_lines: Sequence[str], args: argparse.Namespace, minutes: float) -> str:
    from benchmarks.batches import LINES, MAX_TOKENS, TTFT_MAX_TOKENS, TTFT_REQUESTS

    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    setup = [
        f"- A batch: {LINES} `/v1/chat/completions` lines, the 8 `loadgen` prompts in turn "
        f"({_list(figures.prompt_tokens, 0)} prompt tokens with the chat template), `max_tokens: {MAX_TOKENS}`, "
        f"`ignore_eos`, temperature 0; `files.create` + `batches.create` with the official `openai` SDK, polled to "
        "`completed`; timed from `create` to the poll that saw `completed`, every line checked to hold "
        f"{MAX_TOKENS} tokens.",
        f"- Ours: `bentoml serve service:BentoOAI` on `{args.config}` reduced to its chat model, with `batches:` "
        "set as in the table and a store of its own, started afresh for each setting and round; a warm-up of 8 "
        "chat requests and a batch of 8 lines first.",
        "- Offline: vLLM's `LLM.generate` of the same token ids (the service's `/tokenize` renders each prompt to "
        f"them), same engine arguments, dtype `{figures.dtype}` (the `dtype: auto` decision), engine environment "
        "and CPU levers, in a process of its own; a warm-up of 8 prompts first.",
        f"- Interactive: {TTFT_REQUESTS} streamed chat requests one after another (`max_tokens: {TTFT_MAX_TOKENS}`), "
        "on the idle service and while a second batch of the same lines runs (cancelled after them; 'batch full "
        "throughout': it still had `lines_in_flight` lines left when they ended). TTFT: to the first content chunk.",
        f"- {args.rounds} round(s), one engine at a time, in an order alternating from round to round (offline, then "
        "each setting; then reversed); ratios per round, then their median.",
    ]
    return "\n".join(
        [
            "# Batch API benchmark: a batch against offline vLLM, and interactive latency under it",
            "",
            f"Written by `python -m benchmarks.batches` (`make bench`) on {when}, in {minutes:.0f} min.",
            "",
            "## Machine",
            "",
            *machine_lines,
            "",
            "## Set-up",
            "",
            *setup,
            "",
            "## Results",
            "",
            *table(figures),
            "",
            f"Goals: batch >= {THROUGHPUT_GOAL}× offline, TTFT p50 under a batch <= {TTFT_GOAL}× idle.",
            "",
            *verdicts(figures),
            "",
        ]
    )
