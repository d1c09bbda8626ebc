"""Optional PNG of the latency distributions (needs matplotlib; the load tester works without it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loadtest.report import TurnRecord


def plot_latencies(records: Sequence[TurnRecord], path: str | Path) -> str | None:
    """Write a 2×2 figure of CDFs to ``path``; returns why not (a message) when it cannot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib); no plot written"
    done = [r for r in records if r.completed]
    panels = [
        (
            "time to first token (ms)",
            [r.ttft_client_ms for r in done if r.ttft_client_ms is not None],
            [r.ttft_server_ms for r in done if r.ttft_server_ms is not None],
        ),
        (
            "gap between token frames (ms)",
            [g for r in done for g in r.gaps_client_ms],
            [g for r in done for g in r.gaps_server_ms],
        ),
        ("turn, end to end (ms)", [r.turn_ms for r in done if r.turn_ms is not None], []),
        ("tokens/s per stream", [v for r in done if (v := r.stream_tokens_per_s) is not None], []),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (title, client, server) in zip(axes.flat, panels, strict=True):
        for label, values in (("client", client), ("server stats", server)):
            if values:
                xs = sorted(values)
                ys = [(i + 1) / len(xs) for i in range(len(xs))]
                ax.plot(xs, ys, label=f"{label} (n={len(xs)})")
        ax.set_title(title)
        ax.set_ylabel("fraction ≤ x")
        ax.grid(True, alpha=0.3)
        if client or server:
            ax.legend(loc="lower right")
    fig.suptitle("rtserver-load latency distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
