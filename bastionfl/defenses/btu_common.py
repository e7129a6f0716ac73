"""BTU's settings and the training helpers its exposure and clean tune share (see ``bastionfl.defenses.btu``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RANKINGS", "CUT_TO", "SUSPECT_RANKINGS", "BTUConfig"]


RANKINGS = ("r1", "r2", "r3")


CUT_TO = ("pad", "own")  # official: the pretrained [PAD] values; variant: the token's own pretrained values


SUSPECT_RANKINGS = ("paper", "frequency")  # paper: every top-k token; frequency: spare frequent ones (btu_frequency)


@dataclass(frozen=True)
class BTUConfig:
    """BTU settings; defaults follow the official ``config.json``/``BTU.py`` except ``max_len`` (CPU budget)."""

    threshold: float = 0.0005  # share of the vocabulary flagged per ranking (official 0.0005)
    top_k: int | None = None  # explicit count per ranking; overrides threshold
    rankings: tuple[str, ...] = RANKINGS
    exposure_epochs: int = 1
    exposure_lr: float = 2e-5
    r1_batch_size: int = 256
    r3_batch_size: int = 64
    max_len: int = 64  # official 128; R1 mean-pools over all max_len positions
    train_epochs: int = 1  # normal fine-tuning inside btu_defend (0 = the caller trains, or train_fn does)
    train_lr: float = 2e-5
    train_batch_size: int = 64
    clean_tune_epochs: int = 1  # used only when clean data is given
    clean_tune_lr: float = 2e-5
    cut_scale: float = 1.0  # multiplies c; 1.0 = official rule
    cut_to: str = "pad"  # "pad" = official; "own" = back to the token's own pretrained values
    purity: float = 0.0  # variant (0 = off, official): cut only suspects whose sentences carry one label >= this share
    ranking: str = "paper"  # "frequency": spare frequent suspects (bastionfl.defenses.btu_frequency)
    freq_share: float = 0.02  # frequency ranking: spare a token in >= this share of every label's sentences
    prior_ids: int = 7000  # frequency ranking: spare ids below this (frequency-ordered WordPiece vocab; 0 = off)
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [r for r in self.rankings if r not in RANKINGS]
        if bad or not self.rankings:
            raise ValueError(f"rankings must be a non-empty subset of {RANKINGS}, got {self.rankings}")
        if self.cut_to not in CUT_TO:
            raise ValueError(f"cut_to must be one of {CUT_TO}, got {self.cut_to!r}")
        if "r2" in self.rankings and "r1" not in self.rankings:
            raise ValueError("ranking r2 needs r1 (it removes R1's tokens first)")
        if self.ranking not in SUSPECT_RANKINGS:
            raise ValueError(f"ranking must be one of {SUSPECT_RANKINGS}, got {self.ranking!r}")
        if not 0 < self.freq_share <= 1 or self.prior_ids < 0:
            raise ValueError(f"freq_share must be in (0, 1] and prior_ids >= 0, got {self.freq_share}, {self.prior_ids}")
        if not 0 <= self.purity <= 1:
            raise ValueError(f"purity must be in [0, 1] (0 = off), got {self.purity}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        for name in ("exposure_lr", "train_lr", "clean_tune_lr", "cut_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("r1_batch_size", "r3_batch_size", "max_len", "train_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def count(self, vocab_size: int) -> int:
        """Tokens flagged per ranking: ``top_k`` or ``max(1, int(threshold * V))`` (15 for BERT's 30,522)."""
        return self.top_k if self.top_k is not None else max(1, int(self.threshold * vocab_size))


def _word_embeddings(model: nn.Module) -> nn.Embedding:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding input word embeddings (BTU needs one)")
    return emb


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _special_ids(tokenizer: Any) -> set[int]:
    return {int(i) for i in getattr(tokenizer, "all_special_ids", [])}


def _batches(
    tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], *, batch_size: int, max_len: int,
    gen: torch.Generator, pad_to_max: bool = False,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    order = torch.randperm(len(sentences), generator=gen).tolist()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer(
            [sentences[i] for i in chunk], padding="max_length" if pad_to_max else True, truncation=True,
            max_length=max_len, return_tensors="pt",
        )
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        yield inputs, torch.tensor([int(labels[i]) for i in chunk], dtype=torch.long)


def _fit(
    model: nn.Module, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], *, epochs: int, lr: float,
    batch_size: int, max_len: int, seed: int, pad_to_max: bool = False, decay: bool = False,
) -> None:
    """AdamW over the trainable parameters (the official optimiser), shuffled and seeded.

    ``decay``: the lr falls linearly from ``lr`` to 0 over all steps (the usual BERT fine-tuning schedule; the official
    code keeps it constant), so the last batches barely move the model.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    opt = torch.optim.AdamW(params, lr=lr)
    total = epochs * -(-len(sentences) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1.0 - step / total)) if decay else None
    gen = torch.Generator().manual_seed(seed)
    dev = _device(model)
    model.train()
    for _ in range(epochs):
        for inputs, y in _batches(tokenizer, sentences, labels, batch_size=batch_size, max_len=max_len, gen=gen,
                                  pad_to_max=pad_to_max):
            out = model(**{k: v.to(dev) for k, v in inputs.items()})
            logits = out.logits if hasattr(out, "logits") else out
            loss = F.cross_entropy(logits, y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()

