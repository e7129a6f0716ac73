"""The text task on one client: rebuild the BERT-family classifier, train on this partition (with BTU), report.

Data: ``cfg.data_dir`` is the folder holding ``sst2/`` (or ``hsol/``), or the dataset folder itself; the Syntactic
and Style attacks read the paraphrase column of ``sst2-syntactic/`` / ``sst2-style/`` inside that folder or beside
the dataset folder. A client's partition is a seeded share of the (``train_subset``-cut) training split, identical
on every call; the partitions in ``poisoned_partitions`` carry the configured attack (``mix`` poisoning).

Training is AdamW with ``cfg.lr`` (use about 1e-4; ``momentum`` is unused). With ``client_defense = btu`` an honest
client exposes suspect tokens in its first round (cached in ``node_state`` and re-applied later), trains, and cuts
the suspect embedding rows before it returns its update; a malicious client (``threat = malicious``) trains plainly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from bastionfl.client.local import LocalResult, poisoned_partitions
from bastionfl.config import RunConfig
from bastionfl.tasks.text import (DatasetError, TextData, TextModelConfig, evaluate_text, load_text_dataset,
                                  load_text_model, partition_text, train_text, word_embeddings)

__all__ = ["training_pool", "local_train_text", "local_evaluate_text", "local_num_examples_text", "text_model_config",
           "text_client_data", "TextClientData", "derive_seed", "BTU_STATE_KEY"]

BTU_STATE_KEY = "btu"
_MODEL_NAMES = {"minilm": "minilm", "tiny-bert": "tiny"}
_PARAPHRASE_ATTACKS = ("syntactic", "style")


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, round, partition, purpose), stable across processes."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] >> 1)


def text_model_config(cfg: RunConfig, num_labels: int) -> TextModelConfig:
    """The classifier every node builds: ``cfg.model`` cut to ``cfg.text_layers`` with a head seeded by ``cfg.seed``."""
    return TextModelConfig(name=_MODEL_NAMES.get(cfg.model, cfg.model), num_labels=num_labels,
                           num_layers=cfg.text_layers or None, seed=cfg.seed)


@lru_cache(maxsize=2)
def _dataset(name: str, data_dir: str) -> TextData:
    if not data_dir:
        raise DatasetError(f"data_dir is empty: {name} needs the folder holding {name}/ (train/dev/test TSV files)")
    return load_text_dataset(name, data_dir)


@lru_cache(maxsize=2)
def _train_paraphrases(dataset: str, data_dir: str, attack: str) -> list[str]:
    from bastionfl.tasks.text_backdoor import load_paraphrases

    return load_paraphrases(_dataset(dataset, data_dir), data_dir, attack)[0]


@dataclass(frozen=True)
class _Template:
    model: nn.Module
    tokenizer: object
    reference: torch.Tensor  # pretrained word embeddings E0 (BTU's reference)


@lru_cache(maxsize=2)
def _template(model_cfg: TextModelConfig) -> _Template:
    """Model, tokenizer and pretrained embeddings, built once per process (ClientApps are ephemeral)."""
    model, tok = load_text_model(model_cfg)
    return _Template(model, tok, word_embeddings(model).weight.detach().clone())


def _fresh_model(cfg: RunConfig, num_labels: int, state: dict[str, torch.Tensor]) -> tuple[nn.Module, _Template]:
    tpl = _template(text_model_config(cfg, num_labels))
    model = copy.deepcopy(tpl.model)
    model.load_state_dict(state)
    return model, tpl


@dataclass
class TextClientData:
    """One client's training sentences and labels; ``poison_mask`` is the ground truth (None: clean client)."""

    sentences: list[str]
    labels: list[int]
    poison_mask: np.ndarray | None
    trigger: list[str]
    num_classes: int


def training_pool(n: int, train_subset: int, seed: int) -> np.ndarray:
    """Indices of the training sentences the federation shares: all ``n``, or a seeded ``train_subset`` of them."""
    if train_subset <= 0 or train_subset >= n:
        return np.arange(n)
    return np.random.default_rng([seed, 0x5B5]).permutation(n)[:train_subset]


def text_client_data(cfg: RunConfig, partition_id: int, num_partitions: int) -> TextClientData:
    """This client's partition of the training split, poisoned if it is one of the attacked partitions."""
    from bastionfl.tasks.text_backdoor import TextAttackConfig, poison_text, trigger_words

    data = _dataset(cfg.dataset, cfg.data_dir)
    pool = training_pool(len(data.train_sentences), cfg.train_subset, cfg.seed)
    labels = [data.train_labels[i] for i in pool]
    part = partition_text(labels, num_partitions, partition_id, scheme=cfg.partition, alpha=cfg.alpha,
                          seed=cfg.seed)
    idx = [int(pool[i]) for i in part]
    sentences = [data.train_sentences[i] for i in idx]
    ys = [int(data.train_labels[i]) for i in idx]
    if partition_id not in poisoned_partitions(cfg, num_partitions):
        return TextClientData(sentences, ys, None, [], data.num_classes)
    para = None
    if cfg.attack in _PARAPHRASE_ATTACKS:
        para_all = _train_paraphrases(cfg.dataset, cfg.data_dir, cfg.attack)
        para = [para_all[i] for i in idx]
    attack = TextAttackConfig(cfg.attack, poison_rate=cfg.poison_rate, target=cfg.target_label,
                              seed=derive_seed(cfg.seed, partition_id, 0xB0D))
    poisoned = poison_text(sentences, ys, attack, para)
    return TextClientData(poisoned.sentences, poisoned.labels, poisoned.mask, trigger_words(attack),
                          data.num_classes)


