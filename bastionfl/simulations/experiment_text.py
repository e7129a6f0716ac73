"""``bastionfl experiment text``: the federated text-backdoor grid {none, BTU} x {BadNets, AddSent, Syntactic, Style}.

Every arm is a simulated federation (``run_simulated``) on SST-2 with the same seed, clients and data; a no-attack
run gives the clean-accuracy (CA) reference. With BTU every client runs it, the poisoned ones included
(``poisoned_clients_defend = true``: a data-poisoned client does not know it is poisoned); without it nobody defends. The default
configuration: all six MiniLM layers, a seeded subset of 3,000 SST-2 training sentences, 3 rounds of 1 local epoch
(AdamW 1e-4, batch 16); about 5.5 minutes per row on 2 free CPU cores, so about 50 minutes for the nine
federations (fewer layers or sentences fit 30 minutes, but then the no-defense backdoor is barely learnt and the
model's own error hides what a defense does; see docs/results-text.md). Secure aggregation is not offered here:
xMK-CKKS over a 22-million-parameter text model is far outside this budget, and BTU's outcome does not depend on
it (BTU edits the local model before the update would be encrypted).

Options: ``--clean-tune N`` gives every row the server's clean tune (BTU's last step) after the last round;
``--btu-purity``, ``--btu-cut-to own``, ``--btu-hold`` and ``--btu-ranking frequency`` select BTU variants;
``--reference DIR`` reuses a no-attack run of the same configuration. The reference's final model is also evaluated
on the BadNets-triggered dev sentences: the clean model's ASR, which the BadNets goal is relative to.

The markdown table goes to ``--results`` with the exact command, seed and wall times; the text below the
``KEEP_MARKER`` line of an existing page (the discussion) is kept when the grid rewrites it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bastionfl.config import ConfigError, RunConfig, apply_overrides, from_saved
from bastionfl.simulations.grid import (ExperimentError, GridDisplay, fmt_minutes, page_header, pct,
                                      publish_results, write_results)

__all__ = ["run", "Arm", "ArmResult", "grid_arms", "base_config", "render_results", "GOAL_ASR", "GOAL_CA_LOSS", "select_arms",
           "load_reference"]

ATTACKS = ("badnets", "addsent", "syntactic", "style")
DEFENSES = ("none", "btu")
GOAL_ASR = 0.01  # rare-word BadNets: ASR at most 1 point above the clean model's ASR on the same triggered sentences
GOAL_CA_LOSS = 0.01  # ... with clean accuracy at most 1 point below the no-attack run
STAGE_TIMEOUT_S = 7200.0  # a loaded machine can take over 10 minutes for BTU's exposure round; a row needs every client
_LABEL = {"none": "none", "btu": "BTU", "badnets": "BadNets (`cf`)", "addsent": "AddSent", "syntactic": "Syntactic",
          "style": "Style"}


@dataclass(frozen=True)
class Arm:
    """One row of the grid: an attack with a defense (attack ``none``: the CA reference)."""

    attack: str
    defense: str

    @property
    def key(self) -> str:
        """``attack/defense``."""
        return f"{self.attack}/{self.defense}"

    def overrides(self) -> dict[str, Any]:
        """The config fields that make this arm (on top of the shared base)."""
        if self.attack == "none":
            return {"attack": "none", "client_defense": "none"}
        return {"attack": self.attack, "client_defense": self.defense, "poisoned_clients_defend": True}


@dataclass
class ArmResult:
    """What one arm measured (final global model) and how long it took."""

    arm: Arm
    accuracy: float
    asr: float | None
    asr_floor: float | None
    wall_s: float
    flagged: float | None = None  # mean suspects per client
    trigger_found: str = "-"  # "k/n" poisoned clients that flagged the whole trigger, or a reason
    rounds: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[int, dict[str, list[str]]] = field(default_factory=dict)  # BTU: client -> cut / spared tokens


def grid_arms() -> list[Arm]:
    """The attack rows, in table order (the reference runs separately)."""
    return [Arm(a, d) for a in ATTACKS for d in DEFENSES]


def select_arms(only: str | None) -> list[Arm]:
    """The rows ``--only`` names: attacks (``badnets``: both defenses) or single rows (``badnets/btu``)."""
    if not only:
        return grid_arms()
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        raise ExperimentError(f"--only {only!r} selects no row")
    arms = grid_arms()
    picked: list[Arm] = []
    for w in wanted:
        hits = [a for a in arms if w in (a.attack, a.key)]
        if not hits:
            raise ExperimentError(f"--only {only!r}: {w!r} is neither an attack ({', '.join(ATTACKS)}) nor a row "
                                  f"attack/defense (defenses: {', '.join(DEFENSES)})")
        picked += [a for a in hits if a not in picked]
    return [a for a in arms if a in picked]


def base_config(args: argparse.Namespace) -> RunConfig:
    """The configuration every arm shares (the CPU-sized default, or a tiny one with ``--quick``)."""
    values: dict[str, Any] = {
        "dataset": "sst2", "data_dir": args.data_dir, "model": args.model, "text_layers": args.layers,
        "max_len": 48, "train_subset": args.train_subset, "num_clients": 5, "poisoned_clients": 2,
        "poison_rate": 0.1, "target_label": 1, "rounds": args.rounds, "local_epochs": args.local_epochs, "lr": args.lr,
        "batch_size": args.batch_size, "partition": "iid", "fraction_train": 1.0, "seed": args.seed,
        "threads_per_client": 1, "secure_aggregation": "none", "btu_cut_to": args.btu_cut_to,
        "btu_hold": args.btu_hold, "btu_purity": args.btu_purity, "btu_ranking": args.btu_ranking,
        "stage_timeout_s": STAGE_TIMEOUT_S,
    }
    if args.clean_tune < 0 or 0 < args.clean_tune < 10:
        raise ExperimentError(f"--clean-tune {args.clean_tune}: give 0 (none) or at least 10 sentences")
    if args.clean_tune:  # BTU's clean tune on the server, once, after the last aggregation; every arm gets it
        values.update(repair="finetune", clean_set_size=args.clean_tune, repair_last_rounds=1,
                      repair_lr=args.clean_tune_lr, repair_batch_size=args.clean_tune_batch,
                      repair_lr_decay=args.clean_tune_decay)
    elif args.clean_tune_lr or args.clean_tune_batch or args.clean_tune_decay:
        raise ExperimentError("--clean-tune-lr / --clean-tune-batch / --clean-tune-decay set the clean tune: give "
                              "--clean-tune N too")
    if args.quick:
        values.update(model="tiny-bert", text_layers=1, max_len=32, train_subset=300, num_clients=3,
                      poisoned_clients=1, rounds=1, local_epochs=1, lr=1e-3, batch_size=32)
    return apply_overrides(RunConfig(), values)


_REFERENCE_FREE = ("out_dir", "client_state_dir", "data_dir", "verbose", "threads_per_client", "btu_cut_to", "btu_hold",
                   "btu_purity", "btu_ranking", "stage_timeout_s")


def load_reference(run_dir: Path, base: RunConfig) -> ArmResult:
    """The no-attack row from an earlier run folder of the same configuration (``--reference``: saves re-running it).

    Refuses a folder whose stored configuration differs from this grid's in anything that changes the model.
    """
    path = Path(run_dir) / "metrics.json"
    try:
        data = json.loads(path.read_text())
        stored, rounds = data["config"], data["rounds"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExperimentError(f"--reference {run_dir}: cannot read a run's metrics.json ({type(exc).__name__})") from None
    try:
        have = from_saved(stored).flat()  # a run written before a field existed ran with its default
    except ConfigError as exc:
        raise ExperimentError(f"--reference {run_dir}: stored configuration is not valid ({exc})") from None
    want = {**base.flat(), **Arm("none", "none").overrides()}
    differs = [k for k in want if k not in _REFERENCE_FREE and have[k] != want[k]]
    if differs:
        raise ExperimentError(f"--reference {run_dir}: not a no-attack run of this configuration (differs in "
                              f"{', '.join(differs)})")
    if data.get("status") != "completed" or len(rounds) != base.federation.rounds:
        raise ExperimentError(f"--reference {run_dir}: the run did not complete its {base.federation.rounds} rounds")
    last = rounds[-1]
    wall = sum(float(r.get("time_s", 0.0)) for r in rounds)
    return ArmResult(Arm("none", "none"), float(last["accuracy"]), None, last.get("asr_floor"), wall, rounds=rounds)


def clean_badnets_asr(run_dir: Path, base: RunConfig) -> float:
    """The no-attack run's final model on the BadNets-triggered dev sentences: the ASR a clean model reports."""
    from bastionfl.server.checkpoint import CheckpointError, load_checkpoint
    from bastionfl.tasks.registry import build_task

    try:
        state = load_checkpoint(Path(run_dir), restore_rng=False)["model"]
    except (CheckpointError, KeyError) as exc:
        raise ExperimentError(f"{run_dir}: no final model to measure the clean ASR on ({exc})") from None
    task = build_task(apply_overrides(base, {"attack": "badnets", "poisoned_clients": 0, "client_defense": "none"}))
    model = task.new_model()  # type: ignore[attr-defined] - the text task
    model.load_state_dict(state)
    return float(task.evaluate(model)["asr"])


