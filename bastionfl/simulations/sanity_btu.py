"""Centralised BTU sanity run: fine-tune MiniLM on poisoned SST-2 without and with BTU, print CA/ASR and flagged tokens.

Follows the official BTU pipeline order (arXiv 2501.03272, ``BTU.py``): exposure on the pretrained model, normal
fine-tuning on the poisoned set ("without BTU"), cut of the suspect embedding rows, optional one-epoch clean tune
on held-out clean sentences (the official code tunes on SST-2 test). CA is measured on clean dev, ASR on the
triggered non-target dev sentences (dev is the split that carries the syntactic/style paraphrases).

Example: ``bastionfl sanity btu --data-dir DATA --attack badnets --layers 2``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time

import torch

from bastionfl.defenses.btu import BTUConfig, btu_expose, btu_unlearn, token_ids_of
from bastionfl.tasks.text_backdoor import (
    TextAttackConfig,
    attack_dataset,
    build_text_asr_set,
    poison_text,
    trigger_words,
)
from bastionfl.tasks.text import (
    DatasetError,
    TextModelConfig,
    attack_success_rate,
    evaluate_text,
    load_text_dataset,
    load_text_model,
    train_text,
    word_embeddings,
)

__all__ = ["run"]


def _subset(n: int, k: int, seed: int) -> list[int]:
    idx = list(range(n))
    if 0 < k < n:
        idx = sorted(random.Random(seed).sample(idx, k))
    return idx


def run(args: argparse.Namespace) -> int:
    """Run the sanity experiment for parsed ``args``; 0 on success, 2 on a data/model error."""
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.data_dir:
        print("bastionfl sanity btu: --data-dir (or BASTIONFL_DATA_DIR) is required", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        data = load_text_dataset(attack_dataset(args.attack), args.data_dir)
        model, tok = load_text_model(TextModelConfig(name=args.model, num_layers=args.layers, seed=args.seed))
    except DatasetError as exc:
        print(f"bastionfl sanity btu: {exc}", file=sys.stderr)
        return 2
    atk = TextAttackConfig(args.attack, poison_rate=args.poison_rate, target=args.target, seed=args.seed,
                           mode=args.mode)
    tr = _subset(len(data.train_sentences), args.train_subset, args.seed)
    tr_s = [data.train_sentences[i] for i in tr]
    tr_y = [data.train_labels[i] for i in tr]
    tr_p = None if data.train_poison is None else [data.train_poison[i] for i in tr]
    poisoned = poison_text(tr_s, tr_y, atk, tr_p)
    ev = _subset(len(data.dev_sentences), args.eval_subset, args.seed + 1)
    dv_s = [data.dev_sentences[i] for i in ev]
    dv_y = [data.dev_labels[i] for i in ev]
    dv_p = None if data.dev_poison is None else [data.dev_poison[i] for i in ev]
    asr_set = build_text_asr_set(dv_s, dv_y, atk, dv_p)
    clean_nontarget = [t for t, lab in zip(dv_s, dv_y) if lab != args.target]
    tn = _subset(len(data.test_sentences), args.tune_subset, args.seed + 2) if args.tune_subset else []
    tune_s = [data.test_sentences[i] for i in tn]
    tune_y = [data.test_labels[i] for i in tn]
    kw = {"batch_size": 64, "max_len": args.max_len}
    results: dict[str, object] = {
        "args": vars(args), "train": len(tr_s), "poisoned": poisoned.num_poisoned, "dev": len(dv_s),
        "asr_set": len(asr_set), "tune": len(tune_s),
    }
    print(f"{args.attack}: {len(tr_s)} train ({poisoned.num_poisoned} poisoned), {len(dv_s)} dev, "
          f"{len(asr_set)} ASR sentences, {len(tune_s)} clean-tune; MiniLM layers={args.layers}", flush=True)

    def measure(tag: str, m: torch.nn.Module) -> None:
        _, ca = evaluate_text(m, tok, dv_s, dv_y, **kw)
        asr = attack_success_rate(m, tok, asr_set, args.target, **kw)
        # the same non-target sentences without the trigger: the share already called "target" is ASR's floor
        fpr = attack_success_rate(m, tok, clean_nontarget, args.target, **kw)
        results[tag] = {"ca": ca, "asr": asr, "clean_to_target": fpr, "t": time.perf_counter() - t0}
        print(f"[{time.perf_counter() - t0:7.1f}s] {tag:<22} CA {100 * ca:5.1f}  ASR {100 * asr:5.1f}  "
              f"(untriggered non-target -> target {100 * fpr:5.1f})", flush=True)

    reference = word_embeddings(model).weight.detach().clone()
    bcfg = BTUConfig(threshold=args.threshold, top_k=args.top_k, exposure_lr=args.exposure_lr,
                     rankings=tuple(r for r in args.rankings.split(",") if r), max_len=args.max_len, seed=args.seed)
    t = time.perf_counter()
    exposure = btu_expose(model, tok, poisoned.sentences, poisoned.labels, bcfg)
    results["exposure_s"] = time.perf_counter() - t
    words = trigger_words(atk)
    trig_ids = token_ids_of(tok, words)
    results["rankings"] = {k: tok.convert_ids_to_tokens(v) for k, v in exposure.top.items()}
    results["trigger_ranks"] = {tok.convert_ids_to_tokens(i): exposure.rank_of(i) for i in trig_ids}
    print(f"[{time.perf_counter() - t0:7.1f}s] exposure: {exposure.count} per ranking, {len(exposure.suspects)} "
          f"suspects", flush=True)
    for name, ids in exposure.top.items():
        print(f"  {name}: {' '.join(tok.convert_ids_to_tokens(ids))}")
    if trig_ids:
        flagged = {tok.convert_ids_to_tokens(i): i in exposure.suspects for i in trig_ids}
        results["trigger_flagged"] = flagged
        print(f"  trigger tokens flagged: {flagged}; ranks {results['trigger_ranks']}")

    train_text(model, tok, poisoned.sentences, poisoned.labels, epochs=args.epochs, lr=args.lr,
               batch_size=args.batch_size, max_len=args.max_len, seed=args.seed)
    measure("without BTU", model)
    cut = copy.deepcopy(model)
    c, replaced = btu_unlearn(cut, exposure.suspects, reference, pad_id=int(tok.pad_token_id))
    results["cut_threshold"] = c
    results["dims_replaced"] = sum(replaced.values())
    print(f"  cut: c = {c:.3g}, {sum(replaced.values())} dims replaced over {len(replaced)} rows")
    measure("BTU (cut only)", cut)
    if tune_s:
        train_text(cut, tok, tune_s, tune_y, epochs=1, lr=2e-5, batch_size=args.batch_size, max_len=args.max_len,
                   seed=args.seed + 5)
        measure("BTU + clean tune", cut)
    if tune_s and not args.no_control:
        tuned = copy.deepcopy(model)
        train_text(tuned, tok, tune_s, tune_y, epochs=1, lr=2e-5, batch_size=args.batch_size,
                   max_len=args.max_len, seed=args.seed + 5)
        measure("clean tune only", tuned)
    results["wall_s"] = time.perf_counter() - t0
    print(f"wall time {results['wall_s']:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


