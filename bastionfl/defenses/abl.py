"""ABL — Anti-Backdoor Learning (Li et al., NeurIPS 2021, arXiv 2110.11571) in local training, across rounds.

Follows the official ``bboylyg/ABL`` code: isolation rounds train with the Flooding loss ``|l - g| + g`` (or LGA
``sign(l - g) * l``), g = 0.5, on the batch-mean CE; then per-example CE (batched, eval mode) is sorted ascending and
the lowest-loss examples are isolated; later rounds train with CE on the rest and unlearn by gradient ascent on the
isolated examples (official ``backdoor_unlearning.py`` ascends only; the descent on the rest is the federated
local training this client does anyway).

Federated change (BastionFL): instead of a fixed 1 % per client, which would ascend the easiest examples of a benign
client, the isolated set is chosen by the *fast-learned outlier rule*, scored in a round with the per-example CE
under the received global model (l0, with its predicted classes p0) and after the round's local epochs (l1):

    C   = {i : l0_i >= learned_from and l1_i <= learned_to}       (defaults 1.0 and 0.1: fit within one round)
    y*  = the most frequent label in C; C* = {i in C : y_i = y*}
    isolate C* (lowest l1 first, at most max_isolation_ratio * n) iff
        |C| >= max(min_isolated, min_outlier_fraction * n)  and  |C*| / |C| >= label_purity  and
        the most frequent class of p0 over C* holds at most max(max_prediction_share, that share over all n);
    otherwise isolate nothing (defaults: min_isolated 5, min_outlier_fraction 0.02, label_purity 0.8, share 0.5).

i.e. isolate only when a mass of examples went from misfit to near-zero loss within one round, that mass carries one
label, and the global model sees those images as many different classes: the ABL premise (backdoor examples are
learned much faster than clean ones, and all carry the target label) measured directly, and all-to-one poison drawn
from every class. The spread gate rejects a class the global model got wrong (its images are predicted as one or two
other classes) being refit in one round; a received model that predicts one class for everything (untrained)
leaves it open. Low final loss alone is not used: on Fashion-MNIST whole easy classes
(trouser, sandal) reach lower loss than the poison under flooding (see docs/defenses.md).

Timing: the rule is scored in every isolation round from round 2 to ``isolation_rounds`` and isolates at the first
round where it fires (in a federation the global model learns a diluted trigger late, so the round in which a client
fits it is not known in advance). A client that has isolated keeps scoring the rule in its later rounds on the
examples of its isolated set's label, one example sufficing, and adds what fires (recall: late learners of the
trigger; false positives: target-class images its own ascent damaged and CE refits); a client whose isolation rounds end without a firing trains with plain CE afterwards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bastionfl.defenses._common import (
    accuracy,
    check_dataset,
    check_positive,
    batches,
    ce_loss,
    run_epoch,
    sgd,
)

__all__ = ["ABLConfig", "ABLState", "abl_local_train", "flooding_loss", "lga_loss", "select_isolated"]

PHASES = ("isolation", "unlearning", "clean")


@dataclass(frozen=True)
class ABLConfig:
    """ABL settings; the isolation and unlearning defaults follow the official code (see docs/defenses.md)."""

    isolation_rounds: int = 2  # rounds trained with the bounded loss; the rule is scored in rounds 2..this (>= 2)
    loss: str = "flooding"  # "flooding" (official default) or "lga"
    gamma: float = 0.5
    learned_from: float = 1.0  # per-example CE at the start of the isolation round must be >= this
    learned_to: float = 0.1  # ... and <= this at its end
    label_purity: float = 0.8
    min_outlier_fraction: float = 0.02
    min_isolated: int = 5
    max_isolation_ratio: float = 0.2
    max_prediction_share: float = 0.5  # the global model's most frequent predicted class over C* (1.0: gate off)
    unlearn_lr: float = 5e-4  # official, hard-wired in backdoor_unlearning.py
    unlearn_epochs: int = 5  # cap of ascent epochs per round
    unlearn_stop_acc: float = 0.1  # stop ascending once the isolated set's accuracy (own labels) is <= this

    def __post_init__(self) -> None:
        if self.loss not in ("flooding", "lga"):
            raise ValueError(f"ABL loss must be 'flooding' or 'lga', got {self.loss!r}")
        if self.isolation_rounds < 2:
            raise ValueError("isolation_rounds must be >= 2 (the first round starts from an untrained model)")
        if not 0.0 < self.learned_to < self.learned_from:
            raise ValueError("need 0 < learned_to < learned_from")
        if not all(0.0 < v <= 1.0 for v in (self.label_purity, self.max_isolation_ratio, self.max_prediction_share)):
            raise ValueError("label_purity, max_isolation_ratio and max_prediction_share must be in (0, 1]")


@dataclass
class ABLState:
    """Per-client ABL state to persist between rounds (plain types only, see to_dict/from_dict)."""

    rounds_seen: int = 0
    phase: str = "isolation"
    isolated: list[int] = field(default_factory=list)
    num_examples: int = 0  # local set size at isolation; a different size later is an error
    decision: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-typed copy (ints, floats, str, lists) for a checkpoint or Flower's context state."""
        return {
            "rounds_seen": int(self.rounds_seen),
            "phase": str(self.phase),
            "isolated": [int(i) for i in self.isolated],
            "num_examples": int(self.num_examples),
            "decision": {k: float(v) for k, v in self.decision.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ABLState":
        """Inverse of to_dict; raises ValueError on a malformed state."""
        try:
            state = cls(
                rounds_seen=int(data["rounds_seen"]),
                phase=str(data["phase"]),
                isolated=[int(i) for i in data["isolated"]],
                num_examples=int(data["num_examples"]),
                decision={str(k): float(v) for k, v in dict(data.get("decision", {})).items()},
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed ABL state: {exc}") from None
        if state.phase not in PHASES or state.rounds_seen < 0:
            raise ValueError(f"malformed ABL state: phase {state.phase!r}, rounds_seen {state.rounds_seen}")
        return state


def flooding_loss(loss: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    """Flooding ``|l - gamma| + gamma`` on the batch-mean loss (official ABL default)."""
    return (loss - gamma).abs() + gamma


def lga_loss(loss: torch.Tensor, gamma: float = 0.5) -> torch.Tensor:
    """Local gradient ascent ``sign(l - gamma) * l`` on the batch-mean loss; same gradient as flooding."""
    return torch.sign(loss - gamma).detach() * loss


def select_isolated(
    loss_before: torch.Tensor, loss_after: torch.Tensor, labels: torch.Tensor, cfg: ABLConfig,
    predicted_before: torch.Tensor | None = None,
) -> tuple[list[int], dict[str, float]]:
    """Apply the fast-learned outlier rule (module docstring) to per-example losses; (indices, decision stats).

    ``predicted_before`` are the classes the received model predicts (None: the spread gate is skipped).
    """
    n = loss_after.shape[0]
    cand = torch.nonzero((loss_before >= cfg.learned_from) & (loss_after <= cfg.learned_to)).flatten()
    stats = {"outliers": float(len(cand)), "purity": 0.0, "dominant_label": -1.0, "prediction_share": 0.0}
    if len(cand) == 0:
        return [], stats
    counts = torch.bincount(labels[cand])
    top = int(counts.argmax())
    purity = float(counts[top]) / len(cand)
    chosen = cand[labels[cand] == top]
    share, bar = 0.0, 1.0
    if predicted_before is not None:
        share = float(torch.bincount(predicted_before[chosen]).max()) / len(chosen)
        bar = max(cfg.max_prediction_share, float(torch.bincount(predicted_before).max()) / n)
    stats.update(purity=purity, dominant_label=float(top), prediction_share=share)
    if (len(cand) < max(cfg.min_isolated, cfg.min_outlier_fraction * n) or purity < cfg.label_purity
            or share > bar):
        return [], stats
    chosen = chosen[torch.argsort(loss_after[chosen])][: int(cfg.max_isolation_ratio * n)]
    return sorted(int(i) for i in chosen), stats


def _loss_and_prediction(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example CE and predicted class in eval mode, batched (the rule's view of the received model)."""
    was_training = model.training
    model.eval()
    losses, preds = [], []
    with torch.no_grad():
        for idx in batches(images.shape[0], 512, None):
            logits = model(images[idx])
            losses.append(F.cross_entropy(logits, labels[idx], reduction="none"))
            preds.append(logits.argmax(1))
    model.train(was_training)
    return torch.cat(losses).cpu(), torch.cat(preds).cpu()


def _isolation_metrics(isolated: list[int], mask: torch.Tensor | None, n: int) -> dict[str, float]:
    """Precision and recall of the isolated set (precision 1.0 when nothing is isolated, recall 1.0 without poison)."""
    if mask is None:
        return {}
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != (n,):
        raise ValueError(f"ground_truth_poison_mask must have shape ({n},), got {tuple(mask.shape)}")
    hit = int(mask[torch.tensor(isolated, dtype=torch.long)].sum()) if isolated else 0
    poison = int(mask.sum())
    return {
        "isolated_poisoned": float(hit),
        "isolation_false_positives": float(len(isolated) - hit),
        "poisoned": float(poison),
        "isolation_precision": hit / len(isolated) if isolated else 1.0,
        "isolation_recall": hit / poison if poison else 1.0,
    }


def abl_local_train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    state: ABLState | None,
    cfg: ABLConfig | None = None,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 128,
    seed: int = 0,
    ground_truth_poison_mask: torch.Tensor | None = None,
) -> tuple[ABLState, dict[str, float]]:
    """One round of ABL local training, IN PLACE on ``model``; returns (new state, metrics of plain floats).

    Rounds 1..isolation_rounds: flooding/LGA for ``epochs``; from round 2 on each scores every example before and
    after its epochs and isolates by the fast-learned outlier rule at the first round where it fires. Later rounds:
    CE on the non-isolated examples for ``epochs``, the rule again on those (what fires joins the isolated set), then
    gradient ascent on the isolated ones (``unlearn_epochs`` cap, ``unlearn_lr``). ``images``/``labels`` must be the
    same local set, in the same order, every round. Deterministic given ``seed`` (e.g. a hash of client and round).
    """
    cfg = cfg or ABLConfig()
    state = ABLState() if state is None else ABLState.from_dict(state.to_dict())
    check_dataset(images, labels, "local training set")
    check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
    n = images.shape[0]
    if state.phase != "isolation" and state.num_examples != n:
        raise ValueError(f"ABL state was isolated on {state.num_examples} examples, this round has {n}")
    gen = torch.Generator().manual_seed(int(seed))
    opt = sgd(model.parameters(), lr)
    metrics: dict[str, float] = {}
    keep = torch.ones(n, dtype=torch.bool)
    keep[torch.tensor(state.isolated, dtype=torch.long)] = False
    scoring = state.phase == "unlearning" or (state.phase == "isolation" and state.rounds_seen >= 1)
    before = _loss_and_prediction(model, images, labels) if scoring else None

    if state.phase == "isolation":
        bounded = flooding_loss if cfg.loss == "flooding" else lga_loss

        def loss_fn(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return bounded(F.cross_entropy(m(x), y), cfg.gamma)

        for _ in range(epochs):
            metrics["train_loss"] = run_epoch(model, images, labels, opt, gen, batch_size=batch_size, loss_fn=loss_fn)
    else:
        for _ in range(epochs):
            metrics["train_loss"] = run_epoch(
                model, images[keep], labels[keep], opt, gen, batch_size=batch_size, loss_fn=ce_loss
            )
    if before is not None:
        state.num_examples = n
        _score(model, images, labels, before, keep, state, cfg)
        if state.phase == "isolation" and state.rounds_seen + 1 >= cfg.isolation_rounds:
            state.phase = "clean"
    if state.phase == "unlearning":
        iso = torch.tensor(state.isolated, dtype=torch.long)
        metrics.update(_unlearn(model, images[iso], labels[iso], cfg, gen, batch_size))

    state.rounds_seen += 1
    metrics.update(
        abl_round=float(state.rounds_seen),
        abl_phase=float(PHASES.index(state.phase)),
        isolated=float(len(state.isolated)),
        **{f"abl_{k}": v for k, v in state.decision.items()},
        **_isolation_metrics(state.isolated, ground_truth_poison_mask, n),
    )
    return state, metrics


def _score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, before: tuple[torch.Tensor, torch.Tensor],
           keep: torch.Tensor, state: ABLState, cfg: ABLConfig) -> None:
    """Apply the rule to the not yet isolated examples; what fires joins ``state.isolated`` (phase -> unlearning)."""
    after, _ = _loss_and_prediction(model, images, labels)
    idx = torch.nonzero(keep).flatten()
    if state.isolated:  # the target is known: its late learners join one by one
        target = int(torch.bincount(labels[torch.tensor(state.isolated, dtype=torch.long)]).argmax())
        idx = idx[labels[idx] == target]
        late = replace(cfg, min_isolated=1, min_outlier_fraction=0.0, max_prediction_share=1.0)
        chosen, _ = select_isolated(before[0][idx], after[idx], labels[idx], late)
    else:
        chosen, state.decision = select_isolated(before[0][idx], after[idx], labels[idx], cfg, before[1][idx])
    room = int(cfg.max_isolation_ratio * images.shape[0]) - len(state.isolated)
    new = [int(idx[i]) for i in chosen][: max(room, 0)]
    if new:
        state.isolated = sorted(set(state.isolated) | set(new))
        state.phase = "unlearning"


def _unlearn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: ABLConfig, gen: torch.Generator, batch_size: int
) -> dict[str, float]:
    """Gradient ascent on the isolated examples (official: SGD lr 5e-4, momentum 0.9), checked after every step.

    Stops as soon as the isolated set's accuracy on its own labels is <= ``unlearn_stop_acc`` (BastionFL guard
    against overshooting, which would erase the target class as a whole) or after ``unlearn_epochs`` epochs.
    """
    opt = sgd(model.parameters(), cfg.unlearn_lr)
    before = acc = accuracy(model, x, y)
    steps = 0
    for _ in range(cfg.unlearn_epochs):
        for idx in batches(x.shape[0], batch_size, gen):
            if acc <= cfg.unlearn_stop_acc:
                break
            model.train()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            (-loss).backward()
            opt.step()
            steps += 1
            acc = accuracy(model, x, y)
    return {"unlearn_steps": float(steps), "isolated_acc_before": before, "isolated_acc_after": acc}


def describe(cfg: ABLConfig) -> dict[str, Any]:
    """The configuration as plain types (for reports)."""
    return asdict(cfg)
