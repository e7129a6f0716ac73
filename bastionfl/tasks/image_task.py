"""The image task: a small CNN or WRN on digits, (Fashion-)MNIST or CIFAR-10, SGD, BadNets/Blended poisoning."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from bastionfl.config import RunConfig, TaskKind
from bastionfl.tasks.base import ClientData, poisoned_partitions
from bastionfl.tasks.federated_data import DataSpec, client_partition, load_dataset_cached, server_clean_set
from bastionfl.tasks.models import build_model
from bastionfl.tasks.training import evaluate, seeded_generator, train_sgd

__all__ = ["ImageTask"]


class ImageTask:
    """Images as float tensors in [0, 1]; the server measures CA on the test split and ASR on its triggered
    non-target images."""

    kind: ClassVar[TaskKind] = TaskKind.IMAGE

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self._asr_set: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def data(self):  # noqa: ANN201 - ImageData, loaded once per process
        """The whole dataset (train and test splits), cached per process."""
        return load_dataset_cached(self.cfg.task.dataset, self.cfg.task.data_dir)

    def check_data(self) -> None:
        """Load the dataset now (``DatasetError`` with one line if it is missing or malformed)."""
        self.data  # noqa: B018 - loading is the check

    def spec(self, num_partitions: int) -> DataSpec:
        """Everything that decides which images a client holds (identical on every node of a run)."""
        c = self.cfg
        return DataSpec(c.task.dataset, c.task.data_dir, num_partitions, str(c.federation.partition),
                        c.federation.alpha, c.federation.seed, c.task.train_subset, c.defense.clean_set_size)

    @property
    def trigger_seed(self) -> int:
        """The seed of the trigger's noise pattern and random places (``trigger_seed``, -1: the run's seed)."""
        a = self.cfg.attack
        return self.cfg.federation.seed if a.trigger_seed < 0 else a.trigger_seed

    def trigger(self):  # noqa: ANN201 - tasks.backdoor.Trigger
        """The configured attack's trigger (both the poisoning clients and the server's ASR set use it)."""
        from bastionfl.tasks.backdoor import make_trigger

        a = self.cfg.attack
        return make_trigger(str(a.kind), tuple(self.data.test_x.shape[1:]), seed=self.trigger_seed,
                            alpha=a.blend_alpha, trigger_type=str(a.trigger_type), size=a.trigger_size,
                            position=str(a.trigger_position))

    def new_model(self) -> nn.Module:
        """An untrained model; its initial weights follow torch's global seed (the server seeds it)."""
        return build_model(self.cfg.task.model, self.data.in_channels, self.data.num_classes)

    def client_data(self, partition_id: int, num_partitions: int, *, clean: bool = False) -> ClientData:
        """This client's images and labels, poisoned if it is one of the attacked partitions."""
        x, y = client_partition(self.spec(num_partitions), partition_id)
        if clean or partition_id not in poisoned_partitions(self.cfg, num_partitions):
            return ClientData(x, y)
        from bastionfl.tasks.backdoor import poison_dataset

        a = self.cfg.attack
        seed = int(np.random.SeedSequence([self.cfg.federation.seed, partition_id, 0xB0D]).generate_state(1)[0])
        px, py, mask = poison_dataset(x, y, self.trigger(), rate=a.poison_rate, target=a.target_label, seed=seed,
                                      mode=str(a.attack_mode), num_classes=self.data.num_classes)
        return ClientData(px, py, mask)

    def num_examples(self, partition_id: int, num_partitions: int) -> int:
        """How many images this client holds."""
        return int(len(client_partition(self.spec(num_partitions), partition_id)[0]))

    def generator(self, server_round: int, partition_id: int) -> torch.Generator:
        """The torch generator of one client's training in one round: seeded by (seed, round, client)."""
        return seeded_generator(self.cfg.federation.seed, server_round, partition_id)

    def train(self, model: nn.Module, data: ClientData, *, server_round: int, partition_id: int) -> float:
        """Local SGD with momentum for ``local_epochs`` epochs, seeded by (seed, round, client)."""
        t = self.cfg.task
        return train_sgd(model, data.inputs, data.labels, epochs=t.local_epochs, lr=t.lr, batch_size=t.batch_size,
                         momentum=t.momentum, generator=self.generator(server_round, partition_id))

    def evaluate_on(self, model: nn.Module, data: ClientData) -> tuple[float, float]:
        """Loss and accuracy on ``data``."""
        return evaluate(model, data.inputs, data.labels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy on the test split; ``asr`` on its triggered non-target images under an attack."""
        with torch.no_grad():
            loss, acc = evaluate(model, self.data.test_x, self.data.test_y)
            out = {"loss": loss, "accuracy": acc}
            if self.cfg.attack.kind != "none":
                out["asr"] = evaluate(model, *self.asr_set())[1]
        return out

    def asr_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every non-target test image with the trigger, labelled with the target (built once)."""
        if self._asr_set is None:
            from bastionfl.tasks.backdoor import build_asr_set

            a = self.cfg.attack
            self._asr_set = build_asr_set(self.data.test_x, self.data.test_y, self.trigger(),
                                          target=a.target_label, mode=str(a.attack_mode),
                                          num_classes=self.data.num_classes, seed=self.trigger_seed + 1)
        return self._asr_set

    def clean_set(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The server's ``clean_set_size`` images, held out of every client's partition (None when 0)."""
        if not self.cfg.defense.clean_set_size:
            return None
        return server_clean_set(self.spec(self.cfg.federation.num_clients))
