"""BTU's exposure: three short embedding-focused trainings that rank tokens by how far their embedding moves.

R1 = bag-of-embeddings model, R2 = R1 after deleting R1's top tokens from the texts, R3 = the full classifier with
only ``word_embeddings`` trainable; the suspects are the union of each ranking's top tokens (``bastionfl.defenses.btu``
has the whole method and its deviations from the paper).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from bastionfl.defenses.btu_common import BTUConfig, _device, _fit, _special_ids, _word_embeddings

__all__ = ["BTUExposure", "btu_expose", "rank_by_embedding_change", "remove_tokens", "token_ids_of", "BagOfEmbeddings"]


@dataclass
class BTUExposure:
    """The three rankings (top ids each), their union and the rank of any token under each ranking."""

    count: int
    top: dict[str, list[int]]
    suspects: list[int]
    order: dict[str, torch.Tensor] = field(repr=False)  # full ranking (ids, most changed first) per ranking

    def rank_of(self, token_id: int) -> dict[str, int]:
        """0-based rank of ``token_id`` in each ranking (-1 if it was left out, e.g. a special token)."""
        out = {}
        for name, order in self.order.items():
            hit = (order == token_id).nonzero()
            out[name] = int(hit[0, 0]) if len(hit) else -1
        return out


def token_ids_of(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """Token ids of ``words`` as the tokenizer splits them (no special tokens), in order, without repeats."""
    ids: list[int] = []
    for w in words:
        for i in tokenizer(w, add_special_tokens=False)["input_ids"]:
            if int(i) not in ids:
                ids.append(int(i))
    return ids


def remove_tokens(sentences: Sequence[str], tokens: Sequence[str]) -> list[str]:
    """Delete every whole word equal (case-insensitively) to one of ``tokens``; R2's text cleaning."""
    drop = {t.lower() for t in tokens if t.strip()}
    if not drop:
        return list(sentences)
    return [" ".join(w for w in re.split(r"\s+", s.strip()) if w.lower() not in drop) for s in sentences]


def rank_by_embedding_change(before: torch.Tensor, after: torch.Tensor, skip: set[int]) -> torch.Tensor:
    """Token ids sorted by ``||after[i] - before[i]||_2``, largest first, ``skip`` left out."""
    score = (after.detach().float() - before.detach().float()).norm(dim=1)
    order = torch.argsort(score, descending=True, stable=True)
    if skip:
        keep = ~torch.isin(order, torch.tensor(sorted(skip), dtype=order.dtype, device=order.device))
        order = order[keep]
    return order


class BagOfEmbeddings(nn.Module):
    """R1's exposure model (official ``PrunedBertModel``): embedding module -> mean over every position -> linear."""

    def __init__(self, embeddings: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.classifier(h.mean(dim=1))  # padding positions included, as in the official code


def _num_labels(model: nn.Module, labels: Sequence[int]) -> int:
    n = getattr(getattr(model, "config", None), "num_labels", None)
    return int(n) if n else max(2, max(int(y) for y in labels) + 1)


def _r1(model: nn.Module, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], cfg: BTUConfig,
        skip: set[int], seed: int) -> torch.Tensor:
    base = getattr(model, "base_model", model)
    if not hasattr(base, "embeddings"):
        raise ValueError(f"{type(model).__name__} has no .embeddings module for BTU's R1 exposure")
    emb_module = copy.deepcopy(base.embeddings)
    for p in emb_module.parameters():
        p.requires_grad_(True)
    hidden = _word_embeddings(model).weight.shape[1]
    torch.manual_seed(seed)
    bag = BagOfEmbeddings(emb_module, hidden, _num_labels(model, labels)).to(_device(model))
    before = emb_module.word_embeddings.weight.detach().clone()
    _fit(bag, tokenizer, sentences, labels, epochs=cfg.exposure_epochs, lr=cfg.exposure_lr,
         batch_size=cfg.r1_batch_size, max_len=cfg.max_len, seed=seed, pad_to_max=True)
    return rank_by_embedding_change(before, emb_module.word_embeddings.weight, skip)


def _r3(model: nn.Module, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], cfg: BTUConfig,
        skip: set[int], seed: int) -> torch.Tensor:
    probe = copy.deepcopy(model)
    for p in probe.parameters():
        p.requires_grad_(False)
    emb = _word_embeddings(probe)
    emb.weight.requires_grad_(True)
    before = emb.weight.detach().clone()
    _fit(probe, tokenizer, sentences, labels, epochs=cfg.exposure_epochs, lr=cfg.exposure_lr,
         batch_size=cfg.r3_batch_size, max_len=cfg.max_len, seed=seed)
    return rank_by_embedding_change(before, emb.weight, skip)


def btu_expose(
    model: nn.Module, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], cfg: BTUConfig | None = None
) -> BTUExposure:
    """Rank tokens by embedding change under R1, R2, R3 (on copies; ``model`` is not modified) and flag the union."""
    cfg = cfg or BTUConfig()
    if len(sentences) != len(labels) or not sentences:
        raise ValueError(f"need matching non-empty sentences and labels, got {len(sentences)} and {len(labels)}")
    vocab = _word_embeddings(model).weight.shape[0]
    k = cfg.count(vocab)
    skip = _special_ids(tokenizer)
    order: dict[str, torch.Tensor] = {}
    if "r1" in cfg.rankings:
        order["r1"] = _r1(model, tokenizer, sentences, labels, cfg, skip, cfg.seed)
    if "r2" in cfg.rankings:
        words = [tokenizer.decode([int(i)]).strip() for i in order["r1"][:k]]
        order["r2"] = _r1(model, tokenizer, remove_tokens(sentences, words), labels, cfg, skip, cfg.seed + 1)
    if "r3" in cfg.rankings:
        order["r3"] = _r3(model, tokenizer, sentences, labels, cfg, skip, cfg.seed + 2)
    top = {name: [int(i) for i in o[:k]] for name, o in order.items()}
    suspects: list[int] = []
    for name in cfg.rankings:
        suspects += [i for i in top[name] if i not in suspects]
    return BTUExposure(k, top, suspects, order)

