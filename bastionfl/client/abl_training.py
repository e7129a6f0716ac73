"""ABL (anti-backdoor learning) around the image task's local training, with its per-client state across rounds."""

from __future__ import annotations

import json

import torch

from bastionfl.client.training import TrainingRound

__all__ = ["ABL_STATE_KEY", "abl_train", "abl_config"]

ABL_STATE_KEY = "abl"  # the node's ABL state (isolated examples, rounds done) in its node state


def abl_config(cfg):  # noqa: ANN001, ANN201 - RunConfig -> defenses.ABLConfig
    """ABL's settings from the run configuration's ``abl_*`` keys."""
    from bastionfl.defenses.abl import ABLConfig

    d = cfg.defense
    return ABLConfig(isolation_rounds=d.abl_isolation_rounds, loss=d.abl_loss, gamma=d.abl_gamma,
                     learned_from=d.abl_learned_from, learned_to=d.abl_learned_to, label_purity=d.abl_label_purity,
                     min_outlier_fraction=d.abl_min_outlier_fraction, min_isolated=d.abl_min_isolated,
                     max_isolation_ratio=d.abl_max_isolation_ratio,
                     max_prediction_share=d.abl_max_prediction_share, unlearn_lr=d.abl_unlearn_lr,
                     unlearn_epochs=d.abl_unlearn_epochs, unlearn_stop_acc=d.abl_unlearn_stop_acc)


def abl_train(job: TrainingRound) -> tuple[float, dict[str, float]]:
    """One round of ABL on this client's images: isolate fast-learned examples early, unlearn them later.

    Detection figures use the simulation's ground truth: a benign client's mask is all False, so whatever it
    isolates counts as false positives (``isolation_false_positives``).
    """
    from bastionfl.defenses.abl import ABLState, abl_local_train

    task, t = job.task, job.task.cfg.task
    state = ABLState.from_dict(json.loads(job.node_state[ABL_STATE_KEY])) if ABL_STATE_KEY in job.node_state else None
    gen = task.generator(job.server_round, job.partition_id)  # type: ignore[attr-defined] - image task
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    truth = job.data.poison_mask
    if truth is None:
        truth = torch.zeros(len(job.data.labels), dtype=torch.bool)
    state, metrics = abl_local_train(job.model, job.data.inputs, job.data.labels, state, abl_config(task.cfg),
                                     epochs=t.local_epochs, lr=t.lr, batch_size=t.batch_size, seed=seed,
                                     ground_truth_poison_mask=truth)
    job.node_state[ABL_STATE_KEY] = json.dumps(state.to_dict())
    out = {k: float(v) for k, v in metrics.items()}
    return float(metrics.get("train_loss", 0.0)), out
