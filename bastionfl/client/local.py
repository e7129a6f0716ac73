"""What one client does with a round's instructions: rebuild the model, train on its partition, report."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.tasks.federated_data import DataSpec, client_partition, load_dataset_cached
from bastionfl.tasks.models import build_model
from bastionfl.tasks.training import evaluate, seeded_generator, train_sgd

__all__ = ["LocalResult", "data_spec", "build_task_model", "local_train", "local_evaluate"]


@dataclass
class LocalResult:
    """The outcome of one client's local training."""

    state_dict: dict[str, torch.Tensor]
    num_examples: int
    train_loss: float


def data_spec(cfg: RunConfig, num_partitions: int) -> DataSpec:
    """The partition spec every node derives identically from the run configuration."""
    return DataSpec(cfg.dataset, cfg.data_dir, num_partitions, cfg.partition, cfg.alpha, cfg.seed, cfg.train_subset)


def build_task_model(cfg: RunConfig) -> nn.Module:
    """An untrained model for the configured task (shapes come from the dataset)."""
    data = load_dataset_cached(cfg.dataset, cfg.data_dir)
    return build_model(cfg.model, data.in_channels, data.num_classes)


def local_train(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int, server_round: int
) -> LocalResult:
    """Train the global model on this client's partition for ``cfg.local_epochs``; seeded by (seed, round, client)."""
    torch.set_num_threads(cfg.threads_per_client)
    x, y = client_partition(data_spec(cfg, num_partitions), partition_id)
    model = build_task_model(cfg)
    model.load_state_dict(global_state)
    gen = seeded_generator(cfg.seed, server_round, partition_id)
    loss = train_sgd(model, x, y, epochs=cfg.local_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                     momentum=cfg.momentum, generator=gen)
    return LocalResult({k: v.detach().clone() for k, v in model.state_dict().items()}, int(len(x)), loss)


def local_evaluate(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int
) -> tuple[float, float, int]:
    """Loss, accuracy and example count of the global model on this client's training partition."""
    torch.set_num_threads(cfg.threads_per_client)
    x, y = client_partition(data_spec(cfg, num_partitions), partition_id)
    model = build_task_model(cfg)
    model.load_state_dict(global_state)
    loss, acc = evaluate(model, x, y)
    return loss, acc, int(len(x))
