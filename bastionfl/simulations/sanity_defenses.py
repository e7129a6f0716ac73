"""Centralised sanity check of the image defenses on Fashion-MNIST: clean model, backdoored model, ABL, RNP, NAD, FT.

Trains everything on one machine (no federation) and prints clean accuracy (CA, full test set) and attack success
rate (ASR, triggered non-target test images) per defense, plus one JSON line with all numbers and reports.
Usage: ``bastionfl sanity defenses --data-dir DIR --attack badnets --model cnn --subset 20000``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bastionfl.defenses import (
    ABLConfig,
    abl_local_train,
    finetune_repair,
    nad_repair,
    rnp_repair,
)
from bastionfl.defenses._common import accuracy, run_epoch, sgd
from bastionfl.tasks.backdoor import build_asr_set, make_trigger, poison_dataset
from bastionfl.tasks.models import build_model

__all__ = ["run"]


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as fh:
        return np.frombuffer(fh.read(), np.uint8, offset=offset)


def _load_split(data_dir: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    def find(stem: str) -> Path:
        for name in (stem + ".gz", stem):
            if (data_dir / name).exists():
                return data_dir / name
        raise SystemExit(f"{data_dir}: missing {stem}[.gz] (expected Fashion-MNIST IDX files)")

    x = _read_idx(find(f"{prefix}-images-idx3-ubyte"), 16).reshape(-1, 1, 28, 28)
    y = _read_idx(find(f"{prefix}-labels-idx1-ubyte"), 8)
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.long)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> nn.Module:
    """Standard training with crop + flip augmentation, lr / 10 for the last epoch."""
    gen = torch.Generator().manual_seed(seed)
    opt = sgd(model.parameters(), lr)
    for epoch in range(epochs):
        if epoch == epochs - 1 and epochs > 1:
            for group in opt.param_groups:
                group["lr"] = lr / 10
        run_epoch(model, x, y, opt, gen, batch_size=128, do_augment=True)
    return model


def run(args: argparse.Namespace) -> int:
    """Run the sanity experiment for parsed ``args``; prints a table and a JSON line; returns 0."""
    torch.set_num_threads(args.threads)
    t0 = time.time()

    tx, ty = _load_split(args.data_dir, "train")
    vx, vy = _load_split(args.data_dir, "t10k")
    order = torch.randperm(tx.shape[0], generator=torch.Generator().manual_seed(args.seed))
    train_idx, clean_idx = order[: args.subset], order[args.subset : args.subset + args.clean_size]
    x, y = tx[train_idx], ty[train_idx]
    cx, cy = tx[clean_idx], ty[clean_idx]
    trigger = make_trigger(args.attack, (1, 28, 28), seed=args.seed + 1)
    px, py, mask = poison_dataset(x, y, trigger, rate=args.rate, target=args.target, seed=args.seed)
    ax, ay = build_asr_set(vx, vy, trigger, target=args.target)

    def new_model() -> nn.Module:
        torch.manual_seed(args.seed)
        return build_model(args.model, 1, 10)

    rows: dict[str, dict[str, object]] = {}

    def record(name: str, model: nn.Module, start: float, report: dict[str, object] | None = None) -> None:
        rows[name] = {"ca": accuracy(model, vx, vy), "asr": accuracy(model, ax, ay), "seconds": time.time() - start}
        if report is not None:
            rows[name]["report"] = report
        print(f"{name:<10} CA {100 * rows[name]['ca']:6.2f}  ASR {100 * rows[name]['asr']:6.2f}  "
              f"({rows[name]['seconds']:.0f}s)", flush=True)

    if "clean" not in args.skip:
        s = time.time()
        record("clean", _train(new_model(), x, y, args.epochs, args.lr, args.seed), s)
    s = time.time()
    backdoored = _train(new_model(), px, py, args.epochs, args.lr, args.seed)
    record("backdoor", backdoored, s)

    if "abl" not in args.skip:
        s = time.time()
        model, state, cfg = new_model(), None, ABLConfig()
        metrics: dict[str, float] = {}
        for r in range(max(args.epochs, cfg.isolation_rounds + 1)):
            state, metrics = abl_local_train(model, px, py, state, cfg, epochs=1, lr=args.lr, batch_size=128,
                                             seed=args.seed + r, ground_truth_poison_mask=mask)
        record("abl", model, s, {k: float(v) for k, v in metrics.items()})
    if "rnp" not in args.skip:
        s = time.time()
        model, _, rep = rnp_repair(backdoored, cx, cy, seed=args.seed)
        rep.pop("sweep", None)
        record("rnp", model, s, rep)
    if "nad" not in args.skip:
        s = time.time()
        model, rep = nad_repair(backdoored, cx, cy, seed=args.seed)
        record("nad", model, s, rep)
    if "finetune" not in args.skip:
        s = time.time()
        model, rep = finetune_repair(backdoored, cx, cy, seed=args.seed)
        record("finetune", model, s, rep)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows,
                      "wall_seconds": time.time() - t0}, default=str))
    return 0


