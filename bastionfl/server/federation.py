"""The federation loop: rounds of the staged workflow, with checkpoints, metrics and resume."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from flwr.common.logger import log as flwr_log
from flwr.serverapp import Grid

from bastionfl.alloc import trim_freed_memory
from bastionfl.config import Auth, Repair, RunConfig, SecureAggregation
from bastionfl.errors import BastionFLError
from bastionfl.server.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from bastionfl.server.report import plot_accuracy, write_metrics
from bastionfl.server.stages import AggregateFedAvg, EvaluateCentral, Participation, SampleNodes, TrainPlain
from bastionfl.server.workflow import RoundFailed, RoundState, RoundWorkflow, ServerContext
from bastionfl.tasks.registry import build_task

__all__ = ["RunObserver", "LogObserver", "FederationError", "build_workflow", "run_federation"]

log = logging.getLogger("bastionfl.server")
MAX_ROUND_ATTEMPTS = 3


class FederationError(BastionFLError):
    """The run cannot continue (every attempt at a round failed, or resume state does not fit)."""


class RunObserver(Protocol):
    """Receives progress: the CLI draws a progress bar, ``flwr run`` logs lines."""

    def on_start(self, first_round: int, total_rounds: int) -> None: ...

    def on_round(self, entry: dict[str, Any]) -> None: ...


class LogObserver:
    """Progress as log lines through Flower's logger (what ``flwr run --stream`` shows)."""

    def on_start(self, first_round: int, total_rounds: int) -> None:
        flwr_log(logging.INFO, "BastionFL: starting at round %d of %d", first_round, total_rounds)

    def on_round(self, entry: dict[str, Any]) -> None:
        flwr_log(logging.INFO, "BastionFL round %d: accuracy %.4f loss %.4f (%.1f s, up %d B, down %d B)%s",
                 entry["round"], entry["accuracy"], entry["loss"], entry["time_s"], entry["bytes_up"],
                 entry["bytes_down"], (f", repair {entry['repair_outcome']}" if "repair_outcome" in entry else "")
                 + (f", SKIPPED (model unchanged): {entry['skipped']}" if "skipped" in entry else ""))


def build_workflow(cfg: RunConfig) -> RoundWorkflow:
    """The stage list for this configuration: plaintext FedAvg, with admission, HE and repair stages as configured."""
    stages: list[Any] = [SampleNodes()]
    if cfg.admission.mode is Auth.PSEUDONYM:  # admission first: only admitted nodes are sampled
        from bastionfl.server.admission import AdmissionStage

        stages = [AdmissionStage(), SampleNodes(after_admission=True)]
    if cfg.secure.mode is SecureAggregation.XMKCKKS:
        from bastionfl.server.secure import secure_stages

        stages += secure_stages(cfg)
    else:
        stages += [TrainPlain(), AggregateFedAvg()]
    from bastionfl.server.aggregate_check import CheckAggregate

    stages.append(CheckAggregate())  # an invalid sum (NaN, negative variance) is refused before anything uses it
    d = cfg.defense
    if d.aggregate_clip > 0 or d.aggregate_clip_adaptive > 0 or d.aggregate_noise > 0:
        from bastionfl.server.aggregate_guard import ClipAggregate

        stages.append(ClipAggregate())
    if cfg.defense.repair is not Repair.NONE:
        from bastionfl.server.repair import RepairStage

        stages.append(RepairStage())
    stages.append(EvaluateCentral())
    return RoundWorkflow(stages)


def _skip_round(ctx: ServerContext, rs: RoundState, workflow: RoundWorkflow, reason: str) -> None:
    """A round that cannot be retried keeps the previous global model; it is evaluated and reported as skipped."""
    rs.new_state = None
    rs.metrics["skipped"] = reason
    evaluate = [s for s in workflow.stages if isinstance(s, EvaluateCentral)]
    for stage in evaluate:
        stage.run(ctx, rs)


