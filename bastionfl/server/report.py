"""Run artifacts: metrics.json (one entry per round) and a PNG of accuracy per round."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["write_metrics", "read_metrics", "plot_accuracy", "METRICS_NAME", "PLOT_NAME"]

METRICS_NAME = "metrics.json"
PLOT_NAME = "accuracy.png"


def write_metrics(out_dir: Path, config: dict[str, Any], rounds: list[dict[str, Any]], status: str) -> Path:
    """Write ``metrics.json`` atomically: the config, the status and the list ``rounds``."""
    path = out_dir / METRICS_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": config, "status": status, "rounds": rounds}, indent=2))
    os.replace(tmp, path)
    return path


def read_metrics(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / METRICS_NAME).read_text())


def plot_accuracy(out_dir: Path, rounds: list[dict[str, Any]], title: str) -> Path:
    """Accuracy (and ASR when present) per round, as a PNG beside the metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(xs, [100 * r["accuracy"] for r in rounds], marker="o", label="clean accuracy")
    if rounds and "asr" in rounds[0]:
        ax.plot(xs, [100 * r["asr"] for r in rounds], marker="s", label="attack success rate")
    ax.set_xlabel("round")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if xs:
        ax.set_xticks(xs if len(xs) <= 20 else xs[:: max(1, len(xs) // 10)])
    fig.tight_layout()
    path = out_dir / PLOT_NAME
    fig.savefig(path)
    plt.close(fig)
    return path
