"""A server repair that never harms: split the clean set, repair on one part, accept only what the other part allows.

The server's clean set is split once per run (seeded) into a repair part and a validation part
(``repair_val_fraction``). A repaired model is accepted when its accuracy on the validation part is at most
``repair_max_ca_drop`` points below the unrepaired model's; otherwise the repair runs again at half the learning rate
(``GENTLER_LR_SCALE``; "accepted-gentler" if that passes) and, failing that, is discarded: the unrepaired aggregate
goes on (and a pruning repair's mask, RNP's or fine-pruning's, is left as it was). With ``repair_val_fraction = 0``
the whole clean set repairs and nothing is checked.

The check sees a drop only down to one validation image: with V images its resolution is 100 / V points, so a
validation part of at least 100 / ``repair_max_ca_drop`` images resolves the allowed drop; a configuration with a
smaller one is refused (``config.checks.val_images_needed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.tasks.base import ClientData, Task

__all__ = ["GuardResult", "split_clean", "guarded_repair", "GENTLER_LR_SCALE"]

GENTLER_LR_SCALE = 0.1  # the retry's learning rate, relative to the first attempt


def split_clean(clean: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """(repair part, validation part) of a clean set ``(inputs, labels)`` of tensors or lists; seeded."""
    inputs, labels = clean
    n = len(labels)
    k = int(round(fraction * n))
    if k == 0:
        return clean, None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()

    def pick(seq: Any, idx: list[int]) -> Any:
        return seq[torch.tensor(idx, dtype=torch.long)] if isinstance(seq, torch.Tensor) else [seq[i] for i in idx]

    val, rep = order[:k], order[k:]
    return (pick(inputs, rep), pick(labels, rep)), (pick(inputs, val), pick(labels, val))


@dataclass
class GuardResult:
    """What the guarded repair released and why."""

    model: nn.Module
    report: dict[str, Any]
    mask: dict[str, torch.Tensor] | None
    outcome: str  # accepted | accepted-gentler | discarded | unchecked
    val_size: int = 0
    acc_before: float | None = None
    acc_after: float | None = None  # of the released model
    attempts: int = 1

    def metrics(self) -> dict[str, Any]:
        """The round's metrics of the guard (plain types)."""
        out: dict[str, Any] = {"repair_outcome": self.outcome, "repair_attempts": self.attempts,
                               "repair_val_size": self.val_size}
        if self.acc_before is not None:
            out.update(repair_val_acc_before=self.acc_before, repair_val_acc_after=self.acc_after)
        return out

    def describe(self) -> str:
        """One line for the round's events and log."""
        if self.acc_before is None:
            return f"repair {self.outcome}"
        return (f"repair {self.outcome}: validation accuracy {100 * self.acc_before:.1f}% before, "
                f"{100 * (self.acc_after or 0.0):.1f}% released ({self.val_size} images, {self.attempts} attempt(s))")


def _val_accuracy(task: Task, model: nn.Module, val: Any) -> float:
    return float(task.evaluate_on(model, ClientData(val[0], val[1]))[1])


def guarded_repair(task: Task, cfg: RunConfig, repair: Callable[..., Any], model: nn.Module, clean: Any, seed: int,
                   saved: dict[str, torch.Tensor] | None) -> GuardResult:
    """Run ``repair`` on the repair part; accept, retry gentler, or discard by the validation part (module doc)."""
    from bastionfl.server.repair import RepairSchedule

    d = cfg.defense
    part, val = split_clean(clean, d.repair_val_fraction, cfg.federation.seed * 7919 + 17)
    if val is None:
        repaired, report, mask = repair(task, model, part, seed, saved, RepairSchedule.of(cfg))
        return GuardResult(repaired, report, mask, "unchecked")
    before = _val_accuracy(task, model, val)
    allowed = d.repair_max_ca_drop / 100
    report: dict[str, Any] = {}
    tried: dict[str, float] = {}
    for attempt, scale in enumerate((1.0, GENTLER_LR_SCALE), start=1):
        repaired, report, mask = repair(task, model, part, seed, saved, RepairSchedule.of(cfg, val, scale))
        after = _val_accuracy(task, repaired, val)
        tried[f"attempt{attempt}_val_acc"] = after
        if before - after <= allowed + 1e-9:
            outcome = "accepted" if attempt == 1 else "accepted-gentler"
            return GuardResult(repaired, {**report, **tried}, mask, outcome, len(val[1]), before, after, attempt)
    return GuardResult(model, {**report, **tried}, saved, "discarded", len(val[1]), before, before, 2)