def _entry(rs: RoundState, elapsed: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "round": rs.server_round,
        "accuracy": float(rs.metrics["accuracy"]),
        "loss": float(rs.metrics["loss"]),
        "time_s": round(elapsed, 4),
        "bytes_up": rs.bytes.total_up,
        "bytes_down": rs.bytes.total_down,
        "clients": len(rs.node_ids),
        "stages": {k: round(v, 4) for k, v in rs.stage_times.items()},
        "stage_bytes": rs.bytes.by_stage,
        "client_bytes": {str(n): {"up": rs.bytes.up.get(n, 0), "down": rs.bytes.down.get(n, 0),
                                  "stages": rs.bytes.by_node_stage.get(n, {})} for n in sorted(rs.bytes.by_node_stage)},
    }
    entry.update({k: v for k, v in rs.metrics.items() if k not in ("accuracy", "loss")})
    if rs.events:
        entry["events"] = list(rs.events)
    return entry


def run_federation(
    grid: Grid, cfg: RunConfig, out_dir: Path, *, resume: bool = False, observer: RunObserver | None = None,
    stop_after: int | None = None, run_id: int = 0,
) -> list[dict[str, Any]]:
    """Run rounds until ``cfg.rounds`` (or ``stop_after``), checkpointing each; returns every round's metrics."""
    observer = observer or LogObserver()
    out_dir.mkdir(parents=True, exist_ok=True)
    from bastionfl.server.repair import RepairState

    ctx = ServerContext(grid=grid, cfg=cfg, task=build_task(cfg), out_dir=out_dir, run_id=run_id)
    history: list[dict[str, Any]] = []
    if resume and (out_dir / CHECKPOINT_NAME).exists():
        ck = load_checkpoint(out_dir)
        global_state, history, first = ck["model"], list(ck["metrics"]), int(ck["round"]) + 1
        from bastionfl.server.aggregate_guard import ClipState

        ctx.states.restore(dict(ck.get("extra", {}).get("run_state", {})), [Participation, RepairState, ClipState])
    else:
        torch.manual_seed(cfg.federation.seed)
        global_state = {k: v.detach().clone() for k, v in ctx.new_model().state_dict().items()}
        first = 1
    workflow = build_workflow(cfg)
    rounds = cfg.federation.rounds
    last = rounds if stop_after is None else min(rounds, stop_after)
    observer.on_start(first, rounds)
    for server_round in range(first, last + 1):
        start = time.perf_counter()
        carried: RoundState | None = None
        for attempt in range(1, MAX_ROUND_ATTEMPTS + 1):
            rs = RoundState(server_round, global_state)
            if carried is not None:  # a failed attempt's traffic and events still count
                rs.bytes, rs.events = carried.bytes, carried.events
                rs.metrics.update({k: v for k, v in carried.metrics.items() if k == "dropouts"})
            try:
                workflow.run_round(ctx, rs)
                break
            except RoundFailed as exc:
                log.warning("round %d attempt %d failed: %s", server_round, attempt, exc)
                rs.events.append(f"attempt {attempt} failed: {exc}")
                carried = rs
                if not exc.retry:
                    _skip_round(ctx, rs, workflow, str(exc))
                    break
                if attempt == MAX_ROUND_ATTEMPTS:
                    write_metrics(out_dir, cfg.to_dict(), history, status=f"failed at round {server_round}")
                    raise FederationError(f"round {server_round} failed {attempt} times: {exc}") from None
        entry = _entry(rs, time.perf_counter() - start)
        if attempt > 1:
            entry["attempts"] = attempt
        entry["restarts"] = attempt - 1
        entry.setdefault("dropouts", {})
        history.append(entry)
        if rs.new_state is not None:
            global_state = rs.new_state
        del rs, carried
        trim_freed_memory(f"round {server_round}")  # the round's uploads, aggregate and shares are freed
        save_checkpoint(out_dir, server_round, global_state, history, cfg.to_dict(),
                        extra={"run_state": ctx.states.checkpoint()})
        write_metrics(out_dir, cfg.to_dict(), history, status="running")
        observer.on_round(entry)
    status = "completed" if last == rounds else f"stopped after round {last}"
    write_metrics(out_dir, cfg.to_dict(), history, status=status)
    if history:
        plot_accuracy(out_dir, history, f"BastionFL: {cfg.task.dataset}, {cfg.task.model}, "
                                        f"{cfg.federation.num_clients} clients")
    return history
