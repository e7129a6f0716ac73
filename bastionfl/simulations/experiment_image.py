"""``bastionfl experiment image``: the federated image-backdoor grid {none, ABL, RNP, NAD, fine-tune} x attacks.

Opt-in rows (``OPT_IN_DEFENSES``: adversarial unlearning, fine-pruning) run only when ``--only`` names them.
``--repair-set KEY=VALUE`` (repeatable) sets a repair key for the repair rows: ``repair_*`` keys for every repair
row, ``rnp_*`` / ``unlearn_*`` / ``fineprune_*`` keys for the rows of that repair only.

Every arm is a simulated federation (``run_simulated``) with the same seed, the same clients and the same data: the
server's clean set (``clean_set_size``) is held out for every arm, also for those that do not use it. A plaintext
no-attack run gives the clean-accuracy (CA) reference. Threat models: ABL runs on honest clients that hold poisoned
data (``poisoned_clients_defend = true``); RNP, NAD and fine-tuning repair the aggregate on the server for clients
that do not defend themselves (``poisoned_clients_defend = false``, ``client_defense = none``).

Server repair runs in the last round only. In earlier rounds a repaired aggregate goes straight back to the clients,
who train on their poisoned data again, so only the repair of the final aggregate decides the released model. The
first ``rounds - 1`` rounds of a repair arm are therefore the rounds of the attack's no-defense arm: the grid runs
them once, checkpoints, and branches every repair arm (and the no-defense arm itself) from that checkpoint with
``resume`` (client seeds depend on seed, round and client only, so the branches are the same federation).

The markdown table goes to ``--results`` together with the exact command, seed, wall time and machine load. Text
below the ``KEEP_MARKER`` line of an existing results file is kept on re-runs (hand-written discussion).
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bastionfl.config import ConfigError, RunConfig, apply_overrides
from bastionfl.simulations.grid import KEEP_MARKER, ExperimentError, GridDisplay, fmt_minutes, publish_results

__all__ = ["run", "Arm", "ArmResult", "grid_arms", "select_arms", "render_results", "parse_repair_set",
           "repair_overrides", "GOAL_ASR", "GOAL_CA_LOSS", "BLENDED", "KEEP_MARKER", "COLUMNS"]

ATTACKS = ("badnets", "blended", "boosted")
DEFENSES = ("none", "abl", "rnp", "nad", "finetune", "unlearn", "fineprune")
BOOSTED_DEFENSES = ("none", "clip", "finetune", "rnp", "unlearn")  # model replacement: the aggregate clip acts under HE too
HE_DEFENSES = {"badnets": ("none", "finetune"), "blended": ("none", "finetune"), "boosted": ("none", "clip", "unlearn")}
REPAIRS = ("rnp", "nad", "finetune", "unlearn", "fineprune")
# measured without reaching the goal (results-image.md): run only when --only names them
OPT_IN_DEFENSES = ("unlearn", "fineprune")
# --repair-set: keys with these prefixes set that repair's rows only; "repair_" keys set every repair row
REPAIR_KEY_PREFIXES = {"rnp_": "rnp", "unlearn_": "unlearn", "fineprune_": "fineprune", "repair_": None}
# boosted attackers: single-shot model replacement in the last round, x2, half their images poisoned, trained gently
# (lr 0.01, 3 epochs) so that the boosted model keeps the clean task (docs/results-image.md, "The boosted attack")
BOOSTED = {"boost_factor": 2.0, "rounds": 1, "poison_rate": 0.5, "attack_lr": 0.01, "attack_epochs": 3}
# Blended attackers: on the quick digits grid the noise pattern at alpha 0.2 (Chen et al.) took to 81-96 % ASR only,
# at 30-50 % poisoned images too; alpha 0.3 at 30 % works (docs/results-image.md)
BLENDED = {"blend_alpha": 0.3, "poison_rate": 0.3}
# the clip arm bounds each aggregate update by this many times the median norm of the earlier rounds; chosen on the
# quick grid's seeds 0-2 and confirmed on seeds 3-5 (docs/results-image.md, "The boosted attack")
CLIP_ADAPTIVE = 0.45
GOAL_ASR = 0.05  # attack success rate at most 5 %
GOAL_CA_LOSS = 0.02  # clean accuracy at most 2 points below the no-attack run
COLUMNS = ("attack", "defense", "threat model", "CA %", "ASR %", "CA loss vs no-attack (points)", "goal met",
           "wall time", "notes")
_LABEL = {"none": "none", "abl": "ABL", "rnp": "RNP", "nad": "NAD", "finetune": "fine-tune", "unlearn": "unlearning",
          "fineprune": "fine-pruning", "badnets": "BadNets",
          "blended": "Blended", "boosted": "Boosted BadNets", "clip": "aggregate clip"}


@dataclass(frozen=True)
class Arm:
    """One row of the grid: an attack with a defense under a threat model (attack ``none``: the CA reference)."""

    attack: str
    defense: str
    he: bool = False  # an extra row with xMK-CKKS secure aggregation

    @property
    def key(self) -> str:
        """``attack/defense`` (``+he`` for a secure-aggregation row), what ``--only`` patterns match."""
        return f"{self.attack}/{self.defense}" + ("+he" if self.he else "")

    @property
    def threat(self) -> str:
        """The threat model in words."""
        he = "; xMK-CKKS" if self.he else ""
        if self.attack == "none":
            return "no attack (plaintext reference)"
        if self.defense == "abl":
            return "honest: poisoned clients run ABL" + he
        if self.attack == "boosted":
            return "malicious: poisoned clients boost their update (model replacement)" + he
        return "malicious: poisoned clients do not defend" + he

    def overrides(self, base: RunConfig | None = None) -> dict[str, Any]:
        """The config fields that make this arm (on top of the shared ``base``)."""
        if self.attack == "none":
            return {"attack": "none", "client_defense": "none", "repair": "none", "secure_aggregation": "none"}
        out: dict[str, Any] = {"attack": self.attack, "client_defense": "none", "repair": "none",
                               "poisoned_clients_defend": False}
        out.update(BLENDED if self.attack == "blended" else {})
        if self.attack == "boosted":  # model replacement in the last rounds (BOOSTED; docs/defenses.md)
            rounds = (base or RunConfig()).federation.rounds
            out.update(attack="badnets", attack_start_round=max(1, rounds - BOOSTED["rounds"] + 1),
                       **{k: v for k, v in BOOSTED.items() if k != "rounds"})
        if self.defense == "abl":
            out.update(client_defense="abl", poisoned_clients_defend=True)
        elif self.defense in REPAIRS:
            out["repair"] = self.defense
        elif self.defense == "clip":
            out["aggregate_clip_adaptive"] = CLIP_ADAPTIVE
        if self.he:
            out["secure_aggregation"] = "xmkckks"
        return out


@dataclass
class ArmResult:
    """What one arm measured (final round) and how long it took."""

    arm: Arm
    accuracy: float
    asr: float | None
    wall_s: float
    rounds: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""


def grid_arms(he_rows: bool = False, opt_in: bool = False) -> list[Arm]:
    """The attack rows of the grid, in table order (the reference is run separately); ``he_rows`` adds the
    xMK-CKKS rows (no defense and the defense that applies under encryption, per attack); ``opt_in`` adds the rows
    of ``OPT_IN_DEFENSES``, which run only when ``--only`` names them."""
    arms = [Arm(a, d) for a in ATTACKS for d in (BOOSTED_DEFENSES if a == "boosted" else DEFENSES)]
    if he_rows:
        arms += [Arm(a, d, he=True) for a in ATTACKS for d in HE_DEFENSES[a]]
    return [a for a in arms if opt_in or a.defense not in OPT_IN_DEFENSES]


def select_arms(only: str | None, he_rows: bool = False) -> list[Arm]:
    """Grid rows whose ``attack/defense`` key matches one of the comma-separated shell patterns in ``only``."""
    if not only:
        return grid_arms(he_rows)
    arms = grid_arms(he_rows, opt_in=True)
    patterns = [p.strip().lower() for p in only.split(",") if p.strip()]
    chosen = [a for a in arms if any(fnmatch.fnmatchcase(a.key, p) or a.attack == p or a.defense == p
                                     for p in patterns)]
    if not chosen:
        keys = ", ".join(a.key for a in arms)
        raise ExperimentError(f"--only {only!r} selects no row (rows: {keys}; patterns like 'badnets/*' or 'nad')")
    return chosen


def parse_repair_set(items: Sequence[str] | None) -> dict[str, str]:
    """``--repair-set KEY=VALUE`` items as ``{key: raw value}``; a malformed item or a non-repair key is refused."""
    from bastionfl.config import KEYS

    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key or not value.strip():
            raise ExperimentError(f"--repair-set expects KEY=VALUE (e.g. fineprune_max_drop=20), got {item!r}")
        if key not in KEYS or not any(key.startswith(p) for p in REPAIR_KEY_PREFIXES) or key == "repair_last_rounds":
            raise ExperimentError(f"--repair-set {item!r}: {key!r} is not a repair key (repair_*, rnp_*, unlearn_*, "
                                  "fineprune_*; repair_last_rounds is the grid's own)")
        out[key] = value.strip()
    return out


def repair_overrides(arm: Arm, repair_set: dict[str, str]) -> dict[str, str]:
    """The ``--repair-set`` keys that apply to ``arm``: none for a row without server repair."""
    if arm.defense not in REPAIRS:
        return {}
    out = {}
    for key, value in repair_set.items():
        owner = next(o for p, o in REPAIR_KEY_PREFIXES.items() if key.startswith(p))
        if owner is None or owner == arm.defense:
            out[key] = value
    return out


def _check_repair_set(base: RunConfig, arms: Sequence[Arm], repair_set: dict[str, str]) -> None:
    """Refuse, before any run, a key that no selected row uses or a value a row's configuration refuses."""
    for key in repair_set:
        if not any(key in repair_overrides(a, repair_set) for a in arms):
            raise ExperimentError(f"--repair-set {key}: no selected row runs the repair it sets (rows: "
                                  f"{', '.join(a.key for a in arms)})")
    for arm in arms:
        if repair_overrides(arm, repair_set):
            apply_overrides(base, {**arm.overrides(base), **repair_overrides(arm, repair_set)})


