"""``bastionfl experiment text-tune``: BTU's clean tune on finished text runs, over several tune seeds, paired.

The server clean tune (``repair = finetune``, ``repair_last_rounds = 1``) is one AdamW epoch on held-out sentences
applied to the final aggregate. Run on the final checkpoint of an untuned run with the server's own seed, it gives
exactly the model a ``--clean-tune`` federation ends with; other seeds show how much that single epoch moves clean
accuracy and the ASR floor. Each seed tunes every run (the first one is the no-attack reference), so the CA loss is
paired: reference and defended run tuned with the same seed and the same clean sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bastionfl.config import ConfigError, RunConfig, apply_overrides, from_saved
from bastionfl.simulations.grid import ExperimentError, fmt_minutes, page_header, pct, publish_results

__all__ = ["run", "RunTunes", "tune_seeds", "load_run", "tune_runs", "render_tunes"]

GOAL_ASR = 0.10
GOAL_CA_LOSS = 0.02
# fields that may differ between the runs compared (what makes the rows different, and bookkeeping)
_ROW_FIELDS = ("attack", "client_defense", "poisoned_clients_defend", "poisoned_clients", "btu_cut_to", "btu_hold", "btu_purity",
               "btu_ranking",
               "out_dir", "client_state_dir", "data_dir", "verbose", "threads_per_client")


@dataclass
class RunTunes:
    """One run: its final figures untuned, and per tune seed (CA, ASR, floor)."""

    name: str
    cfg: RunConfig
    before: dict[str, float]
    after: list[dict[str, float]] = field(default_factory=list)


def tune_seeds(cfg: RunConfig, count: int) -> list[int]:
    """The server's own seed for the final round's repair first (``seed * 1_000_003 + rounds``), then the next ones."""
    first = cfg.federation.seed * 1_000_003 + cfg.federation.rounds
    return [first + i for i in range(count)]


def load_run(run_dir: Path) -> tuple[RunConfig, dict[str, Any]]:
    """A finished, untuned text run's configuration and final global model; ExperimentError otherwise."""
    from bastionfl.server.checkpoint import CheckpointError, load_checkpoint

    try:
        data = json.loads((Path(run_dir) / "metrics.json").read_text())
        stored = data["config"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{run_dir}: cannot read a run's metrics.json ({type(exc).__name__})") from None
    try:
        cfg = from_saved(stored)
    except ConfigError as exc:
        raise ExperimentError(f"{run_dir}: stored configuration is not valid ({exc})") from None
    if data.get("status") != "completed" or len(data.get("rounds", [])) != cfg.federation.rounds:
        raise ExperimentError(f"{run_dir}: the run did not complete its {cfg.federation.rounds} rounds")
    if cfg.task.dataset not in ("sst2", "hsol"):
        raise ExperimentError(f"{run_dir}: not a text run (dataset {cfg.task.dataset})")
    if cfg.defense.repair != "none":
        raise ExperimentError(f"{run_dir}: the run already repaired its model ({cfg.defense.repair}); give an untuned run")
    try:
        ck = load_checkpoint(Path(run_dir), restore_rng=False)
    except CheckpointError as exc:
        raise ExperimentError(str(exc)) from None
    if int(ck["round"]) != cfg.federation.rounds:
        raise ExperimentError(f"{run_dir}: checkpoint is from round {ck['round']}, not the final round {cfg.federation.rounds}")
    return cfg, ck["model"]


def _check_same_setup(runs: Sequence[tuple[str, RunConfig]]) -> None:
    ref_name, ref = runs[0]
    if ref.attack.kind != "none":
        raise ExperimentError(f"{ref_name}: the first run is the reference and must have no attack "
                              f"(it has {ref.attack.kind})")
    want = ref.flat()
    for name, cfg in runs[1:]:
        differs = [k for k, v in cfg.flat().items() if k not in _ROW_FIELDS and want.get(k) != v]
        if differs:
            raise ExperimentError(f"{name}: not the reference's setup (differs in {', '.join(differs)})")
    attacks = {cfg.attack.kind for _, cfg in runs[1:]}
    if len(attacks) > 1:
        raise ExperimentError(f"the attacked runs use different attacks ({', '.join(sorted(attacks))}); compare one "
                              "attack at a time")


def tune_runs(run_dirs: Sequence[Path], clean_set_size: int, seeds: int, progress: Any = None, *, lr: float = 0.0,
              batch_size: int = 0, decay: bool = False) -> list[RunTunes]:
    """Tune every run's final model with each seed (the server's repair code) and measure CA, ASR and floor.

    ``lr`` / ``batch_size``: the tune's (``repair_lr`` / ``repair_batch_size``; 0: the runs' own lr and batch size);
    ``decay``: linear lr decay to 0 (``repair_lr_decay``).
    """
    from bastionfl.config import Repair, TaskKind
    from bastionfl.server.repair import REPAIRS
    from bastionfl.tasks.registry import build_task

    loaded = [(str(d), *load_run(d)) for d in run_dirs]
    _check_same_setup([(n, c) for n, c, _ in loaded])
    attack = next((c.attack.kind for _, c, _ in loaded[1:]), "none")
    out: list[RunTunes] = []
    task = None
    repair = REPAIRS[(TaskKind.TEXT, Repair.FINETUNE)]
    for name, cfg, state in loaded:
        # evaluated with the attacked runs' trigger set (the reference too: its ASR is the clean model's)
        cfg = apply_overrides(cfg, {"attack": attack, "repair": "finetune", "clean_set_size": clean_set_size,
                                    "repair_last_rounds": 1, "client_defense": "none", "poisoned_clients": 0,
                                    "repair_lr": lr, "repair_batch_size": batch_size,
                                    "repair_lr_decay": decay})
        if task is None:
            task = build_task(cfg)  # same model, data, clean set and trigger set for every run (checked above)
            clean = task.clean_set()
        model = task.new_model()
        model.load_state_dict(state)
        row = RunTunes("/".join(Path(name).parts[-2:]), cfg, task.evaluate(model))
        for seed in tune_seeds(cfg, seeds):
            tuned, _, _ = repair(task, model, clean, seed, None)
            row.after.append({**task.evaluate(tuned), "seed": float(seed)})
            if progress is not None:
                progress()
        out.append(row)
    return out


def _tune_flags(cfg: RunConfig) -> str:
    """The ``experiment text`` options that give a federation this tune's lr and batch size."""
    return ((f" --clean-tune-lr {cfg.defense.repair_lr}" if cfg.defense.repair_lr else "")
            + (f" --clean-tune-batch {cfg.defense.repair_batch_size}" if cfg.defense.repair_batch_size else "")
            + (" --clean-tune-decay" if cfg.defense.repair_lr_decay else ""))


def _mean_sd(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def render_tunes(rows: Sequence[RunTunes], *, command: str, clean_set_size: int, wall_s: float) -> str:
    """Markdown: the untuned and tuned figures per run (mean ± sd over seeds), and each seed's paired figures."""
    from bastionfl.server.repair import clean_tune_schedule

    ref = rows[0]
    cfg = ref.cfg
    n = len(ref.after)
    seeds = ", ".join(str(int(a["seed"])) for a in ref.after)
    lines = [
        *page_header("BTU's clean tune on finished text runs (paired over tune seeds)",
                     "bastionfl experiment text-tune", "bastionfl/simulations/experiment_tune.py", command),
        f"* Each run's final global model (an untuned `bastionfl experiment text` row) is tuned by the server's "
        f"clean-tune code: one AdamW epoch at {clean_tune_schedule(cfg)[2]}, on {clean_set_size:,} sentences of the "
        f"SST-2 test split. Tune seeds {seeds}; the first is the seed a "
        f"`--clean-tune {clean_set_size}{_tune_flags(cfg)}` federation uses, so that column is exactly its result.",
        "* CA loss is paired: the reference tuned with the same seed minus the run tuned with that seed. ASR and "
        "floor as in the grid (triggered / untriggered negative dev sentences called positive).",
        f"* Goal (BadNets): ASR <= {100 * GOAL_ASR:.0f} % and paired CA loss <= {100 * GOAL_CA_LOSS:.0f} points; "
        "*goal* counts the seeds where both hold.",
        f"* Wall time {fmt_minutes(wall_s)} on {os.cpu_count() or 1} cores.", "",
        "| run | untuned CA % | untuned ASR % | untuned floor % | tuned CA % | tuned ASR % | tuned floor % | "
        "paired CA loss (points) | goal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = [a["accuracy"] - b["accuracy"] for a, b in zip(ref.after, r.after)]
        is_ref = r is ref
        goal = "-"
        if not is_ref and r.cfg.attack.kind == "badnets":
            hits = sum(1 for b, d in zip(r.after, loss) if b.get("asr", 1.0) <= GOAL_ASR + 1e-12
                       and d <= GOAL_CA_LOSS + 1e-12)
            goal = f"{hits}/{n}"
        lines.append(
            f"| {r.name} | {pct(r.before['accuracy'])} | {pct(r.before.get('asr'))} | {pct(r.before.get('asr_floor'))} "
            f"| {_mean_sd([a['accuracy'] for a in r.after])} | {_mean_sd([a['asr'] for a in r.after])} "
            f"| {_mean_sd([a['asr_floor'] for a in r.after])} | "
            f"{'0' if is_ref else _mean_sd(loss)} | {goal} |")
    lines += ["", "Per seed (CA / ASR / floor, %):", "",
              "| run | " + " | ".join(f"seed {int(a['seed'])}" for a in ref.after) + " |",
              "|---|" + "---|" * n]
    for r in rows:
        cells = [f"{pct(a['accuracy'])} / {pct(a['asr'])} / {pct(a['asr_floor'])}" for a in r.after]
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the experiment for parsed ``args`` (``argv`` is quoted on the results page): exit 0 on success, 2 on usage errors (a bad run folder, mismatched runs)."""
    import torch
    from rich.console import Console
    from rich.progress import Progress

    from bastionfl.tasks.text import DatasetError

    prog = "bastionfl experiment text-tune"
    if len(args.runs) < 2 or args.seeds < 1 or args.clean_set < 10 or not 0 <= args.lr <= 0.01 \
            or args.batch_size < 0:
        print(f"{prog}: give the reference and at least one run, --seeds >= 1, --clean-set >= 10, "
              "0 <= --lr <= 0.01 and --batch-size >= 0", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(max(1, args.threads))
    console = Console()
    start = time.perf_counter()
    try:
        with Progress(console=console) as bar:
            task = bar.add_task("tuning", total=len(args.runs) * args.seeds)
            rows = tune_runs(args.runs, args.clean_set, args.seeds, progress=lambda: bar.advance(task),
                             lr=args.lr, batch_size=args.batch_size, decay=args.decay)
    except (ExperimentError, ConfigError, DatasetError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # a caller in the same process keeps its own setting
    text = render_tunes(rows, command=f"{prog} {shlex.join(argv)}", clean_set_size=args.clean_set,
                        wall_s=time.perf_counter() - start)
    publish_results(console, args.results, text)
    return 0