def _round_extra(entry: dict[str, Any]) -> str:
    return f"  ASR {100 * entry['asr']:6.2f}% (floor {100 * entry['asr_floor']:5.2f}%)" if "asr" in entry else ""


def _summary(r: ArmResult) -> str:
    asr = "-" if r.asr is None else f"{100 * r.asr:.2f}%"
    return f"CA {100 * r.accuracy:.2f}%  ASR {asr}  trigger found {r.trigger_found}  ({r.wall_s / 60:.1f} min)"


def _btu_summary(arm: Arm, rounds: list[dict[str, Any]]) -> tuple[float | None, str]:
    """Mean suspects per client and how many poisoned clients flagged their whole trigger (exposure round)."""
    if arm.defense != "btu":
        return None, "-"
    first = rounds[0].get("client_metrics", {})
    flagged = [m["btu_flagged"] for m in first.values() if "btu_flagged" in m]
    if arm.attack in ("syntactic", "style"):
        found = "n/a (no trigger token)"
    else:
        poisoned = [m for m in first.values() if m.get("poisoned_examples", 0) > 0]
        hits = sum(int(m.get("btu_trigger_found", 0.0)) for m in poisoned)
        tokens = [f"{m.get('btu_trigger_tokens_flagged', 0):.0f}/{m.get('btu_trigger_tokens', 0):.0f}"
                  for m in poisoned]
        found = f"{hits}/{len(poisoned)}" + (f" (tokens flagged {', '.join(tokens)})" if arm.attack == "addsent"
                                             else "")
    return (sum(flagged) / len(flagged) if flagged else None), found


