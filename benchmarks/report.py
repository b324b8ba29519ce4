"""The benchmark's outputs: the markdown results file (tables per concurrency, ratios against the peers) and
the PNG plot (throughput and TTFT against concurrency). Pure rendering: no servers, no clients.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from pathlib import Path

from benchmarks.loadgen import Stats

# Server keys in table order, with their labels; "ours" is the one every ratio is taken for.
SERVERS: dict[str, str] = {"ours": "bento-oai (ours)", "vllm": "vLLM OpenAI server", "llama": "llama.cpp server"}
PEERS: dict[str, str] = {"vllm": "vLLM", "llama": "llama.cpp"}

# server key -> concurrency -> stats
Results = Mapping[str, Mapping[int, Stats]]
Metric = Callable[[Stats], float]
THROUGHPUT: Metric = attrgetter("output_tokens_per_s")
REQUEST_RATE: Metric = attrgetter("requests_per_s")
TTFT_P50: Metric = attrgetter("ttft_p50")

COLUMNS = (
    "server",
    "output tok/s",
    "tok/s by round",
    "req/s",
    "TTFT p50 (ms)",
    "TTFT p99 (ms)",
    "ITL p50 (ms)",
    "ITL p99 (ms)",
    "latency p50 (ms)",
    "tokens/req",
    "requests",
    "errors",
    "others' CPU",
)


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f}"


def ratio(ours: Stats | None, peer: Stats | None, metric: Metric) -> str:
    """``metric(ours) / metric(peer)`` as ``1.02×``; ``n/a`` when either is missing, zero or NaN."""
    if ours is None or peer is None:
        return "n/a"
    mine, theirs = metric(ours), metric(peer)
    if math.isnan(mine) or math.isnan(theirs) or theirs == 0:
        return "n/a"
    return f"{mine / theirs:.2f}×"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def stats_row(label: str, stats: Stats | None) -> str:
    if stats is None:
        return _row([label, *(["not run"] + [""] * (len(COLUMNS) - 2))])
    return _row(
        [
            label,
            f"{stats.output_tokens_per_s:.1f}",
            " / ".join(f"{rate:.0f}" for rate in stats.tokens_per_s_by_run),
            f"{stats.requests_per_s:.2f}",
            _ms(stats.ttft_p50),
            _ms(stats.ttft_p99),
            _ms(stats.itl_p50),
            _ms(stats.itl_p99),
            _ms(stats.latency_p50),
            f"{stats.tokens_per_request:.1f}" + ("" if stats.usage_reported else "*"),
            str(stats.requests),
            str(stats.errors),
            f"{stats.others_cpu:.2f}",
        ]
    )


def level_table(by_server: Mapping[str, Stats]) -> list[str]:
    """One concurrency level: a row per server, then ``ours / peer`` rows for throughput and TTFT p50."""
    lines = [_row(COLUMNS), _row(["---"] * len(COLUMNS))]
    lines += [stats_row(label, by_server.get(key)) for key, label in SERVERS.items()]
    ours = by_server.get("ours")
    for key, name in PEERS.items():
        peer = by_server.get(key)
        cells = [f"**ours / {name}**"] + [""] * (len(COLUMNS) - 1)
        cells[1] = ratio(ours, peer, THROUGHPUT)
        cells[3] = ratio(ours, peer, REQUEST_RATE)
        cells[4] = ratio(ours, peer, TTFT_P50)
        lines.append(_row(cells))
    return lines


def summary_table(results: Results, levels: Sequence[int]) -> list[str]:
    """Ratios only: throughput (higher is better for us) and TTFT p50 (lower is better for us)."""
    header = ["concurrency"]
    for name in PEERS.values():
        header += [f"tok/s ours/{name}", f"TTFT p50 ours/{name}"]
    lines = [_row(header), _row(["---"] * len(header))]
    for level in levels:
        ours = results.get("ours", {}).get(level)
        cells = [str(level)]
        for key in PEERS:
            peer = results.get(key, {}).get(level)
            cells += [ratio(ours, peer, THROUGHPUT), ratio(ours, peer, TTFT_P50)]
        lines.append(_row(cells))
    return lines


def render_markdown(
    results: Results,
    levels: Sequence[int],
    overhead: Mapping[str, Stats],
    preamble: Sequence[str],
    notes: Sequence[str] = (),
) -> str:
    """The whole results file: ``preamble`` (title, machine, set-up lines), summary, one table per level."""
    lines = [*preamble, "", "## Summary (ratios ours / peer)", "", *summary_table(results, levels)]
    for level in levels:
        by_server = {key: stats for key in SERVERS if (stats := results.get(key, {}).get(level)) is not None}
        lines += ["", f"## Concurrency {level}", "", *level_table(by_server)]
    if overhead:
        some = next(iter(overhead.values()))
        lines += ["", f"## Tiny requests (max_tokens=1, concurrency {some.concurrency})", ""]
        lines += ["Per-request cost of HTTP, JSON and scheduling: requests/s is the number to read.", ""]
        lines += level_table(overhead)
    lines += [
        "",
        "`*` tokens/req counted from content chunks: the server sent no usage chunk. "
        '"others\' CPU": cores that other processes on this machine used during those runs (of '
        f"{os.cpu_count()}); a row with more than a few tenths is noisy, and its rounds usually disagree.",
    ]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def plot(results: Results, levels: Sequence[int], path: Path, title: str = "") -> None:
    """Throughput and TTFT p50 against concurrency, one line per server (log2 x axis, log y for TTFT)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (tput, ttft) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in SERVERS.items():
        points = [(level, stats) for level in levels if (stats := results.get(key, {}).get(level)) is not None]
        if not points:
            continue
        xs = [level for level, _ in points]
        tput.plot(xs, [stats.output_tokens_per_s for _, stats in points], marker="o", label=label)
        ttft.plot(xs, [stats.ttft_p50 * 1000 for _, stats in points], marker="o", label=label)
    for axis, name, unit in ((tput, "Output throughput", "tokens/s"), (ttft, "Time to first token (p50)", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(levels), [str(level) for level in levels])
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(name)
        axis.grid(True, alpha=0.3)
    ttft.set_yscale("log")
    tput.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
