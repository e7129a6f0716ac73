"""The one interface every learning task offers: model, data, plain training, evaluation and attack success rate.

A ``Task`` is built once per process from the run configuration (``bastionfl.tasks.registry.build_task``); the
clients use its data and training, the server its evaluation and clean set, and nothing outside ``tasks/``
branches on image versus text. Defenses compose with a task from outside (the client's training room).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from bastionfl.config import RunConfig, TaskKind

__all__ = ["ClientData", "Task", "poisoned_partitions", "derive_seed"]


@dataclass
class ClientData:
    """One client's training examples: tensors (images) or sentences (text), labels, and the poisoning truth.

    ``poison_mask`` marks the poisoned examples of a simulated attacker's partition (None: a clean client); it is
    simulation ground truth, used only to report detection figures, never by a defense to decide anything.
    """

    inputs: Any  # torch.Tensor (N, C, H, W) for images, list[str] for text
    labels: Any  # torch.Tensor (N,) for images, list[int] for text
    poison_mask: np.ndarray | torch.Tensor | None = None
    trigger: list[str] = field(default_factory=list)  # text: the trigger words, for BTU's detection figures

    def __len__(self) -> int:
        return len(self.labels)


class Task(Protocol):
    """What a learning task gives the federation (see the module docstring)."""

    kind: ClassVar[TaskKind]
    cfg: RunConfig

    def new_model(self) -> nn.Module:
        """A fresh copy of the round-0 global model (every node builds the same one from the configuration)."""
        ...

    def client_data(self, partition_id: int, num_partitions: int, *, clean: bool = False) -> ClientData:
        """This client's seeded share of the training data, poisoned if it is an attacked partition (``clean``:
        never poisoned)."""
        ...

    def num_examples(self, partition_id: int, num_partitions: int) -> int:
        """How many training examples this client holds (cheap: no poisoning)."""
        ...

    def train(self, model: nn.Module, data: ClientData, *, seed: int) -> float:
        """Plain local training (the task's optimiser, ``local_epochs`` epochs), seeded; returns the last loss."""
        ...

    def evaluate_on(self, model: nn.Module, data: ClientData) -> tuple[float, float]:
        """Loss and accuracy of ``model`` on ``data`` (a client's own evaluation)."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """The server's view: ``loss`` and ``accuracy`` on held-out data, and ``asr`` (plus ``asr_floor`` where the
        task measures the model's own error on the same sentences) when an attack is configured."""
        ...

    def clean_set(self) -> Any | None:
        """The server's small clean set for repair (disjoint from clients' data and evaluation), or None."""
        ...

    def check_data(self) -> None:
        """Load what the run needs now and raise ``DatasetError`` with one line if it is missing (fail fast)."""
        ...


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, round, partition, purpose), stable across processes and machines."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def poisoned_partitions(cfg: RunConfig, num_partitions: int) -> frozenset[int]:
    """Which partitions hold poisoned data: a seeded choice of ``poisoned_clients`` (simulation ground truth)."""
    if cfg.attack.kind == "none" or cfg.attack.poisoned_clients == 0:
        return frozenset()
    k = min(cfg.attack.poisoned_clients, num_partitions)
    rng = np.random.default_rng([cfg.federation.seed, 0xA77AC])
    return frozenset(int(i) for i in rng.choice(num_partitions, size=k, replace=False))


def state_of(model: nn.Module, keys: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of a model's tensors (only ``keys`` if given, in that order)."""
    state = model.state_dict()
    names = list(keys) if keys is not None else list(state)
    return {k: state[k].detach().clone() for k in names}
