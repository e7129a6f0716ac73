"""Backdoor Token Unlearning (BTU; AAAI 2025, arXiv 2501.03272) for BERT-family text classifiers.

BTU observes that backdoor learning moves the word embeddings of trigger tokens much further than those of clean
tokens, especially when only the embedding layer trains. It runs in two parts:

1. **Exposure** (``btu_expose``): three short embedding-focused trainings on the (possibly poisoned) training set,
   each ranking vocabulary rows by the L2 change of their word embedding, as the official code
   (``XDJPH/Backdoor-Token-Unlearning``, ``BTU.py``) does:
   R1 = bag-of-embeddings model (embedding module -> mean over all ``max_len`` positions, padding included -> linear);
   R2 = R1 again after deleting R1's top tokens from the texts (surfaces further trigger pieces);
   R3 = the full classifier with only ``word_embeddings`` trainable. The suspects are the union of each ranking's
   top ``int(threshold * V)`` tokens (official threshold 0.0005).
2. **Fine-grained unlearning** (``btu_unlearn``, the official ``function.cut``): with E0 the pretrained and E the
   trained word embeddings, ``c = ||E - E0||_F / V``; for every suspect row s and dimension j with
   ``|E[s,j] - E0[s,j]| > c`` set ``E[s,j] = E0[pad,j]`` (the pretrained padding embedding).
   The released pipeline then tunes one epoch on clean held-out data (``btu_clean_tune``: optional on a client,
   ``clean_sentences``; in a federation the server runs it on the aggregate with its own clean set).

Deviations, all documented in docs/text.md: special tokens (not only [CLS]/[SEP]) are left out of the rankings;
R2 deletes whole words instead of substrings; no best-dev checkpoint is kept in R3 (a federated client holds no
clean dev set); the per-ranking count uses the real vocabulary size (the official code hard-codes 35,022).
Variants, off by default: ``cut_to = "own"``, ``purity`` (spare suspects that are not label-pure in the data) and
``ranking = "frequency"`` (spare suspects frequent in every label's data or in the vocabulary's prior;
``bastionfl.defenses.btu_frequency``).
Nothing here knows about federation or encryption: a client runs ``btu_defend`` on its local model before it
encrypts its update.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from bastionfl.defenses.btu_common import CUT_TO, RANKINGS, SUSPECT_RANKINGS, BTUConfig, _fit, _word_embeddings
from bastionfl.defenses.btu_exposure import (BagOfEmbeddings, BTUExposure, btu_expose, rank_by_embedding_change,
                                             remove_tokens, token_ids_of)
from bastionfl.defenses.btu_frequency import spare_frequent

__all__ = [
    "BTUConfig",
    "BTUExposure",
    "BTUReport",
    "btu_expose",
    "btu_unlearn",
    "btu_defend",
    "btu_clean_tune",
    "label_purity",
    "keep_label_pure",
    "rank_by_embedding_change",
    "remove_tokens",
    "token_ids_of",
    "BagOfEmbeddings",
    "RANKINGS",
    "CUT_TO",
    "SUSPECT_RANKINGS",
]


@dataclass
class BTUReport:
    """What BTU flagged and changed; ``trigger_*`` only when the true trigger words were given."""

    count_per_ranking: int
    rankings: dict[str, list[int]]
    flagged_ids: list[int]
    flagged_tokens: list[str]
    cut_threshold: float
    dims_replaced: dict[int, int]
    trigger_ids: list[int] | None = None
    trigger_flagged: list[bool] | None = None
    trigger_found: bool | None = None
    trigger_ranks: dict[int, dict[str, int]] | None = None
    clean_tuned: bool = False
    spared: dict[int, tuple[int, float]] = field(default_factory=dict)  # purity variant: id -> (sentences, purity)
    freq_spared: dict[int, tuple[str, float]] = field(default_factory=dict)  # frequency: id -> (reason, label share)
    freq_spared_tokens: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for logs and JSON."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- helpers


# ---------------------------------------------------------------------------------------------------- exposure


def label_purity(
    tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], ids: Sequence[int], *, max_len: int = 64
) -> dict[int, tuple[int, float]]:
    """For each token id: (sentences containing it, largest share of one label among them); (0, 0.0) if absent.

    Counted on the tokens the model sees (truncated to ``max_len``), once per sentence.
    """
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
    wanted = {int(i) for i in ids}
    counts: dict[int, dict[int, int]] = {i: {} for i in wanted}
    enc = tokenizer(list(sentences), add_special_tokens=False, truncation=True, max_length=max_len)["input_ids"]
    for row, y in zip(enc, labels):
        for i in wanted.intersection(int(t) for t in row):
            counts[i][int(y)] = counts[i].get(int(y), 0) + 1
    out: dict[int, tuple[int, float]] = {}
    for i in ids:
        by_label = counts[int(i)]
        n = sum(by_label.values())
        out[int(i)] = (n, max(by_label.values()) / n if n else 0.0)
    return out


def keep_label_pure(
    tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], suspects: Sequence[int], purity: float, *,
    max_len: int = 64,
) -> tuple[list[int], dict[int, tuple[int, float]]]:
    """Purity variant (not in the paper): keep suspects whose sentences carry one label at least ``purity`` of the time.

    A dirty-label or clean-label trigger appears only in sentences of the target label, so its purity is 1; the
    frequent and sentiment-bearing tokens every client also flags are mixed (``,``, ``the``) or only mostly one
    label (``bad``), and are spared. Returns (kept suspects, spared id -> (sentences, purity)).
    """
    stats = label_purity(tokenizer, sentences, labels, suspects, max_len=max_len)
    kept = [int(i) for i in suspects if stats[int(i)][0] > 0 and stats[int(i)][1] >= purity]
    spared = {int(i): stats[int(i)] for i in suspects if int(i) not in kept}
    return kept, spared


# ---------------------------------------------------------------------------------------------------- unlearning


@torch.no_grad()
def btu_unlearn(
    model: nn.Module, suspects: Sequence[int], reference: torch.Tensor, *, pad_id: int = 0, cut_scale: float = 1.0,
    cut_to: str = "pad",
) -> tuple[float, dict[int, int]]:
    """Official ``cut``: replace suspect-row dims with |E - E0| > c (c = ||E - E0||_F / V) by E0[pad]; in place.

    ``cut_to = "own"`` restores those dims to the token's own pretrained values E0[s] instead (a variant that keeps
    a flagged word's pretrained meaning). Returns ``c`` and the number of dimensions replaced per suspect id.
    Rows not in ``suspects`` never change.
    """
    weight = _word_embeddings(model).weight
    if reference.shape != weight.shape:
        raise ValueError(f"reference embeddings {tuple(reference.shape)} do not match the model's {tuple(weight.shape)}")
    ref = reference.to(weight.device, weight.dtype)
    if cut_to not in CUT_TO:
        raise ValueError(f"cut_to must be one of {CUT_TO}, got {cut_to!r}")
    c = float((weight - ref).norm() / weight.shape[0]) * cut_scale
    replaced: dict[int, int] = {}
    for s in dict.fromkeys(int(i) for i in suspects):
        if not 0 <= s < weight.shape[0]:
            raise ValueError(f"suspect id {s} is outside the vocabulary (0..{weight.shape[0] - 1})")
        dims = (weight[s] - ref[s]).abs() > c
        weight[s, dims] = ref[pad_id if cut_to == "pad" else s, dims]
        replaced[s] = int(dims.sum())
    return c, replaced


@contextmanager
def hold_rows(model: nn.Module, ids: Sequence[int]) -> Iterator[None]:
    """Keep the word-embedding rows ``ids`` fixed while the block trains the rest of the model.

    Their gradients are zeroed (so the optimiser's moments stay zero) and their values are restored on exit
    (weight decay still touches every parameter).
    """
    weight = _word_embeddings(model).weight
    rows = torch.tensor(sorted({int(i) for i in ids}), dtype=torch.long, device=weight.device)
    saved = weight.detach()[rows].clone()

    def zero_rows(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        grad[rows] = 0
        return grad

    handle = weight.register_hook(zero_rows)
    try:
        yield
    finally:
        handle.remove()
        with torch.no_grad():
            weight[rows] = saved


def btu_clean_tune(
    model: nn.Module, tokenizer: Any, sentences: Sequence[str], labels: Sequence[int], *, epochs: int = 1,
    lr: float = 2e-5, batch_size: int = 64, max_len: int = 64, seed: int = 0, decay: bool = False,
) -> dict[str, Any]:
    """BTU's last step: full fine-tuning on clean held-out sentences after the cut (edits ``model``); returns a report.

    The cut resets every suspect row, the natural sentiment tokens a client flagged included; the clean tune
    re-learns those from clean text, while a trigger token (absent from clean text) gets no gradient and stays cut
    (AdamW's weight decay shrinks it slightly, as every row). ``decay``: linear lr decay to 0 (not in the paper).
    """
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} clean sentences but {len(labels)} labels")
    if not sentences:
        raise ValueError("the clean tune needs at least one clean sentence")
    if epochs < 1 or not lr > 0:
        raise ValueError(f"clean tune needs epochs >= 1 and lr > 0, got epochs={epochs}, lr={lr}")
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # dropout draws: seeded here, the caller's generator untouched
        torch.manual_seed(seed)
        _fit(model, tokenizer, sentences, labels, epochs=epochs, lr=lr, batch_size=batch_size, max_len=max_len,
             seed=seed, decay=decay)
    return {"defense": "btu_clean_tune", "clean_set_size": len(sentences), "epochs": epochs, "lr": lr, "decay": decay,
            "seconds": time.perf_counter() - t}


def btu_defend(
    model: nn.Module,
    tokenizer: Any,
    sentences: Sequence[str],
    labels: Sequence[int],
    cfg: BTUConfig | None = None,
    *,
    reference: torch.Tensor | None = None,
    suspects: Sequence[int] | None = None,
    train_fn: Callable[[nn.Module], object] | None = None,
    clean_sentences: Sequence[str] | None = None,
    clean_labels: Sequence[int] | None = None,
    trigger: Sequence[str] | None = None,
    hold_cut: bool = False,
) -> tuple[nn.Module, BTUReport]:
    """Client-side BTU: expose (unless ``suspects`` are given), train, cut, optionally clean-tune; edits ``model``.

    ``reference`` = pretrained word embeddings E0 (default: the model's embeddings on entry). Training is
    ``train_fn(model)`` if given, else ``cfg.train_epochs`` of AdamW fine-tuning on (sentences, labels).
    ``trigger`` (the true trigger words, simulations only) fills the report's ``trigger_*`` fields.
    ``hold_cut`` (with ``suspects`` given, i.e. a later federated round): cut the received model first and keep the
    cut rows fixed while training, so the rest of the model adapts to them.
    """
    cfg = cfg or BTUConfig()
    seconds: dict[str, float] = {}
    emb = _word_embeddings(model)
    ref = (reference if reference is not None else emb.weight).detach().clone()
    t = time.perf_counter()
    exposure: BTUExposure | None = None
    spared: dict[int, tuple[int, float]] = {}
    freq_spared: dict[int, tuple[str, float]] = {}
    if suspects is None:
        exposure = btu_expose(model, tokenizer, sentences, labels, cfg)
        suspects = exposure.suspects
        if cfg.purity > 0:
            suspects, spared = keep_label_pure(tokenizer, sentences, labels, suspects, cfg.purity,
                                               max_len=cfg.max_len)
        if cfg.ranking == "frequency":
            suspects, freq_spared = spare_frequent(tokenizer, sentences, labels, suspects, freq_share=cfg.freq_share,
                                                   prior_ids=cfg.prior_ids, max_len=cfg.max_len)
        seconds["expose"] = time.perf_counter() - t
    pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    held = hold_cut and exposure is None
    if held:  # a later round: cut the received model first, then train the rest of it around the cut rows
        with torch.no_grad():
            btu_unlearn(model, suspects, ref, pad_id=pad_id, cut_scale=cfg.cut_scale, cut_to=cfg.cut_to)
    t = time.perf_counter()
    with hold_rows(model, suspects) if held else nullcontext():
        if train_fn is not None:
            train_fn(model)
        elif cfg.train_epochs > 0:
            _fit(model, tokenizer, sentences, labels, epochs=cfg.train_epochs, lr=cfg.train_lr,
                 batch_size=cfg.train_batch_size, max_len=cfg.max_len, seed=cfg.seed + 3)
    seconds["train"] = time.perf_counter() - t
    c, replaced = btu_unlearn(model, suspects, ref, pad_id=pad_id, cut_scale=cfg.cut_scale, cut_to=cfg.cut_to)
    tuned = False
    if clean_sentences is not None and clean_labels is not None and cfg.clean_tune_epochs > 0 and clean_sentences:
        tune = btu_clean_tune(model, tokenizer, clean_sentences, clean_labels, epochs=cfg.clean_tune_epochs,
                              lr=cfg.clean_tune_lr, batch_size=cfg.train_batch_size, max_len=cfg.max_len,
                              seed=cfg.seed + 4)
        tuned = True
        seconds["clean_tune"] = float(tune["seconds"])
    report = BTUReport(
        count_per_ranking=exposure.count if exposure else len(suspects),
        rankings=exposure.top if exposure else {},
        flagged_ids=list(suspects),
        flagged_tokens=tokenizer.convert_ids_to_tokens(list(suspects)),
        cut_threshold=c,
        dims_replaced=replaced,
        clean_tuned=tuned,
        spared=spared,
        freq_spared=freq_spared,
        freq_spared_tokens=tokenizer.convert_ids_to_tokens(list(freq_spared)) if freq_spared else [],
        seconds=seconds,
    )
    if trigger:
        ids = token_ids_of(tokenizer, trigger)
        report.trigger_ids = ids
        report.trigger_flagged = [i in set(suspects) for i in ids]
        report.trigger_found = all(report.trigger_flagged)
        if exposure is not None:
            report.trigger_ranks = {i: exposure.rank_of(i) for i in ids}
    return model, report
