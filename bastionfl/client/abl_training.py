"""ABL (anti-backdoor learning) around the image task's local training, with its per-client state across rounds."""

from __future__ import annotations

import json

import torch

from bastionfl.client.training import TrainingRound

__all__ = ["ABL_STATE_KEY", "abl_train"]

ABL_STATE_KEY = "abl"  # the node's ABL state (isolated examples, rounds done) in its node state


def abl_train(job: TrainingRound) -> tuple[float, dict[str, float]]:
    """One round of ABL on this client's images: isolate low-loss examples early, unlearn them later."""
    from bastionfl.defenses.abl import ABLState, abl_local_train

    task, t = job.task, job.task.cfg.task
    state = ABLState.from_dict(json.loads(job.node_state[ABL_STATE_KEY])) if ABL_STATE_KEY in job.node_state else None
    gen = task.generator(job.server_round, job.partition_id)  # type: ignore[attr-defined] - image task
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    state, metrics = abl_local_train(job.model, job.data.inputs, job.data.labels, state, epochs=t.local_epochs,
                                     lr=t.lr, batch_size=t.batch_size, seed=seed,
                                     ground_truth_poison_mask=job.data.poison_mask)
    job.node_state[ABL_STATE_KEY] = json.dumps(state.to_dict())
    out = {k: float(v) for k, v in metrics.items()}
    return float(metrics.get("train_loss", 0.0)), out