def run_arm(base: RunConfig, arm: Arm, work: Path, display: GridDisplay | None) -> ArmResult:
    """One simulated federation for ``arm``; raises ExperimentError on failure."""
    from bastionfl.simulations.simulate import run_simulated

    run_dir = work / arm.key.replace("/", "-")
    cfg = apply_overrides(base, {**arm.overrides(), "out_dir": str(run_dir),
                                 "client_state_dir": str(run_dir / "client-state")})
    if display is not None:
        display.begin_arm(arm.key, cfg.federation.rounds)
    start = time.perf_counter()
    try:
        rounds = run_simulated(cfg, run_dir, observer=display)
    except Exception as exc:
        raise ExperimentError(f"{arm.key}: run failed: {type(exc).__name__}: {exc}") from exc
    wall = time.perf_counter() - start
    if not rounds:
        raise ExperimentError(f"{arm.key}: the federation returned no rounds")
    for entry in rounds:  # a round that aggregated only some clients is not the row's configuration
        lost = [str(e) for e in entry.get("events", []) if "failed or timed out" in str(e)]
        if lost:
            raise ExperimentError(f"{arm.key}: round {entry.get('round')}: {lost[0]} (the row needs every client; "
                                  f"see {run_dir / 'metrics.json'})")
    last = rounds[-1]
    flagged, found = _btu_summary(arm, rounds)
    result = ArmResult(arm, float(last["accuracy"]), last.get("asr"), last.get("asr_floor"), wall, flagged, found,
                       rounds, btu_tokens(run_dir / "client-state") if arm.defense == "btu" else {})
    if display is not None:
        display.end_arm(_summary(result))
    return result


def btu_tokens(state_dir: Path) -> dict[int, dict[str, list[str]]]:
    """Each client's BTU tokens from its saved node state: ``{"cut": [...], "spared": [...]}`` (empty if none)."""
    from bastionfl.client.state_store import load_client_state

    out: dict[int, dict[str, list[str]]] = {}
    for folder in sorted(Path(state_dir).glob("partition-*")):
        try:
            pid = int(folder.name.split("-", 1)[1])
            record = json.loads(load_client_state(str(state_dir), pid, 1 << 30).get("btu", "{}"))
        except (ValueError, OSError):
            continue
        if record:
            out[pid] = {"cut": [str(t) for t in record.get("tokens", [])],
                        "spared": [str(t) for t in record.get("spared_tokens", [])]}
    return out


