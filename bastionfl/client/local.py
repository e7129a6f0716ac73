"""What one client does with a round's instructions: rebuild the model, train on its partition, report.

When an attack is configured the client's partition may carry poisoned examples (a simulated data-poisoning
attacker); an honest client then trains with its configured defense (ABL), a malicious one trains plainly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.config import TEXT_DATASETS
from bastionfl.tasks.federated_data import DataSpec, client_partition, load_dataset_cached
from bastionfl.tasks.models import build_model
from bastionfl.tasks.training import evaluate, seeded_generator, train_sgd

__all__ = ["LocalResult", "data_spec", "build_task_model", "poisoned_partitions", "local_data", "local_train",
           "local_evaluate", "local_num_examples"]


@dataclass
class LocalResult:
    """The outcome of one client's local training."""

    state_dict: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    node_state: dict[str, str] = field(default_factory=dict)  # to keep in the node's context.state


def data_spec(cfg: RunConfig, num_partitions: int) -> DataSpec:
    """The partition spec every node derives identically from the run configuration."""
    return DataSpec.from_config(cfg, num_partitions)


def build_task_model(cfg: RunConfig) -> nn.Module:
    """An untrained model for the configured task (shapes come from the dataset)."""
    data = load_dataset_cached(cfg.dataset, cfg.data_dir)
    return build_model(cfg.model, data.in_channels, data.num_classes)


def poisoned_partitions(cfg: RunConfig, num_partitions: int) -> frozenset[int]:
    """Which partitions hold poisoned data: a seeded choice of ``cfg.poisoned_clients`` (simulation ground truth)."""
    if cfg.attack == "none" or cfg.poisoned_clients == 0:
        return frozenset()
    k = min(cfg.poisoned_clients, num_partitions)
    rng = np.random.default_rng([cfg.seed, 0xA77AC])
    return frozenset(int(i) for i in rng.choice(num_partitions, size=k, replace=False))


def local_data(cfg: RunConfig, partition_id: int, num_partitions: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """This client's images and labels, poisoned if it is one of the attacked partitions (mask = ground truth)."""
    x, y = client_partition(data_spec(cfg, num_partitions), partition_id)
    if partition_id not in poisoned_partitions(cfg, num_partitions):
        return x, y, None
    from bastionfl.tasks.backdoor import make_trigger, poison_dataset

    trigger = make_trigger(cfg.attack, tuple(x.shape[1:]), seed=cfg.seed)
    seed = int(np.random.SeedSequence([cfg.seed, partition_id, 0xB0D]).generate_state(1)[0])
    return poison_dataset(x, y, trigger, rate=cfg.poison_rate, target=cfg.target_label, seed=seed)


def local_train(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int, server_round: int,
    node_state: dict[str, str] | None = None,
) -> LocalResult:
    """Train the global model on this client's partition for ``cfg.local_epochs``; seeded by (seed, round, client)."""
    if cfg.dataset in TEXT_DATASETS:
        from bastionfl.client.text_local import local_train_text

        return local_train_text(cfg, global_state, partition_id, num_partitions, server_round, node_state)
    torch.set_num_threads(cfg.threads_per_client)
    x, y, poison_mask = local_data(cfg, partition_id, num_partitions)
    model = build_task_model(cfg)
    model.load_state_dict(global_state)
    gen = seeded_generator(cfg.seed, server_round, partition_id)
    malicious = poison_mask is not None and cfg.threat == "malicious"
    node_state = dict(node_state or {})
    metrics: dict[str, float] = {}
    if cfg.client_defense == "abl" and not malicious:
        from bastionfl.defenses.abl import ABLState, abl_local_train

        state = ABLState.from_dict(json.loads(node_state["abl"])) if "abl" in node_state else None
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        state, abl_metrics = abl_local_train(model, x, y, state, epochs=cfg.local_epochs, lr=cfg.lr,
                                             batch_size=cfg.batch_size, seed=seed,
                                             ground_truth_poison_mask=poison_mask)
        node_state["abl"] = json.dumps(state.to_dict())
        metrics.update({k: float(v) for k, v in abl_metrics.items()})
        loss = float(abl_metrics.get("train_loss", 0.0))
    else:
        loss = train_sgd(model, x, y, epochs=cfg.local_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                         momentum=cfg.momentum, generator=gen)
    if poison_mask is not None:
        metrics["poisoned_examples"] = float(poison_mask.sum())
    return LocalResult({k: v.detach().clone() for k, v in model.state_dict().items()}, int(len(x)), loss,
                       metrics, node_state)


def local_evaluate(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int
) -> tuple[float, float, int]:
    """Loss, accuracy and example count of the global model on this client's training partition."""
    if cfg.dataset in TEXT_DATASETS:
        from bastionfl.client.text_local import local_evaluate_text

        return local_evaluate_text(cfg, global_state, partition_id, num_partitions)
    torch.set_num_threads(cfg.threads_per_client)
    x, y = client_partition(data_spec(cfg, num_partitions), partition_id)
    model = build_task_model(cfg)
    model.load_state_dict(global_state)
    loss, acc = evaluate(model, x, y)
    return loss, acc, int(len(x))


def local_num_examples(cfg: RunConfig, partition_id: int, num_partitions: int) -> int:
    """How many training examples this client holds."""
    if cfg.dataset in TEXT_DATASETS:
        from bastionfl.client.text_local import local_num_examples_text

        return local_num_examples_text(cfg, partition_id, num_partitions)
    return int(len(client_partition(data_spec(cfg, num_partitions), partition_id)[0]))
