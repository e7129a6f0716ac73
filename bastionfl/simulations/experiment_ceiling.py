"""``bastionfl experiment text-ceiling``: how good the text model gets on SST-2 when trained centrally, without attack.

BTU's goal is read against two numbers the defense cannot change: the clean accuracy the model reaches at all and
the share of negative dev sentences a clean model calls positive (the ASR floor). This fine-tunes the federation's
starting model (same pretrained weights, head seed, sentence length, training pool) on the pooled training split,
with no clients, no attack and no defense, and measures along the way what the grid measures: CA on dev, the floor,
and the BadNets ASR of that clean model (triggered negatives called positive), i.e. the lowest ASR a defense that
restored a clean model could report.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from bastionfl.config import ConfigError, RunConfig, apply_overrides
from bastionfl.simulations.experiment_tune import GOAL_ASR
from bastionfl.simulations.grid import ExperimentError, fmt_minutes, page_header, pct, publish_results

__all__ = ["run", "CeilingPoint", "ceiling_config", "train_ceiling", "render_ceiling", "plot_ceiling"]

@dataclass(frozen=True)
class CeilingPoint:
    """The model's figures after ``step`` optimiser steps (``epoch`` = step / steps per epoch; ``lr`` = the lr the
    schedule holds after that step)."""

    step: int
    epoch: float
    lr: float
    accuracy: float
    asr: float
    asr_floor: float


def ceiling_config(args: argparse.Namespace) -> RunConfig:
    """The run settings the measurement shares with ``experiment text`` (BadNets for the ASR set, target 1)."""
    if args.epochs < 1 or args.evals_per_epoch < 1 or args.batch_size < 1 or args.train_subset < 0:
        raise ExperimentError("--epochs, --evals-per-epoch and --batch-size must be >= 1, --train-subset >= 0")
    if not 0 < args.lr <= 0.01:
        raise ExperimentError(f"--lr {args.lr}: give an AdamW learning rate in (0, 0.01] (about 1e-4 or 2e-5)")
    values: dict[str, Any] = {
        "dataset": "sst2", "data_dir": str(args.data_dir), "model": args.model, "text_layers": args.layers,
        "max_len": args.max_len, "train_subset": args.train_subset, "attack": "badnets", "poison_rate": 0.1,
        "target_label": 1, "lr": args.lr, "batch_size": args.batch_size, "seed": args.seed,
    }
    try:
        return apply_overrides(RunConfig(), values)
    except ConfigError as exc:
        raise ExperimentError(str(exc)) from None


def train_ceiling(cfg: RunConfig, *, epochs: int, evals_per_epoch: int, decay: bool,
                  progress: Callable[[int, int], None] | None = None) -> tuple[list[CeilingPoint], int]:
    """Train the starting model on the pooled training split; figures before training and ``evals_per_epoch``
    times per epoch. Returns the points and the number of training sentences."""
    from bastionfl.tasks.registry import build_task
    from bastionfl.tasks.text import train_text
    from bastionfl.tasks.text_task import training_pool

    task = build_task(cfg)
    data = task.data  # type: ignore[attr-defined] - the text task
    pool = training_pool(len(data.train_sentences), cfg.task.train_subset, cfg.federation.seed)
    sentences = [data.train_sentences[int(i)] for i in pool]
    labels = [int(data.train_labels[int(i)]) for i in pool]
    model, tokenizer = task.new_model(), task.tokenizer  # type: ignore[attr-defined] - the server's starting model
    per_epoch = -(-len(sentences) // cfg.task.batch_size)
    marks = {min(per_epoch, round(per_epoch * k / evals_per_epoch)) + e * per_epoch
             for e in range(epochs) for k in range(1, evals_per_epoch + 1)}

    def point(step: int, lr: float) -> CeilingPoint:
        m = task.evaluate(model)
        return CeilingPoint(step, step / per_epoch, lr, m["accuracy"], m["asr"], m["asr_floor"])

    points = [point(0, cfg.task.lr)]

    def on_step(step: int, total: int) -> None:
        if progress is not None:
            progress(step, total)
        if step in marks:
            points.append(point(step, cfg.task.lr * (max(0.0, 1 - step / total) if decay else 1.0)))

    train_text(model, tokenizer, sentences, labels, epochs=epochs, lr=cfg.task.lr, batch_size=cfg.task.batch_size,
               max_len=cfg.task.max_len, seed=cfg.federation.seed, decay=decay, on_step=on_step)
    return points, len(sentences)


def render_ceiling(points: Sequence[CeilingPoint], cfg: RunConfig, *, command: str, epochs: int, decay: bool,
                   num_sentences: int, wall_s: float, threads: int, plot_name: str | None) -> str:
    """The results page: settings, one row per evaluation, and the final figures against the 10 % bar."""
    final = points[-1]
    best = max(points[1:], key=lambda p: p.accuracy)
    schedule = f"lr {cfg.task.lr}{' decaying linearly to 0' if decay else ' constant'}"
    model = "MiniLM (all-MiniLM-L6-v2)" if cfg.task.model == "minilm" else cfg.task.model
    layers = f"first {cfg.task.text_layers} layer(s)" if cfg.task.text_layers else "all layers"
    lines = [
        *page_header("Text model ceiling: central fine-tuning without attack", "bastionfl experiment text-ceiling",
                     "bastionfl/simulations/experiment_ceiling.py", command),
        f"* {model}, {layers}, the federation's starting weights and head seed {cfg.federation.seed}; trained centrally on "
        f"{num_sentences:,} SST-2 training sentences (the pool `train_subset = {cfg.task.train_subset}` gives the "
        f"clients), no attack, no defense; {epochs} epoch(s) of AdamW at {schedule}, batch {cfg.task.batch_size}, "
        f"sentences cut to {cfg.task.max_len} tokens.",
        "* CA: SST-2 dev accuracy. Floor: negative dev sentences called positive. ASR: the same sentences with a "
        "BadNets rare word inserted (the grid's ASR set), called positive by this clean model: what a defense that "
        "gave back a clean model would report.",
        f"* Wall time {fmt_minutes(wall_s)} with {threads} torch thread(s).", "",
        "| step | epoch | lr after the step | CA % | ASR % (clean model) | floor % |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {p.step} | {p.epoch:.2f} | {p.lr:.2e} | {pct(p.accuracy)} | {pct(p.asr)} | {pct(p.asr_floor)} |"
              for p in points]
    verdict = "at or under" if final.asr <= GOAL_ASR else "over"
    lines += [
        "",
        f"Final: CA {pct(final.accuracy)} %, floor {pct(final.asr_floor)} %, clean-model BadNets ASR "
        f"{pct(final.asr)} % ({verdict} the goal's 10 %). Best CA along the way: {pct(best.accuracy)} % at epoch "
        f"{best.epoch:.2f} (floor {pct(best.asr_floor)} %, ASR {pct(best.asr)} %).",
    ]
    if plot_name:
        lines += ["", f"![CA, ASR and floor over training]({plot_name})"]
    lines.append("")
    return "\n".join(lines)


def plot_ceiling(points: Sequence[CeilingPoint], path: Path, title: str) -> Path:
    """CA, the clean model's ASR and the floor over epochs, with the goal's 10 % line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.epoch for p in points[1:]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True)
    top.plot(xs, [100 * p.accuracy for p in points[1:]], marker="o", color="tab:blue")
    top.set_ylabel("dev CA %")
    top.set_title(title, fontsize=10)
    bottom.plot(xs, [100 * p.asr for p in points[1:]], marker="o", color="tab:red", label="ASR (clean model)")
    bottom.plot(xs, [100 * p.asr_floor for p in points[1:]], marker="s", color="tab:gray", label="floor")
    bottom.axhline(100 * GOAL_ASR, color="black", linestyle="--", linewidth=1, label="goal: ASR 10 %")
    bottom.set_xlabel("epoch")
    bottom.set_ylabel("negatives called positive %")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the experiment for parsed ``args`` (``argv`` is quoted on the results page): exit 0 on success, 2 on usage or data errors."""
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from bastionfl.tasks.text import DatasetError

    prog = "bastionfl experiment text-ceiling"
    console = Console()
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    used = torch.get_num_threads()
    start = time.perf_counter()
    try:
        cfg = ceiling_config(args)
        with Progress(console=console) as bar:
            task = bar.add_task("training", total=None)
            points, n = train_ceiling(cfg, epochs=args.epochs, evals_per_epoch=args.evals_per_epoch,
                                      decay=args.decay,
                                      progress=lambda step, total: bar.update(task, completed=step, total=total))
    except (ExperimentError, DatasetError, OSError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - start
    plot_name = None
    if args.plot:
        png = args.results.with_suffix(".png")
        plot_ceiling(points, png, f"{cfg.task.model}, lr {cfg.task.lr}{' decaying' if args.decay else ''}, batch "
                                  f"{cfg.task.batch_size}, {n:,} sentences")
        plot_name = png.name
    text = render_ceiling(points, cfg, command=f"{prog} {shlex.join(argv)}", epochs=args.epochs, decay=args.decay,
                          num_sentences=n, wall_s=wall, threads=used, plot_name=plot_name)
    publish_results(console, args.results, text)
    return 0