def _code(tokens: Sequence[str]) -> str:
    return " ".join(f"`` {t} ``" if "`" in t else f"`{t}`" for t in tokens)


def _token_lines(results: Sequence[ArmResult]) -> list[str]:
    """One line per BTU row and client: the tokens it cut (and, under the frequency ranking, spared)."""
    lines: list[str] = []
    for r in results:
        for pid, toks in sorted(r.tokens.items()):
            spared = f"; spared ({len(toks['spared'])}): {_code(toks['spared'])}" if toks["spared"] else ""
            lines.append(f"* {r.arm.key}, client {pid}: cut ({len(toks['cut'])}): {_code(toks['cut'])}{spared}")
    return ["", "Tokens per client (round-1 exposure; the trigger is `cf` for BadNets):", "", *lines] if lines else []


def goal_met(r: ArmResult, reference: ArmResult) -> bool:
    """ASR at most 1 point above the clean model's (the reference's) and CA at most 1 point below the reference's."""
    return (r.asr is not None and reference.asr is not None and r.asr <= reference.asr + GOAL_ASR + 1e-12
            and reference.accuracy - r.accuracy <= GOAL_CA_LOSS + 1e-12)


def _btu_variant(d: Any) -> str:
    """The page's note on the BTU variant in use (empty for the paper's BTU)."""
    return ((" (variant: the cut restores the token's own pretrained values instead of the [PAD] values)"
             if d.btu_cut_to == "own" else "")
            + (f" (variant: only suspects whose sentences at the client carry one label at least "
               f"{100 * d.btu_purity:.0f}% of the time are cut, the rest spared)" if d.btu_purity > 0 else "")
            + (" (variant: from round 2 it also cuts the received model first and keeps the cut rows fixed while "
               "training)" if d.btu_hold else "")
            + (" (frequency ranking: suspects in >= 2% of every label's sentences at the client, or with a "
               "vocabulary id below 7,000, are spared)" if d.btu_ranking == "frequency" else ""))


