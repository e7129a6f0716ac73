"""The staged round workflow: a round is a list of named stages run in order over one RoundState.

Plaintext FedAvg is ``sample -> train -> aggregate -> evaluate``; secure aggregation, admission and repair insert
their own stages into the same list, so every mode shares the rest of the code. State that outlives a round lives
in typed objects, one per owning stage family, kept by ``StageStates`` (Flower's ``WorkflowState`` is the model):
a stage asks for its own state by class, never by a string key.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from flwr.app import Message
from flwr.serverapp import Grid

from bastionfl.config import RunConfig
from bastionfl.errors import BastionFLError
from bastionfl.server.messaging import ByteCounter, Messenger
from bastionfl.tasks.base import Task

__all__ = ["ServerContext", "RoundState", "Stage", "RoundWorkflow", "RoundFailed", "StageStates", "Checkpointable"]

log = logging.getLogger("bastionfl.server")
S = TypeVar("S")


class RoundFailed(BastionFLError):
    """A stage could not complete; the round's global model is left unchanged.

    ``retry=False``: another attempt cannot succeed (members signed the round's transcript, and a member never
    uploads the same round twice), so the round is skipped rather than retried."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@runtime_checkable
class Checkpointable(Protocol):
    """A stage state that is written into every checkpoint and read back on ``--resume``."""

    checkpoint_name: ClassVar[str]

    def to_checkpoint(self) -> dict[str, Any]: ...

    def restore(self, saved: dict[str, Any]) -> None: ...


class StageStates:
    """The run-long state of the stages: one object per state class, created on first use."""

    def __init__(self) -> None:
        self._by_type: dict[type, object] = {}

    def get(self, cls: type[S]) -> S:
        """The run's instance of ``cls`` (made with ``cls()`` the first time it is asked for)."""
        obj = self._by_type.get(cls)
        if obj is None:
            obj = cls()
            self._by_type[cls] = obj
        return obj  # type: ignore[return-value]

    def checkpoint(self) -> dict[str, dict[str, Any]]:
        """What the checkpoint keeps of every checkpointable state."""
        return {o.checkpoint_name: o.to_checkpoint() for o in self._by_type.values() if isinstance(o, Checkpointable)}

    def restore(self, saved: dict[str, Any], classes: list[type]) -> None:
        """Read back the states of ``classes`` (checkpointable state types) from a checkpoint's record."""
        for cls in classes:
            name = getattr(cls, "checkpoint_name")
            if name in saved:
                self.get(cls).restore(saved[name])


@dataclass
class ServerContext:
    """What lives for the whole run: the grid, the configuration, the task, the stages' typed states."""

    grid: Grid
    cfg: RunConfig
    task: Task
    out_dir: Path = Path(".")
    run_id: int = 0
    states: StageStates = field(default_factory=StageStates)
    # each wrapper may decorate the round's Messenger (admission adds per-message MACs this way)
    messenger_wrappers: list[Callable[[Messenger, "RoundState"], Messenger]] = field(default_factory=list)

    def new_model(self) -> torch.nn.Module:
        """A fresh (untrained) model of the run's task."""
        return self.task.new_model()


@dataclass
class RoundState:
    """What one round knows as it moves through the stages."""

    server_round: int
    global_state: dict[str, torch.Tensor]
    bytes: ByteCounter = field(default_factory=ByteCounter)
    node_ids: list[int] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)
    new_state: dict[str, torch.Tensor] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    stage_times: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    def messenger(self, ctx: ServerContext, timeout_s: float | None = None) -> Messenger:
        """The round's message channel (waiting ``timeout_s``, default the stage timeout), with every wrapper."""
        wait = ctx.cfg.federation.stage_timeout_s if timeout_s is None else timeout_s
        messenger = Messenger(ctx.grid, wait, self.bytes)
        for wrap in ctx.messenger_wrappers:
            messenger = wrap(messenger, self)
        return messenger


class Stage(Protocol):
    """One step of a round; reads and writes the RoundState, raises RoundFailed when it cannot go on."""

    name: str

    def run(self, ctx: ServerContext, rs: RoundState) -> None: ...


class RoundWorkflow:
    """Runs its stages in order and times each one."""

    def __init__(self, stages: list[Stage]) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages = stages

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def insert_before(self, name: str, stage: Stage) -> None:
        """Add ``stage`` before the stage called ``name`` (how later features hook in)."""
        self.stages.insert(self.stage_names.index(name), stage)

    def run_round(self, ctx: ServerContext, rs: RoundState) -> None:
        for stage in self.stages:
            start = time.perf_counter()
            try:
                stage.run(ctx, rs)
            finally:
                rs.stage_times[stage.name] = rs.stage_times.get(stage.name, 0.0) + time.perf_counter() - start