def base_config(args: argparse.Namespace, seed: int | None = None) -> RunConfig:
    """The configuration every arm shares (full Fashion-MNIST grid, or the tiny digits one with ``--quick``)."""
    if args.quick:
        values: dict[str, Any] = {"dataset": "digits", "data_dir": "", "model": "cnn", "train_subset": 0,
                                  "num_clients": 3, "poisoned_clients": 1, "rounds": args.rounds or 2,
                                  "clean_set_size": 300, "poison_rate": 0.2, "lr": 0.05, "batch_size": 32}
    else:
        values = {"dataset": "fashion-mnist", "data_dir": args.data_dir, "model": args.model,
                  "train_subset": args.train_subset, "num_clients": 10, "poisoned_clients": 3,
                  "rounds": args.rounds or 8, "clean_set_size": args.clean_set_size, "poison_rate": args.poison_rate,
                  "lr": args.lr, "batch_size": args.batch_size}
    values.update(model=args.model, local_epochs=1, seed=args.seed if seed is None else seed, target_label=0,
                  partition="iid", fraction_train=1.0, secure_aggregation=args.secure_aggregation, threads_per_client=1)
    return apply_overrides(RunConfig(), values)


def parse_seeds(args: argparse.Namespace) -> list[int]:
    """``--seeds 0,1,2`` (default: three seeds; ``--quick`` and an explicit ``--seed`` run one)."""
    raw = getattr(args, "seeds", None)
    if raw is None:
        return [args.seed] if args.quick else [0, 1, 2]
    if not raw.strip():
        return [args.seed]
    seeds = [int(x) for x in str(raw).split(",") if x.strip().isdigit()]
    if len(seeds) != len(str(raw).split(",")) or len(set(seeds)) != len(seeds):
        raise ExperimentError(f"--seeds {raw!r}: expected distinct non-negative integers, comma-separated")
    return seeds


