"""The text task: a BERT-family classifier on SST-2/HSOL, AdamW, rare-word/AddSent/Syntactic/Style poisoning.

Data: ``data_dir`` is the folder holding ``sst2/`` (or ``hsol/``), or the dataset folder itself; empty, SST-2 comes
from Hugging Face (needs the network). The Syntactic and Style attacks read the paraphrase column of
``sst2-syntactic/`` / ``sst2-style/`` inside that folder or beside the dataset folder. A client's partition is a
seeded share of the (``train_subset``-cut) training split, identical on every call and every node.

The global model starts from the pretrained weights (cut to ``text_layers``) with a classifier head seeded by
``seed``, on the server and on every client, so BTU's reference embeddings (the pretrained ones) are the round-1
global embeddings. CA is measured on the dev split (SST-2 test labels are not used; the paraphrases exist for train
and dev only). ASR = share of the triggered non-target dev sentences predicted as the target; ``asr_floor`` = the
same share on those sentences without the trigger (the model's own error). The server's clean set for repair is
drawn from the test split (disjoint from the clients' train split and from dev).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from bastionfl.config import RunConfig, TaskKind
from bastionfl.tasks.base import ClientData, derive_seed, poisoned_partitions
from bastionfl.tasks.text import (DatasetError, TextData, TextModelConfig, attack_success_rate, evaluate_text,
                                  load_hf_text_dataset, load_text_dataset, load_text_model, partition_text, train_text,
                                  word_embeddings)

__all__ = ["TextTask", "training_pool", "text_model_config", "text_dataset"]

_MODEL_NAMES = {"minilm": "minilm", "tiny-bert": "tiny"}  # the config's names -> load_text_model's names
_PARAPHRASE_ATTACKS = ("syntactic", "style")


def text_model_config(cfg: RunConfig, num_labels: int) -> TextModelConfig:
    """The classifier every node builds: ``model`` cut to ``text_layers`` with a head seeded by ``seed``."""
    t = cfg.task
    return TextModelConfig(name=_MODEL_NAMES.get(t.model, t.model), num_labels=num_labels,
                           num_layers=t.text_layers or None, seed=cfg.federation.seed)


@lru_cache(maxsize=2)
def text_dataset(name: str, data_dir: str) -> TextData:
    """The dataset's splits, loaded once per process (ClientApps are ephemeral, their process is not)."""
    if not data_dir:
        return load_hf_text_dataset(name)
    return load_text_dataset(name, data_dir)


@lru_cache(maxsize=2)
def _train_paraphrases(dataset: str, data_dir: str, attack: str) -> list[str]:
    from bastionfl.tasks.text_backdoor import load_paraphrases

    return load_paraphrases(text_dataset(dataset, data_dir), data_dir, attack)[0]


@dataclass(frozen=True)
class TextTemplate:
    """The round-0 model, its tokenizer and the pretrained word embeddings (BTU's reference), built once."""

    model: nn.Module
    tokenizer: object
    reference: torch.Tensor


@lru_cache(maxsize=2)
def _template(model_cfg: TextModelConfig) -> TextTemplate:
    model, tok = load_text_model(model_cfg)
    return TextTemplate(model, tok, word_embeddings(model).weight.detach().clone())


def training_pool(n: int, train_subset: int, seed: int) -> np.ndarray:
    """Indices of the training sentences the federation shares: all ``n``, or a seeded ``train_subset`` of them."""
    if train_subset <= 0 or train_subset >= n:
        return np.arange(n)
    return np.random.default_rng([seed, 0x5B5]).permutation(n)[:train_subset]


