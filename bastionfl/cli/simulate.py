"""``bastionfl simulate``: parse the run configuration, run the simulated federation, print progress and a summary."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bastionfl.config import KEYS, SECTIONS, ConfigError, RunConfig, apply_overrides, from_saved, load_config, parse_set

__all__ = ["main"]

RESUME_MUTABLE = {"rounds", "verbose", "stage_timeout_s", "num_server_rounds"}
# --secure: the whole secure federation in one flag (each key can still be changed with --set)
SECURE_PRESET = {"secure_aggregation": "xmkckks", "auth": "pseudonym", "client_defense": "abl"}


def _security(entry: dict[str, Any]) -> str:
    """The round's security line: admitted / rejected nodes and dropouts (empty for a plaintext open run)."""
    parts = []
    if "auth_admitted" in entry:
        parts.append(f"admitted {entry['auth_admitted']} rejected {entry.get('auth_rejected', 0)}")
    if "key_setup" in entry.get("stages", {}) or "auth_admitted" in entry:
        parts.append(f"dropouts {sum((entry.get('dropouts') or {}).values())}")
    return ("  " + "  ".join(parts)) if parts else ""


def _rnp_note(entry: dict[str, Any]) -> str:
    """A pruning repair's outcome on the round line (RNP, fine-pruning): channels pruned, or that it pruned nothing."""
    rep = entry.get("repair") or {}
    if rep.get("defense") == "fineprune":
        total, pruned = int(rep["channels"]), int(rep.get("pruned_channels", 0))
        if entry.get("repair_outcome") == "discarded":
            return f" (fine-pruning of {pruned} of {total} channels undone)"
        return f", fine-pruning pruned {pruned} of {total} channels of {rep.get('layer', 'the last conv stage')}"
    if "bn_channels" not in rep:
        return ""
    total, pruned = int(rep["bn_channels"]), int(rep.get("pruned_channels_total", rep.get("pruned_channels", 0)))
    if entry.get("repair_outcome") == "discarded":
        return f" (RNP's pruning of {int(rep.get('pruned_channels', 0))} of {total} BN channels undone)"
    return f", RNP pruned {pruned} of {total} BN channels" if pruned else f", RNP pruned nothing ({total} BN channels)"