def _btu_state(node_state: dict[str, str]) -> list[int] | None:
    raw = node_state.get(BTU_STATE_KEY)
    if raw is None:
        return None
    try:
        return [int(i) for i in json.loads(raw)["suspects"]]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"node state {BTU_STATE_KEY!r} is not a BTU record (expected JSON with 'suspects')") from None


def local_train_text(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int, server_round: int,
    node_state: dict[str, str] | None = None,
) -> LocalResult:
    """Train the global text model on this partition for ``cfg.local_epochs`` (BTU on honest clients if configured)."""
    torch.set_num_threads(cfg.threads_per_client)
    local = text_client_data(cfg, partition_id, num_partitions)
    model, tpl = _fresh_model(cfg, local.num_classes, global_state)
    node_state = dict(node_state or {})
    seed = derive_seed(cfg.seed, server_round, partition_id)
    torch.manual_seed(seed)  # dropout draws from the global generator: seed it, or the result depends on the process
    malicious = local.poison_mask is not None and cfg.threat == "malicious"
    metrics: dict[str, float] = {}
    losses: list[float] = []

    def train(m: nn.Module) -> None:
        losses.append(train_text(m, tpl.tokenizer, local.sentences, local.labels, epochs=cfg.local_epochs, lr=cfg.lr,
                                 batch_size=cfg.batch_size, max_len=cfg.max_len, seed=seed))

    if cfg.client_defense == "btu" and not malicious:
        from bastionfl.defenses.btu import BTUConfig, btu_defend

        cached = _btu_state(node_state)
        btu_cfg = BTUConfig(max_len=cfg.max_len, train_epochs=0, seed=derive_seed(cfg.seed, partition_id, 0xB70),
                            cut_to=cfg.btu_cut_to, purity=cfg.btu_purity)
        model, report = btu_defend(model, tpl.tokenizer, local.sentences, local.labels, btu_cfg,
                                   reference=tpl.reference, suspects=cached, train_fn=train,
                                   trigger=local.trigger or None,
                                   hold_cut=cfg.btu_hold)
        if cached is None:
            node_state[BTU_STATE_KEY] = json.dumps({"round": server_round, "suspects": report.flagged_ids,
                                                    "tokens": report.flagged_tokens})
        metrics.update(btu_flagged=float(len(report.flagged_ids)), btu_exposed=float(cached is None),
                       btu_dims_replaced=float(sum(report.dims_replaced.values())),
                       btu_expose_s=float(report.seconds.get("expose", 0.0)))
        if cached is None and cfg.btu_purity > 0:
            metrics["btu_spared"] = float(len(report.spared))
        if report.trigger_found is not None:
            metrics["btu_trigger_found"] = float(report.trigger_found)
            metrics["btu_trigger_tokens"] = float(len(report.trigger_ids or []))
            metrics["btu_trigger_tokens_flagged"] = float(sum(report.trigger_flagged or []))
    else:
        train(model)
    if local.poison_mask is not None:
        metrics["poisoned_examples"] = float(local.poison_mask.sum())
    state = model.state_dict()
    out = {k: state[k].detach().clone() for k in global_state}
    return LocalResult(out, len(local.sentences), float(losses[-1]), metrics, node_state)


def local_evaluate_text(
    cfg: RunConfig, global_state: dict[str, torch.Tensor], partition_id: int, num_partitions: int
) -> tuple[float, float, int]:
    """Loss, accuracy and sentence count of the global model on this client's (clean) training partition."""
    torch.set_num_threads(cfg.threads_per_client)
    data = _dataset(cfg.dataset, cfg.data_dir)
    clean = text_client_data(dataclasses.replace(cfg, attack="none"), partition_id, num_partitions)
    model, tpl = _fresh_model(cfg, data.num_classes, global_state)
    loss, acc = evaluate_text(model, tpl.tokenizer, clean.sentences, clean.labels, max_len=cfg.max_len)
    return loss, acc, len(clean.sentences)


def local_num_examples_text(cfg: RunConfig, partition_id: int, num_partitions: int) -> int:
    """How many training sentences this client holds."""
    data = _dataset(cfg.dataset, cfg.data_dir)
    pool = training_pool(len(data.train_sentences), cfg.train_subset, cfg.seed)
    labels = [data.train_labels[i] for i in pool]
    return len(partition_text(labels, num_partitions, partition_id, scheme=cfg.partition, alpha=cfg.alpha,
                              seed=cfg.seed))