def _round_extra(entry: dict[str, Any]) -> str:
    asr = f"  ASR {100 * entry['asr']:6.2f}%" if "asr" in entry else ""
    repair = f"  repair {entry['repair_outcome']} ({entry['repair_s']:.0f} s)" if "repair_outcome" in entry else ""
    return asr + repair


def _summary(result: ArmResult) -> str:
    asr = "-" if result.asr is None else f"{100 * result.asr:.2f}%"
    return (f"CA {100 * result.accuracy:.2f}%  ASR {asr}  ({result.wall_s / 60:.1f} min)"
            f"{'  ' + result.notes if result.notes else ''}")


def _notes(arm: Arm, rounds: list[dict[str, Any]]) -> str:
    """Short diagnostics of the defense from the recorded metrics (ABL isolation, RNP pruning, repair time)."""
    if not rounds:
        return ""
    last = rounds[-1]
    if arm.defense == "abl":
        isolated = precision_sum = recall_sum = benign_isolated = 0.0
        poisoned = 0
        final = last.get("client_metrics", {})
        for m in final.values():
            if m.get("poisoned_examples", 0) > 0:
                poisoned += 1
                isolated += m.get("isolated", 0.0)
                precision_sum += m.get("isolation_precision", 0.0)
                recall_sum += m.get("isolation_recall", 0.0)
            else:
                benign_isolated += m.get("isolated", 0.0)
        if poisoned == 0:
            return ""
        return (f"poisoned clients isolated {isolated:.0f} examples (mean precision {precision_sum / poisoned:.2f}, "
                f"recall {recall_sum / poisoned:.2f}); benign clients isolated {benign_isolated:.0f}")
    if arm.defense == "clip" and "aggregate_clip" in last:
        c = last["aggregate_clip"]
        return f"last update norm {c['update_norm']:.2f} scaled x{c['scale']:.2f} (bound {c['bound']:.2f})"
    rep = last.get("repair")
    if not rep:
        return ""
    parts = [f"repair {last.get('repair_outcome', 'run')} ({last.get('repair_s', 0.0):.0f} s) in round {last['round']}"]
    if arm.defense == "rnp":
        pruned = int(rep.get('pruned_channels_total', rep.get('pruned_channels', 0)))
        parts.append(f"pruned {pruned} BN channels" if pruned else "pruned nothing (every step broke the tolerance)")
    if arm.defense == "fineprune" and "channels" in rep:
        parts.append(f"pruned {int(rep.get('pruned_channels', 0))} of {int(rep['channels'])} channels (stopped by "
                     f"{rep.get('stopped_by', '?')})")
    return ", ".join(parts)


