"""The two pictures of the results: latency against forwards, throughput per path (PNG)."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # only after the backend is chosen

LABELS = {"map": "qubes-portfwd (nft maps)", "linear": "one rule per forward (Docker-style)"}


def latency_plot(scaling: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    counts = scaling["counts"]
    for design, label in LABELS.items():
        cells = [scaling["designs"][design][str(n)]["connect_us"] for n in counts]
        shown = [(n, c) for n, c in zip(counts, cells, strict=True) if c is not None]
        xs = [n for n, _ in shown]
        line = axes.plot(xs, [c["mean"] for _, c in shown], marker="o", label=f"{label}, mean")
        axes.plot(
            xs,
            [c["p99"] for _, c in shown],
            marker="x",
            linestyle="--",
            color=line[0].get_color(),
            label=f"{label}, p99",
        )
    axes.set_xscale("log")
    axes.set_xlabel("forwards installed at the edge")
    axes.set_ylabel("connect() latency through the forward (µs)")
    axes.set_title("New-connection latency against the number of forwards")
    axes.set_ylim(bottom=0)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def throughput_plot(throughput: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4.5))
    paths = list(throughput["gbits_median"])
    medians = [throughput["gbits_median"][p] for p in paths]
    axes.bar(paths, medians, color=["#777777", "#2a7ab0", "#c0504d"][: len(paths)])
    for index, name in enumerate(paths):
        repeats = throughput["gbits"][name]
        axes.scatter([index] * len(repeats), repeats, color="black", s=12, zorder=3)
        axes.annotate(
            f"{medians[index]:.1f}", (index, medians[index]), ha="center", va="bottom", fontsize=9
        )
    axes.set_ylabel("Gbit/s, one TCP stream (median; dots: repeats)")
    axes.set_title("lan -> work: routed vs forwarded vs user-space relays")
    axes.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
