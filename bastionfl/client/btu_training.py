"""BTU (backdoor token unlearning) around the text task's local training.

An honest client exposes suspect tokens in its first round (cached in its node state and re-applied later), trains,
and cuts the suspect embedding rows before it returns its update.
"""

from __future__ import annotations

import json

import torch

from bastionfl.client.training import TrainingRound
from bastionfl.protocol import ProtocolError
from bastionfl.tasks.base import derive_seed

__all__ = ["BTU_STATE_KEY", "btu_train"]

BTU_STATE_KEY = "btu"  # the node's BTU suspects (token ids) in its node state


def _cached_suspects(node_state: dict[str, str]) -> list[int] | None:
    raw = node_state.get(BTU_STATE_KEY)
    if raw is None:
        return None
    try:
        return [int(i) for i in json.loads(raw)["suspects"]]
    except (ValueError, KeyError, TypeError):
        raise ProtocolError(f"node state {BTU_STATE_KEY!r} is not a BTU record (expected JSON with "
                            "'suspects')") from None


def btu_train(job: TrainingRound) -> tuple[float, dict[str, float]]:
    """One round of local training under BTU; replaces ``job.model`` by the cut model."""
    from bastionfl.defenses.btu import BTUConfig, btu_defend

    task, cfg = job.task, job.task.cfg
    seed = task.training_seed(job.server_round, job.partition_id)  # type: ignore[attr-defined] - text task
    torch.manual_seed(seed)  # dropout draws from the global generator: seed it, or the result depends on the process
    losses: list[float] = []

    def train(m: torch.nn.Module) -> None:
        losses.append(task.fit(m, job.data, seed))  # type: ignore[attr-defined]

    cached = _cached_suspects(job.node_state)
    btu_cfg = BTUConfig(max_len=cfg.task.max_len, train_epochs=0,
                        seed=derive_seed(cfg.federation.seed, job.partition_id, 0xB70),
                        cut_to=str(cfg.defense.btu_cut_to), purity=cfg.defense.btu_purity,
                        ranking=str(cfg.defense.btu_ranking))
    template = task.template()  # type: ignore[attr-defined]
    job.model, report = btu_defend(job.model, template.tokenizer, job.data.inputs, job.data.labels, btu_cfg,
                                   reference=template.reference, suspects=cached, train_fn=train,
                                   trigger=job.data.trigger or None, hold_cut=cfg.defense.btu_hold)
    if cached is None:
        job.node_state[BTU_STATE_KEY] = json.dumps({"round": job.server_round, "suspects": report.flagged_ids,
                                                    "tokens": report.flagged_tokens,
                                                    "spared_tokens": report.freq_spared_tokens})
    metrics = {"btu_flagged": float(len(report.flagged_ids)), "btu_exposed": float(cached is None),
               "btu_dims_replaced": float(sum(report.dims_replaced.values())),
               "btu_expose_s": float(report.seconds.get("expose", 0.0))}
    if cached is None and cfg.defense.btu_purity > 0:
        metrics["btu_spared"] = float(len(report.spared))
    if cached is None and report.freq_spared:
        metrics["btu_freq_spared"] = float(len(report.freq_spared))
    if report.trigger_found is not None:
        metrics["btu_trigger_found"] = float(report.trigger_found)
        metrics["btu_trigger_tokens"] = float(len(report.trigger_ids or []))
        metrics["btu_trigger_tokens_flagged"] = float(sum(report.trigger_flagged or []))
    return float(losses[-1]), metrics