def _result_from(arm: Arm, rounds: list[dict[str, Any]], wall_s: float) -> ArmResult:
    if not rounds:
        raise ExperimentError(f"{arm.key}: the federation returned no rounds")
    last = rounds[-1]
    return ArmResult(arm, float(last["accuracy"]), float(last["asr"]) if "asr" in last else None, wall_s, rounds,
                     _notes(arm, rounds))


class _Snapshot:
    """Observer that copies the run folder (checkpoint + metrics) right after round ``at``, then forwards events."""

    def __init__(self, inner: Any, at: int, src: Path, dst: Path) -> None:
        self.inner, self.at, self.src, self.dst = inner, at, src, dst
        self.taken_at: float | None = None

    def on_start(self, first_round: int, total_rounds: int) -> None:
        if self.inner is not None:
            self.inner.on_start(first_round, total_rounds)

    def on_round(self, entry: dict[str, Any]) -> None:
        if entry["round"] == self.at:  # the checkpoint of this round is on disk before observers hear of it
            shutil.copytree(self.src, self.dst)
            self.taken_at = time.perf_counter()
        if self.inner is not None:
            self.inner.on_round(entry)


class _Runner:
    """Runs arms (with prefix branching for the repair arms) and collects their results."""

    def __init__(self, base: RunConfig, work: Path, display: GridDisplay | None,
                 repair_set: dict[str, str] | None = None) -> None:
        self.base = base
        self.work = work
        self.display = display
        self.repair_set = repair_set or {}

    def _cfg(self, arm: Arm, run_dir: Path) -> RunConfig:
        return apply_overrides(self.base, {**arm.overrides(self.base), **repair_overrides(arm, self.repair_set),
                                           "out_dir": str(run_dir)})

    def _simulate(self, label: str, cfg: RunConfig, run_dir: Path, *, resume: bool = False,
                  observer: Any = None) -> list[dict[str, Any]]:
        from bastionfl.simulations.simulate import run_simulated

        if self.display is not None:
            first = 1
            if resume:
                from bastionfl.server.checkpoint import load_checkpoint

                first = int(load_checkpoint(run_dir, restore_rng=False)["round"]) + 1
            self.display.begin_arm(label, cfg.federation.rounds, first)
        try:
            return run_simulated(cfg, run_dir, resume=resume, observer=observer or self.display)
        except Exception as exc:
            raise ExperimentError(f"{label}: run failed: {type(exc).__name__}: {exc}") from exc

    def run_full(self, arm: Arm) -> ArmResult:
        run_dir = self.work / arm.key.replace("/", "-")
        start = time.perf_counter()
        rounds = self._simulate(arm.key, self._cfg(arm, run_dir), run_dir)
        return self._finish(arm, rounds, time.perf_counter() - start)

    def run_attack(self, attack: str, arms: list[Arm]) -> list[ArmResult]:
        """The selected arms of one attack; the repair arms branch from the no-defense arm after round R - 1."""
        results: dict[str, ArmResult] = {}
        repairs = [a for a in arms if a.defense in REPAIRS and not a.he]
        rounds_total = self.base.federation.rounds
        if repairs and rounds_total > 1:
            none_arm = Arm(attack, "none")
            none_dir = self.work / none_arm.key.replace("/", "-")
            branch_dir = self.work / f"{attack}-after-round-{rounds_total - 1}"
            shutil.rmtree(branch_dir, ignore_errors=True)
            start = time.perf_counter()
            snap = _Snapshot(self.display, rounds_total - 1, none_dir, branch_dir)
            rounds = self._simulate(f"{attack}/none", self._cfg(none_arm, none_dir), none_dir, observer=snap)
            if snap.taken_at is None:
                raise ExperimentError(f"{attack}/none: no checkpoint after round {rounds_total - 1} to branch from")
            none_result = self._finish(none_arm, rounds, time.perf_counter() - start)
            if none_arm in arms:
                results[none_arm.key] = none_result
            prefix_s = snap.taken_at - start
            for arm in repairs:
                run_dir = self.work / arm.key.replace("/", "-")
                shutil.rmtree(run_dir, ignore_errors=True)
                shutil.copytree(branch_dir, run_dir)
                start = time.perf_counter()
                rounds = self._simulate(arm.key, self._cfg(arm, run_dir), run_dir, resume=True)
                results[arm.key] = self._finish(arm, rounds, prefix_s + time.perf_counter() - start)
        for arm in arms:
            if arm.key not in results:
                results[arm.key] = self.run_full(arm)
        return [results[a.key] for a in arms]

    def _finish(self, arm: Arm, rounds: list[dict[str, Any]], wall_s: float) -> ArmResult:
        result = _result_from(arm, rounds, wall_s)
        if self.display is not None:
            self.display.end_arm(_summary(result))
        return result