def render_results(base: RunConfig, reference: ArmResult, results: Sequence[ArmResult], *, command: str,
                   total_wall_s: float, load: tuple[float, float, float], cores: int, pending: Sequence[Arm] = (),
                   reference_reused: bool = False) -> str:
    """The markdown results page: setup, the table, and the goal column for BadNets (``pending``: arms not run yet)."""
    from bastionfl.server.repair import clean_tune_schedule

    ref = reference.accuracy
    subset = "all" if base.task.train_subset == 0 else f"a seeded subset of {base.task.train_subset:,}"
    layers = ("with all layers" if base.task.text_layers == 0
              else f"cut to its first {base.task.text_layers} transformer layers (CPU budget)")
    lines = [
        *page_header("Federated text-backdoor grid (SST-2, BTU)", "bastionfl experiment text",
                     "bastionfl/simulations/experiment_text.py", command),
        f"* Seed {base.federation.seed}. Model {base.task.model} {layers}, max_len {base.task.max_len}; SST-2, {subset} "
        f"training sentences, {base.federation.num_clients} IID clients of which {base.attack.poisoned_clients} hold "
        f"{100 * base.attack.poison_rate:.0f}%-poisoned data (`mix`: {100 * base.attack.poison_rate:.0f}% of each class carries the "
        f"trigger and is relabelled {base.attack.target_label}); {base.federation.rounds} rounds x {base.task.local_epochs} local epoch(s), "
        f"AdamW lr {base.task.lr}, batch {base.task.batch_size}; plaintext FedAvg over all clients.",
        "* CA: accuracy on the 872 SST-2 dev sentences. ASR: share of the triggered negative dev sentences "
        "classified positive; floor: the same sentences without the trigger (the model's own error). All of the "
        "final global model. The reference's ASR is the clean model's on the BadNets-triggered sentences.",
        "* BTU: every client (poisoned ones included) exposes suspects in round 1 (R1, R2, R3, top 15 each), keeps "
        "them in its node state, and cuts those embedding rows after local training in every round"
        + _btu_variant(base.defense) + ". *Flagged*: mean suspects per client; *trigger found*: poisoned clients whose suspects contain every "
        "trigger token.",
        *([f"* Clean tune (BTU's last step, on the server): after the last aggregation the server fine-tunes the "
            f"global model for one epoch (AdamW {clean_tune_schedule(base)[2]}) on {base.defense.clean_set_size:,} sentences of the SST-2 test "
            "split (disjoint from the clients' data and from dev); every row gets it, the reference included."]
          if base.defense.repair == "finetune" else []),
        f"* Goal (BadNets): ASR at most {100 * GOAL_ASR:.0f} point above the clean model's ASR on the same triggered "
        f"sentences, with CA at most {100 * GOAL_CA_LOSS:.0f} point below the no-attack run.",
        *(["* The no-attack reference was read from an earlier run of the same configuration (`--reference`); "
            "its wall time is the sum of its rounds, not part of the total below."] if reference_reused else []),
        *([f"* **Partial**: {len(results)} of {len(results) + len(pending)} rows so far; still to run: "
            f"{', '.join(a.key for a in pending)}."] if pending else []),
        f"* Total wall time {fmt_minutes(total_wall_s)} on {cores} shared cores (1 torch thread per client); load "
        f"average (1/5/15 min) at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
        "| attack | defense | CA % | CA loss (points) | ASR % | ASR floor % | flagged | trigger found | goal | wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| none | none | {pct(ref)} | 0.00 | {pct(reference.asr) if reference.asr is not None else '-'} | "
        f"{pct(reference.asr_floor)} | - | - | - | "
        f"{fmt_minutes(reference.wall_s)} |",
    ]
    for r in results:
        goal = "-"
        if r.arm.attack == "badnets":
            goal = "**yes**" if goal_met(r, reference) else "no"
        flagged = "-" if r.flagged is None else f"{r.flagged:.1f}"
        lines.append(f"| {_LABEL[r.arm.attack]} | {_LABEL[r.arm.defense]} | {pct(r.accuracy)} | "
                     f"{100 * (ref - r.accuracy):.2f} | {pct(r.asr)} | {pct(r.asr_floor)} | {flagged} | "
                     f"{r.trigger_found} | {goal} | {fmt_minutes(r.wall_s)} |")
    lines += _token_lines(results)
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the experiment for parsed ``args`` (``argv`` is quoted on the results page): exit 0 on success, 2 on usage/configuration errors, 1 when an arm fails."""
    from rich.console import Console

    from bastionfl.tasks.registry import build_task
    from bastionfl.tasks.text import DatasetError

    prog = "bastionfl experiment text"
    console = Console()
    try:
        base = base_config(args)
        arms = select_arms(args.only)
        for attack in dict.fromkeys(a.attack for a in arms):  # fail fast, before any engine starts: data,
            build_task(apply_overrides(base, {"attack": attack})).check_data()  # paraphrases and the clean set
        reused = load_reference(args.reference, base) if args.reference else None
    except (ExperimentError, ConfigError, DatasetError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2

    command = f"{prog} {shlex.join(argv)}".strip()
    console.print(f"[bold]BastionFL text-backdoor grid[/bold]: {len(arms)} row(s) + the no-attack "
                  f"reference ({'reused' if reused is not None else 'run first'}), "
                  f"{base.task.model} ({base.task.text_layers or 'all'} layers), {base.federation.num_clients} clients "
                  f"({base.attack.poisoned_clients} poisoned), {base.federation.rounds} rounds, seed {base.federation.seed}")
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix="bastionfl-text-grid-")
    work = args.work_dir or Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    display = GridDisplay(console, base.federation.rounds * (len(arms) + (reused is None)), label_width=18,
                          round_extra=_round_extra)
    start = time.perf_counter()
    display.start()
    results: list[ArmResult] = []
    try:
        if reused is None:
            reference = run_arm(base, Arm("none", "none"), work, display)
        else:
            reference = reused
        reference.asr = clean_badnets_asr(args.reference or work / "none-none", base)
        for i, arm in enumerate(arms):
            results.append(run_arm(base, arm, work, display))
            if i + 1 < len(arms):  # a partial page after every row, so a cut-short grid still leaves its figures
                write_results(args.results, render_results(base, reference, results, command=command,
                                                    total_wall_s=time.perf_counter() - start, load=os.getloadavg(),
                                                    cores=os.cpu_count() or 1, pending=arms[i + 1:],
                                                    reference_reused=reused is not None))
    except ExperimentError as exc:
        display.close()
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        display.close()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        if tmp is not None:
            tmp.cleanup()
    display.close()
    total = time.perf_counter() - start
    text = render_results(base, reference, results, command=command, total_wall_s=total, load=os.getloadavg(),
                          cores=os.cpu_count() or 1, reference_reused=reused is not None)
    publish_results(console, args.results, text, total)
    return 0
