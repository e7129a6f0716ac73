"""Server-side repair of the aggregated global model with a small clean set: RNP, NAD, fine-tuning, fine-pruning,
adversarial unlearning (I-BAU-style), or for text models BTU's clean tune.

Runs after aggregation (after fusion under secure aggregation: the server repairs only the aggregate it may see).
Which function repairs is chosen once from ``REPAIRS`` by (task kind, repair). The keep-masks of the pruning repairs
(RNP, fine-pruning) are merged across rounds and re-applied (``MASK_APPLIERS``) to every new global model, so a
channel pruned once stays pruned even though clients keep training it.

A repair never harms (``repair_guard``): the server keeps ``repair_val_fraction`` of its clean set to validate; a
repaired model whose accuracy there falls more than ``repair_max_ca_drop`` points below the unrepaired one is
repaired again at a tenth of the learning rate, and if that fails too the unrepaired model goes on. The outcome
(accepted, accepted-gentler, discarded) is in the round's metrics and on its summary line.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from bastionfl.config import Repair, RunConfig, TaskKind
from bastionfl.protocol import Stage
from bastionfl.server.repair_guard import guarded_repair
from bastionfl.server.workflow import RoundFailed, RoundState, ServerContext
from bastionfl.tasks.base import Task

__all__ = ["RepairStage", "RepairState", "RepairSchedule", "REPAIRS", "MASK_APPLIERS", "apply_saved_mask",
           "clean_tune_schedule"]

log = logging.getLogger("bastionfl.server")

# (task, model, clean set, seed, saved keep-mask[, schedule]) -> (repaired copy, report, new keep-mask or None)
RepairFn = Callable[..., tuple[nn.Module, dict[str, Any], dict[str, torch.Tensor] | None]]


@dataclass(frozen=True)
class RepairSchedule:
    """A repair's lr, epochs and batch size (0: the repair's own default), a factor on the lr (smaller when a
    repair is retried gentler), and the validation part RNP chooses its pruning on (with its allowed accuracy drop)."""

    lr: float = 0.0
    epochs: int = 0
    batch_size: int = 0
    lr_scale: float = 1.0
    holdout: Any = None
    max_drop: float = 0.02
    rnp: dict[str, Any] = field(default_factory=dict)  # RNPConfig fields set by the rnp_* keys
    unlearn: dict[str, Any] = field(default_factory=dict)  # UnlearnConfig fields set by the unlearn_* keys
    fineprune: dict[str, Any] = field(default_factory=dict)  # FinePruneConfig fields set by the fineprune_* keys

    @classmethod
    def of(cls, cfg: RunConfig, holdout: Any = None, lr_scale: float = 1.0) -> "RepairSchedule":
        d = cfg.defense
        rnp = {"prune_by": d.rnp_prune_by, "max_threshold": d.rnp_max_threshold,
               "max_pruned_fraction": d.rnp_max_pruned_fraction, "unlearn_stop_acc": d.rnp_unlearn_stop_acc,
               "unlearn_max_epochs": d.rnp_unlearn_max_epochs, "recover_lr": d.rnp_recover_lr}
        unlearn = {"outer_rounds": d.unlearn_rounds, "pgd_steps": d.unlearn_pgd_steps, "eps": d.unlearn_eps,
                   "norm": d.unlearn_norm, "search": d.unlearn_search}
        fineprune = {"max_drop": d.fineprune_max_drop, "max_fraction": d.fineprune_max_fraction}
        return cls(d.repair_lr, d.repair_epochs, d.repair_batch_size, lr_scale, holdout, d.repair_max_ca_drop / 100,
                   rnp, unlearn, fineprune)

    def finetune(self):  # noqa: ANN201 - defenses.FinetuneConfig
        """The fine-tuning recipe with this schedule's overrides."""
        from bastionfl.defenses.finetune import FinetuneConfig

        base = FinetuneConfig()
        epochs = self.epochs or base.epochs
        return FinetuneConfig(epochs=epochs, lr=(self.lr or base.lr) * self.lr_scale,
                              lr_drop_epoch=base.lr_drop_epoch if not self.epochs else max(1, epochs // 2),
                              batch_size=self.batch_size or base.batch_size)


@dataclass
class RepairState:
    """The pruning repair's merged keep-mask (RNP or fine-pruning; a pruned channel stays pruned), checkpointed."""

    checkpoint_name: ClassVar[str] = "rnp_mask"
    mask: dict[str, list[bool]] = field(default_factory=dict)

    def tensors(self) -> dict[str, torch.Tensor] | None:
        return {n: torch.tensor(v, dtype=torch.bool) for n, v in self.mask.items()} if self.mask else None

    def to_checkpoint(self) -> dict[str, Any]:
        return dict(self.mask)

    def restore(self, saved: dict[str, Any]) -> None:
        self.mask = {str(k): list(v) for k, v in saved.items()}


def clean_tune_schedule(cfg: RunConfig) -> tuple[float, int, str]:
    """The text clean tune's lr and batch size (``repair_*``, else the run's own) and a phrase for results pages."""
    d = cfg.defense
    lr, batch = d.repair_lr or cfg.task.lr, d.repair_batch_size or cfg.task.batch_size
    return lr, batch, f"lr {lr}{' decaying linearly to 0' if d.repair_lr_decay else ''}, batch {batch}"


def _rnp(task: Task, model: nn.Module, clean: Any, seed: int, saved: dict[str, torch.Tensor] | None,
         schedule: RepairSchedule | None = None):  # noqa: ANN202
    from bastionfl.defenses.rnp import RNPConfig, apply_rnp_mask, rnp_repair

    s = schedule or RepairSchedule()
    base = RNPConfig()
    cfg = dataclasses.replace(base, **s.rnp, unlearn_lr=(s.lr or base.unlearn_lr) * s.lr_scale,
                              recover_epochs=s.epochs or base.recover_epochs, batch_size=s.batch_size or base.batch_size,
                              acc_tolerance=s.max_drop)
    if saved:
        apply_rnp_mask(model, saved)
    repaired, mask, report = rnp_repair(model, *clean, cfg=cfg, seed=seed, holdout=s.holdout)
    merged = {k: (saved[k] & v if saved else v) for k, v in mask.items()}
    apply_rnp_mask(repaired, merged)
    report["pruned_channels_total"] = int(sum(int((~v).sum()) for v in merged.values()))
    return repaired, report, merged


def _nad(task: Task, model: nn.Module, clean: Any, seed: int, saved: dict[str, torch.Tensor] | None,
         schedule: RepairSchedule | None = None):  # noqa: ANN202
    from bastionfl.defenses.nad import NADConfig, nad_repair

    s = schedule or RepairSchedule()
    base = NADConfig()
    epochs = s.epochs or base.epochs
    cfg = dataclasses.replace(base, teacher=s.finetune(), epochs=epochs, lr=(s.lr or base.lr) * s.lr_scale,
                              lr_drop_epoch=base.lr_drop_epoch if not s.epochs else max(1, epochs // 5),
                              batch_size=s.batch_size or base.batch_size)
    return (*nad_repair(model, *clean, cfg=cfg, seed=seed), None)


def _finetune(task: Task, model: nn.Module, clean: Any, seed: int,
              saved: dict[str, torch.Tensor] | None, schedule: RepairSchedule | None = None):  # noqa: ANN202
    from bastionfl.defenses.finetune import finetune_repair

    return (*finetune_repair(model, *clean, cfg=(schedule or RepairSchedule()).finetune(), seed=seed), None)


def _fineprune(task: Task, model: nn.Module, clean: Any, seed: int, saved: dict[str, torch.Tensor] | None,
               schedule: RepairSchedule | None = None):  # noqa: ANN202
    from bastionfl.defenses.fineprune import FinePruneConfig, fineprune_repair

    s = schedule or RepairSchedule()
    cfg = dataclasses.replace(FinePruneConfig(), **s.fineprune, finetune=s.finetune())
    repaired, mask, report = fineprune_repair(model, *clean, cfg=cfg, seed=seed, pruned=saved)
    report["pruned_channels_total"] = report["pruned_channels"]  # the saved mask's channels are among them
    return repaired, report, mask


def _unlearn(task: Task, model: nn.Module, clean: Any, seed: int,
             saved: dict[str, torch.Tensor] | None, schedule: RepairSchedule | None = None):  # noqa: ANN202
    from bastionfl.defenses.unlearn import UnlearnConfig, unlearn_repair

    s = schedule or RepairSchedule()
    base = UnlearnConfig()
    cfg = dataclasses.replace(base, **s.unlearn, lr=(s.lr or base.lr) * s.lr_scale, epochs=s.epochs or base.epochs,
                              batch_size=s.batch_size or base.batch_size)
    return (*unlearn_repair(model, *clean, cfg=cfg, seed=seed), None)


def _text_clean_tune(task: Task, model: nn.Module, clean: Any, seed: int,
                     saved: dict[str, torch.Tensor] | None, schedule: RepairSchedule | None = None):  # noqa: ANN202
    """BTU's clean tune: one AdamW epoch on the clean sentences (the paper tunes at its training lr)."""
    from bastionfl.defenses.btu import btu_clean_tune

    cfg = task.cfg
    tuned = copy.deepcopy(model)
    lr, batch, _ = clean_tune_schedule(cfg)
    lr *= (schedule or RepairSchedule()).lr_scale
    report = btu_clean_tune(tuned, task.tokenizer, clean[0], clean[1], epochs=1, lr=lr,  # type: ignore[attr-defined]
                            batch_size=batch, max_len=cfg.task.max_len, seed=seed, decay=cfg.defense.repair_lr_decay)
    return tuned, report, None


REPAIRS: dict[tuple[TaskKind, Repair], RepairFn] = {
    (TaskKind.IMAGE, Repair.RNP): _rnp,
    (TaskKind.IMAGE, Repair.NAD): _nad,
    (TaskKind.IMAGE, Repair.FINETUNE): _finetune,
    (TaskKind.IMAGE, Repair.UNLEARN): _unlearn,
    (TaskKind.IMAGE, Repair.FINEPRUNE): _fineprune,
    (TaskKind.TEXT, Repair.FINETUNE): _text_clean_tune,
}


def _apply_rnp(model: nn.Module, mask: dict[str, torch.Tensor]) -> nn.Module:
    from bastionfl.defenses.rnp import apply_rnp_mask

    return apply_rnp_mask(model, mask)


def _apply_fineprune(model: nn.Module, mask: dict[str, torch.Tensor]) -> nn.Module:
    from bastionfl.defenses.fineprune import apply_fineprune_mask

    return apply_fineprune_mask(model, mask)


# how each pruning repair re-applies its saved keep-mask to a new global model (in place)
MASK_APPLIERS: dict[Repair, Callable[[nn.Module, dict[str, torch.Tensor]], nn.Module]] = {
    Repair.RNP: _apply_rnp,
    Repair.FINEPRUNE: _apply_fineprune,
}


def apply_saved_mask(repair: Repair, model: nn.Module, saved: dict[str, torch.Tensor] | None) -> nn.Module:
    """Re-apply the saved keep-mask of ``repair`` to ``model`` in place (nothing when none is saved)."""
    if saved:
        applier = MASK_APPLIERS.get(repair)
        if applier is None:
            raise RoundFailed(f"a saved pruning mask, but repair {repair} does not prune")
        applier(model, saved)
    return model


class RepairStage:
    """Repair ``rs.new_state`` with the configured repair; report what it did in the round's metrics.

    With ``repair_last_rounds = K > 0`` only the last K rounds repair; earlier rounds only re-apply the saved
    pruning masks of RNP or fine-pruning (so a pruned channel stays pruned).
    """

    name = Stage.REPAIR

    def run(self, ctx: ServerContext, rs: RoundState) -> None:
        if rs.new_state is None:
            raise RoundFailed("repair needs an aggregated model")
        clean = ctx.task.clean_set()
        if clean is None:
            raise RoundFailed("repair needs a clean set: set clean_set_size")
        state = ctx.states.get(RepairState)
        saved = state.tensors()
        k = ctx.cfg.defense.repair_last_rounds
        model = ctx.new_model()
        model.load_state_dict(rs.new_state)
        if k > 0 and rs.server_round <= ctx.cfg.federation.rounds - k:
            if saved:
                apply_saved_mask(ctx.cfg.defense.repair, model, saved)
                rs.new_state = {n: v.detach().clone() for n, v in model.state_dict().items()}
            return
        repair = REPAIRS.get((ctx.task.kind, ctx.cfg.defense.repair))
        if repair is None:
            raise RoundFailed(f"no repair {ctx.cfg.defense.repair!r} for {ctx.task.kind} models")
        apply_saved_mask(ctx.cfg.defense.repair, model, saved)  # the unrepaired model keeps earlier rounds' pruning
        seed = ctx.cfg.federation.seed * 1_000_003 + rs.server_round
        start = time.perf_counter()
        result = guarded_repair(ctx.task, ctx.cfg, repair, model, clean, seed, saved)
        if result.mask is not None:
            state.mask = {k: v.tolist() for k, v in result.mask.items()}
        rs.new_state = {k: v.detach().clone() for k, v in result.model.state_dict().items()}
        rs.metrics["repair"] = {k: v for k, v in result.report.items() if isinstance(v, (int, float, str, bool))}
        rs.metrics.update(result.metrics())
        rs.metrics["repair_s"] = time.perf_counter() - start
        if result.outcome != "accepted":
            rs.events.append(result.describe())
            log.warning("round %d: %s", rs.server_round, result.describe())