class _RichObserver:
    """Progress bar over rounds plus one printed line per round."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("[bold]rounds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("{task.description}"), console=console, transient=True)
        self.task: Any = None

    def on_start(self, first_round: int, total_rounds: int) -> None:
        self.progress.start()
        self.task = self.progress.add_task("starting the simulation engine", total=total_rounds,
                                           completed=first_round - 1)

    def on_round(self, entry: dict[str, Any]) -> None:
        extra = f"  asr {100 * entry['asr']:5.1f}%" if "asr" in entry else ""
        if "repair_outcome" in entry:
            extra += f"  repair {entry['repair_outcome']}{_rnp_note(entry)}"
        if "skipped" in entry:
            extra += f"  SKIPPED, model unchanged ({entry['skipped']})"
        self.console.print(f"round {entry['round']:>3}  accuracy {100 * entry['accuracy']:5.1f}%  loss "
                           f"{entry['loss']:.4f}{extra}  {entry['time_s']:.1f} s  up {entry['bytes_up'] / 1e6:.2f} MB"
                           f"  down {entry['bytes_down'] / 1e6:.2f} MB{_security(entry)}")
        self.progress.update(self.task, advance=1, description=f"accuracy {100 * entry['accuracy']:.1f}%")

    def close(self) -> None:
        self.progress.stop()


def _summary(console: Any, rounds: list[dict[str, Any]], out_dir: Path, wall: float) -> None:
    from rich.table import Table

    table = Table(title=f"BastionFL run summary ({out_dir})")
    for col in ("round", "accuracy %", "loss", "time s", "up MB", "down MB"):
        table.add_column(col, justify="right")
    has_asr = bool(rounds) and "asr" in rounds[0]
    if has_asr:
        table.add_column("ASR %", justify="right")
    has_auth = bool(rounds) and "auth_admitted" in rounds[0]
    if has_auth:
        for col in ("admitted", "rejected", "dropouts"):
            table.add_column(col, justify="right")
    for r in rounds:
        row = [str(r["round"]), f"{100 * r['accuracy']:.2f}", f"{r['loss']:.4f}", f"{r['time_s']:.2f}",
               f"{r['bytes_up'] / 1e6:.2f}", f"{r['bytes_down'] / 1e6:.2f}"]
        if has_asr:
            row.append(f"{100 * r['asr']:.2f}")
        if has_auth:
            row += [str(r.get("auth_admitted", 0)), str(r.get("auth_rejected", 0)),
                    str(sum((r.get("dropouts") or {}).values()))]
        table.add_row(*row)
    console.print(table)
    console.print(f"final accuracy {100 * rounds[-1]['accuracy']:.2f}% after {rounds[-1]['round']} rounds; "
                  f"wall time {wall:.1f} s; files: {out_dir / 'metrics.json'}, {out_dir / 'accuracy.png'}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl simulate", description="Run a simulated BastionFL federation.")
    p.add_argument("--config", type=Path, help="TOML file: flat key = value lines or [section] tables")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set rounds=10")
    p.add_argument("--secure", action="store_true",
                   help="the secure federation: xMK-CKKS, pseudonym admission, ABL on the clients "
                        "(= --set secure_aggregation=xmkckks --set auth=pseudonym --set client_defense=abl)")
    p.add_argument("--out", type=Path, help="output folder (default: runs/sim-<timestamp>)")
    p.add_argument("--resume", type=Path, metavar="OUT", help="continue the run in OUT after its last round")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after round N (resume later with --resume)")
    p.add_argument("--list-keys", action="store_true", help="print every config key with its default and exit")
    return p


def _list_keys(console: Any) -> None:
    """Every key with its default and help, section by section (the text task changes the starred defaults)."""
    from bastionfl.config import TASK_PROFILES, TaskKind

    text = TASK_PROFILES[TaskKind.TEXT].defaults
    defaults = RunConfig().flat()
    for section in SECTIONS:
        console.print(f"[bold]{section}[/bold]", highlight=False)
        for key, k in KEYS.items():
            if k.section == section:
                star = "*" if key in text else " "
                console.print(f"  {key:<24}{star} {defaults[key]!r:<14} {k.field.metadata['help']}", highlight=False)
    console.print("* follows the task: a text dataset defaults to "
                  + ", ".join(f"{k} = {v!r}" for k, v in text.items()), highlight=False)


def _resume_config(out_dir: Path, overrides: dict[str, str]) -> RunConfig:
    from bastionfl.server.checkpoint import CheckpointError, load_checkpoint

    try:
        saved = load_checkpoint(out_dir, restore_rng=False)["config"]
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    frozen = [k for k in overrides if k.replace("-", "_") not in RESUME_MUTABLE]
    if frozen:
        raise ConfigError(f"config key '{frozen[0]}' cannot change on --resume (only rounds, verbose, stage_timeout_s)")
    return apply_overrides(from_saved(saved), overrides)


def main(argv: list[str]) -> int:
    """Entry point of ``bastionfl simulate``; exit 2 on configuration errors, 1 on run failures."""
    from rich.console import Console

    from bastionfl.simulations.simulate import run_simulated
    from bastionfl.tasks.data import DatasetError
    from bastionfl.tasks.registry import build_task

    console = Console(stderr=False)
    args = _parser().parse_args(argv)
    if args.list_keys:
        _list_keys(console)
        return 0
    try:
        overrides = parse_set(args.sets)
        if args.secure and not args.resume:
            overrides = {**SECURE_PRESET, **overrides}
        if args.resume:
            out_dir = args.resume
            cfg = _resume_config(out_dir, overrides)
        else:
            cfg = load_config(args.config, overrides)
            out_dir = args.out or Path(cfg.runtime.out_dir or f"runs/sim-{time.strftime('%Y%m%d-%H%M%S')}")
        if args.stop_after is not None and args.stop_after < 1:
            raise ConfigError(f"--stop-after must be >= 1, got {args.stop_after}")
        build_task(cfg).check_data()  # fail fast, before the engine starts
    except (ConfigError, DatasetError) as exc:
        print(f"bastionfl simulate: {exc}", file=sys.stderr)
        return 2
    cfg = apply_overrides(cfg, {"out_dir": str(out_dir)})
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"BastionFL: {cfg.federation.num_clients} clients, {cfg.federation.rounds} rounds, "
                  f"{cfg.task.dataset}/{cfg.task.model}, secure aggregation: {cfg.secure.mode}, admission: "
                  f"{cfg.admission.mode}, client defense: {cfg.defense.client_defense} -> {out_dir}")
    observer = _RichObserver(console)
    start = time.perf_counter()
    try:
        rounds = run_simulated(cfg, out_dir, resume=bool(args.resume), observer=observer, stop_after=args.stop_after)
    except KeyboardInterrupt:
        observer.close()
        print(f"interrupted; resume with: bastionfl simulate --resume {out_dir}", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed run ends with one line, not a traceback; details are in the log above
        observer.close()
        print(f"bastionfl simulate: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    observer.close()
    if rounds:
        _summary(console, rounds, out_dir, time.perf_counter() - start)
    return 0
