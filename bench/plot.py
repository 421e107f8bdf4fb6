"""The benchmarks' figures as a PNG bar chart, for docs/performance.md.

Each bench passes the rows of the table it prints to :func:`rates` when run with ``--plot PATH``
(:func:`add_option`); without it nothing is written. The title carries what a figure is worth only
beside: the date, the machine (its CPU count; these machines are shared with other work) and the
command that made it. matplotlib draws with its Agg backend: no display is needed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plot", type=Path, help="also draw the figures as a PNG bar chart at this path")


def rates(path: Path, bars: Sequence[tuple[str, float, float | None]], *, unit: str = "transfers/s") -> None:
    """One bar per ``(label, rate, ratio to raw)``; the ratio, when given, is written on its bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(bars) + 2), 4.5), layout="constrained")
    labels = [label for label, _, _ in bars]
    values = [rate for _, rate, _ in bars]
    drawn = axes.bar(labels, values, color=["#7f7f7f" if "raw" in label else "#1f77b4" for label in labels])
    axes.bar_label(
        drawn,
        [f"{rate:,.0f}" + ("" if ratio is None else f"\n×{ratio:.2f} raw") for _, rate, ratio in bars],
        fontsize=8,
    )
    axes.set_ylabel(unit)
    axes.margins(y=0.2)
    axes.tick_params(axis="x", labelsize=8)
    shown = sys.argv[1:]
    if "--plot" in shown:  # where the picture goes says nothing of the figures
        del shown[shown.index("--plot") : shown.index("--plot") + 2]
    command = shlex.join([Path(sys.argv[0]).name, *shown])
    axes.set_title(
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d} UTC, {os.cpu_count()} CPUs (shared)\nbench/{command}",
        fontsize=9,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    print(f"plot: {path}", flush=True)