class TextTask:
    """Sentences and labels; AdamW training (use lr about 1e-4; ``momentum`` is unused)."""

    kind: ClassVar[TaskKind] = TaskKind.TEXT

    def __init__(self, cfg: RunConfig, data: TextData | None = None) -> None:
        self.cfg = cfg
        self._data = data  # given: these splits instead of the configured dataset's (tests, derived datasets)
        self._eval_sets: tuple[list[str], list[str]] | None = None

    # -- data -------------------------------------------------------------------------------------------------------
    @property
    def data(self) -> TextData:
        """The dataset's splits (cached per process)."""
        return self._data or text_dataset(self.cfg.task.dataset, self.cfg.task.data_dir)

    def check_data(self) -> None:
        """Load the dataset, the attack's paraphrases and the server's clean set now (one-line ``DatasetError``)."""
        data = self.data
        attack = str(self.cfg.attack.kind)
        if attack in _PARAPHRASE_ATTACKS:
            from bastionfl.tasks.text_backdoor import load_paraphrases

            load_paraphrases(data, self.cfg.task.data_dir, attack)
        if self.cfg.defense.clean_set_size:
            self.clean_set()

    def _partition(self, partition_id: int, num_partitions: int) -> list[int]:
        c = self.cfg
        pool = training_pool(len(self.data.train_sentences), c.task.train_subset, c.federation.seed)
        labels = [self.data.train_labels[i] for i in pool]
        part = partition_text(labels, num_partitions, partition_id, scheme=str(c.federation.partition),
                              alpha=c.federation.alpha, seed=c.federation.seed)
        return [int(pool[i]) for i in part]

    def client_data(self, partition_id: int, num_partitions: int, *, clean: bool = False) -> ClientData:
        """This client's partition of the training split, poisoned if it is one of the attacked partitions."""
        from bastionfl.tasks.text_backdoor import TextAttackConfig, poison_text, trigger_words

        c, data = self.cfg, self.data
        idx = self._partition(partition_id, num_partitions)
        sentences = [data.train_sentences[i] for i in idx]
        ys = [int(data.train_labels[i]) for i in idx]
        if clean or partition_id not in poisoned_partitions(c, num_partitions):
            return ClientData(sentences, ys)
        attack = str(c.attack.kind)
        para = None
        if attack in _PARAPHRASE_ATTACKS:
            para_all = _train_paraphrases(c.task.dataset, c.task.data_dir, attack)
            para = [para_all[i] for i in idx]
        atk = TextAttackConfig(attack, poison_rate=c.attack.poison_rate, target=c.attack.target_label,
                               seed=derive_seed(c.federation.seed, partition_id, 0xB0D))
        poisoned = poison_text(sentences, ys, atk, para)
        return ClientData(poisoned.sentences, poisoned.labels, poisoned.mask, trigger_words(atk))

    def num_examples(self, partition_id: int, num_partitions: int) -> int:
        """How many training sentences this client holds."""
        return len(self._partition(partition_id, num_partitions))

    # -- model and training -----------------------------------------------------------------------------------------
    def template(self) -> TextTemplate:
        """The round-0 model, tokenizer and pretrained embeddings (built once per process)."""
        return _template(text_model_config(self.cfg, self.data.num_classes))

    @property
    def tokenizer(self) -> object:
        """The model's tokenizer."""
        return self.template().tokenizer

    def new_model(self) -> nn.Module:
        """A copy of the round-0 model: pretrained encoder, seeded classifier head."""
        return copy.deepcopy(self.template().model)

    def training_seed(self, server_round: int, partition_id: int) -> int:
        """The seed of one client's training in one round (dropout and batch order)."""
        return derive_seed(self.cfg.federation.seed, server_round, partition_id)

    def fit(self, model: nn.Module, data: ClientData, seed: int) -> float:
        """AdamW for ``local_epochs`` epochs with a given seed; returns the last epoch's mean loss."""
        t = self.cfg.task
        return train_text(model, self.tokenizer, data.inputs, data.labels, epochs=t.local_epochs, lr=t.lr,
                          batch_size=t.batch_size, max_len=t.max_len, seed=seed)

    def train(self, model: nn.Module, data: ClientData, *, server_round: int, partition_id: int) -> float:
        """Plain local training, seeded by (seed, round, client); dropout draws from torch's global generator."""
        seed = self.training_seed(server_round, partition_id)
        torch.manual_seed(seed)
        return self.fit(model, data, seed)

    # -- evaluation -------------------------------------------------------------------------------------------------
    def evaluate_on(self, model: nn.Module, data: ClientData) -> tuple[float, float]:
        """Loss and accuracy on ``data``."""
        return evaluate_text(model, self.tokenizer, data.inputs, data.labels, max_len=self.cfg.task.max_len)

    def _asr_sentences(self) -> tuple[list[str], list[str]]:
        """(triggered, untriggered) non-target dev sentences; without an attack only the untriggered ones."""
        if self._eval_sets is not None:
            return self._eval_sets
        c, data = self.cfg, self.data
        target = c.attack.target_label
        if c.attack.kind == "none":
            untriggered = [s for s, y in zip(data.dev_sentences, data.dev_labels) if int(y) != target]
            self._eval_sets = ([], untriggered)
            return self._eval_sets
        from bastionfl.tasks.text_backdoor import TextAttackConfig, build_text_asr_set, load_paraphrases

        attack = str(c.attack.kind)
        paras = load_paraphrases(data, c.task.data_dir, attack)[1] if attack in _PARAPHRASE_ATTACKS else None
        atk = TextAttackConfig(attack, poison_rate=c.attack.poison_rate, target=target, seed=c.federation.seed)
        triggered = build_text_asr_set(data.dev_sentences, data.dev_labels, atk, paras)
        untriggered = [s for i, (s, y) in enumerate(zip(data.dev_sentences, data.dev_labels))
                       if int(y) != target and (paras is None or paras[i].strip())]
        if not triggered or len(triggered) != len(untriggered):
            raise DatasetError(f"{c.task.dataset} dev: {len(triggered)} triggered vs {len(untriggered)} untriggered "
                               f"non-target sentences (target {target}); expected the same non-empty set")
        self._eval_sets = (triggered, untriggered)
        return self._eval_sets

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss and accuracy on dev; ``asr`` under an attack; ``asr_floor`` (the model's own error) always."""
        data, tok, max_len = self.data, self.tokenizer, self.cfg.task.max_len
        target = self.cfg.attack.target_label
        triggered, untriggered = self._asr_sentences()
        with torch.no_grad():
            loss, acc = evaluate_text(model, tok, data.dev_sentences, data.dev_labels, max_len=max_len)
            out = {"loss": loss, "accuracy": acc}
            if triggered:
                out["asr"] = attack_success_rate(model, tok, triggered, target, max_len=max_len)
            if untriggered:
                out["asr_floor"] = attack_success_rate(model, tok, untriggered, target, max_len=max_len)
        return out

    def clean_set(self) -> tuple[list[str], list[int]] | None:
        """A seeded subset of ``clean_set_size`` sentences of the test split (None when 0).

        The test split is disjoint from the clients' (train) and from CA/ASR (dev); a dataset whose test split is its
        dev split has no clean set to give without tuning on the evaluation sentences, and is refused.
        """
        n, data = self.cfg.defense.clean_set_size, self.data
        if not n:
            return None
        if data.test_sentences == data.dev_sentences:
            raise DatasetError(f"{self.cfg.task.dataset}: the test split is the dev split, so a server clean set "
                               "would tune on the sentences CA and ASR are measured on; no clean tune for this dataset")
        if n > len(data.test_sentences):
            raise DatasetError(f"clean_set_size {n} is more than the {len(data.test_sentences)} sentences of the "
                               f"{self.cfg.task.dataset} test split")
        gen = torch.Generator().manual_seed(self.cfg.federation.seed * 7_919 + 17)
        pick = torch.randperm(len(data.test_sentences), generator=gen)[:n].tolist()
        return [data.test_sentences[i] for i in pick], [int(data.test_labels[i]) for i in pick]