def goal_met(result: ArmResult, reference_ca: float) -> bool:
    """ASR <= 5 % and CA at most 2 points below the no-attack run."""
    return result.asr is not None and result.asr <= GOAL_ASR + 1e-12 and \
        reference_ca - result.accuracy <= GOAL_CA_LOSS + 1e-12


def _goal_cell(result: ArmResult, reference_ca: float) -> str:
    if result.asr is None or result.arm.defense == "none":
        return "-"
    if goal_met(result, reference_ca):
        return "**yes**"
    why = [w for w, bad in (("ASR", result.asr > GOAL_ASR), ("CA", reference_ca - result.accuracy > GOAL_CA_LOSS)) if bad]
    return f"no ({' and '.join(why)})"


def render_results(base: RunConfig, reference: ArmResult, results: Sequence[ArmResult], *, command: str,
                   total_wall_s: float, load: tuple[float, float, float], cores: int, shared_prefix: bool) -> str:
    """The markdown results page: setup, the table, the goal summary per attack."""
    ref_ca = reference.accuracy
    lines = ["# Federated image-backdoor grid", "",
             "Generated by `bastionfl experiment image`; see the module docstring of "
             "`bastionfl/simulations/experiment_image.py` for the design.", "",
             "Command:", "", "```", command, "```", "",
             f"* Seed {base.federation.seed}; {base.task.dataset} ({'all' if base.task.train_subset == 0 else f'{base.task.train_subset:,}'} "
             f"training images, of which {base.defense.clean_set_size:,} are the server's clean set in every arm), "
             f"model {base.task.model}.",
             f"* {base.federation.num_clients} clients (IID), {base.attack.poisoned_clients} of them hold "
             f"{100 * base.attack.poison_rate:.0f}%-poisoned data (all-to-one, target {base.attack.target_label}; Blended: "
             f"{100 * BLENDED['poison_rate']:.0f}%, alpha {BLENDED['blend_alpha']:g}); {base.federation.rounds} "
             f"rounds of {base.task.local_epochs} local epoch, SGD lr {base.task.lr}, batch {base.task.batch_size}; FedAvg over all "
             f"clients every round; secure aggregation: {base.secure.mode} (the reference is plaintext).",
             "* CA: accuracy on the clean test set; ASR: accuracy on the triggered non-target test images, labelled "
             "with the target; both of the final global model. Goal: ASR <= 5 % and CA at most 2 points below "
             "the no-attack run.",
             "* Server repair (RNP, NAD, fine-tune, unlearning, fine-pruning) runs in the last round only, on the "
             "aggregate, with the clean set."
             + (" The repair arms branch from the checkpoint of the attack's no-defense federation after round "
                f"{base.federation.rounds - 1} (the same rounds, run once); their wall time includes those shared rounds."
                if shared_prefix else ""),
             f"* Total wall time {fmt_minutes(total_wall_s)} on {cores} cores; load average (1/5/15 min) at the end: "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines.append(f"| none | none | {reference.arm.threat} | {100 * ref_ca:.2f} | - | 0.00 | - | "
                 f"{fmt_minutes(reference.wall_s)} | CA reference |")
    for r in results:
        asr = "-" if r.asr is None else f"{100 * r.asr:.2f}"
        lines.append(f"| {_LABEL[r.arm.attack]} | {_LABEL[r.arm.defense]} | {r.arm.threat} | {100 * r.accuracy:.2f} "
                     f"| {asr} | {100 * (ref_ca - r.accuracy):.2f} | {_goal_cell(r, ref_ca)} | "
                     f"{fmt_minutes(r.wall_s)} | {r.notes} |")
    lines += ["", "Goal per attack:", ""]
    for attack in dict.fromkeys(r.arm.attack for r in results):
        met = [_LABEL[r.arm.defense] for r in results
               if r.arm.attack == attack and r.arm.defense != "none" and goal_met(r, ref_ca)]
        lines.append(f"* {_LABEL[attack]}: " + (f"met by {', '.join(met)}." if met else "not met by any defense run."))
    lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the experiment for parsed ``args`` (``argv`` is quoted on the results page): exit 0 on success, 2 on usage/configuration errors, 1 when an arm fails."""
    from rich.console import Console

    from bastionfl.tasks.data import DatasetError, load_image_dataset

    prog = "bastionfl experiment image"
    console = Console()
    try:
        if not args.quick and not args.data_dir:
            raise ExperimentError("--data-dir is required: the folder with the Fashion-MNIST IDX files")
        if not args.quick and not Path(args.data_dir).is_dir():
            raise ExperimentError(f"--data-dir {args.data_dir}: no such folder")
        seeds = parse_seeds(args)
        base = base_config(args, seeds[0])
        arms = select_arms(args.only, getattr(args, "he_rows", False))
        repair_set = parse_repair_set(getattr(args, "repair_set", None))
        _check_repair_set(base, arms, repair_set)
        load_image_dataset(base.task.dataset, base.task.data_dir)  # fail fast, before any engine starts
    except (ExperimentError, ConfigError, DatasetError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2

    # the run folder is a local path; keep it out of the results page
    shown = ["<run folder>" if i and argv[i - 1] == "--work-dir" else a for i, a in enumerate(argv)]
    command = f"{prog} {shlex.join(shown)}".strip()
    by_attack = {k: [a for a in arms if a.attack == k] for k in dict.fromkeys(a.attack for a in arms)}
    shared_prefix = base.federation.rounds > 1 and any(a.defense in REPAIRS and not a.he for a in arms)
    total_rounds = base.federation.rounds  # the reference
    for attack_arms in by_attack.values():
        repairs = sum(1 for a in attack_arms if a.defense in REPAIRS and not a.he)
        if repairs and base.federation.rounds > 1:
            others = sum(1 for a in attack_arms if a.he or a.defense not in ("none", *REPAIRS))
            total_rounds += base.federation.rounds * (1 + others) + repairs
        else:
            total_rounds += base.federation.rounds * len(attack_arms)
    console.print(f"[bold]BastionFL image-backdoor grid[/bold]: {len(arms)} rows + no-attack reference, "
                  f"{base.task.dataset}/{base.task.model}, {base.federation.num_clients} clients ({base.attack.poisoned_clients} poisoned), "
                  f"{base.federation.rounds} rounds, secure aggregation {base.secure.mode}, seeds "
                  f"{', '.join(map(str, seeds))}")
    total_rounds *= len(seeds)
    tmp = None if args.work_dir else tempfile.TemporaryDirectory(prefix="bastionfl-grid-")
    work = args.work_dir or Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    display = GridDisplay(console, total_rounds, round_extra=_round_extra)
    start = time.perf_counter()
    display.start()
    per_seed: list[tuple[ArmResult, list[ArmResult]]] = []
    try:
        for seed in seeds:
            base = base_config(args, seed)
            runner = _Runner(base, work / f"seed-{seed}" if len(seeds) > 1 else work, display, repair_set)
            results: list[ArmResult] = []
            for attack, attack_arms in by_attack.items():  # attacks first: a backdoor that does not take shows early
                results += runner.run_attack(attack, attack_arms)
            per_seed.append((runner.run_full(Arm("none", "none")), results))
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
    if len(seeds) == 1:
        text = render_results(base, per_seed[0][0], per_seed[0][1], command=command, total_wall_s=total,
                              load=os.getloadavg(), cores=os.cpu_count() or 1, shared_prefix=shared_prefix)
    else:
        from bastionfl.simulations.experiment_image_seeds import render_seeds

        text = render_seeds(base, per_seed, seeds, command=command, total_wall_s=total, load=os.getloadavg(),
                            cores=os.cpu_count() or 1)
    publish_results(console, args.results, text, total)
    return 0
