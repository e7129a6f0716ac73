"""``bastionfl sanity btu|defenses``: centralised (no federation) sanity runs of the defenses; parse, run, print."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bastionfl.tasks.backdoor import ATTACKS
from bastionfl.tasks.models import MODEL_NAMES
from bastionfl.tasks.text_backdoor import TEXT_ATTACKS

__all__ = ["btu", "defenses"]


def _btu_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl sanity btu",
                                description="Centralised BTU sanity run: fine-tune the text model on poisoned SST-2"
                                            " without and with BTU")
    p.add_argument("--data-dir", default=os.environ.get("BASTIONFL_DATA_DIR"),
                   help="folder holding sst2/, sst2-syntactic/, sst2-style/ (default: $BASTIONFL_DATA_DIR)")
    p.add_argument("--attack", choices=TEXT_ATTACKS, default="badnets")
    p.add_argument("--model", default="minilm", help="minilm (offline), tiny, or a Hugging Face name/path")
    p.add_argument("--layers", type=int, default=2, help="transformer layers kept (MiniLM has 6)")
    p.add_argument("--train-subset", type=int, default=0, help="train sentences used (0 = all 6,920)")
    p.add_argument("--eval-subset", type=int, default=0, help="dev sentences used for CA/ASR (0 = all 872)")
    p.add_argument("--tune-subset", type=int, default=872, help="clean test sentences for the BTU clean tune (0 = none)")
    p.add_argument("--poison-rate", type=float, default=0.1)
    p.add_argument("--target", type=int, default=1)
    p.add_argument("--mode", default="mix", choices=("mix", "dirty", "clean"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--threshold", type=float, default=0.0005, help="BTU share of the vocabulary per ranking")
    p.add_argument("--top-k", type=int, default=None, help="BTU tokens per ranking (overrides --threshold)")
    p.add_argument("--exposure-lr", type=float, default=2e-5)
    p.add_argument("--rankings", default="r1,r2,r3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-control", action="store_true", help="skip the clean-tune-only control run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p



def _defenses_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl sanity defenses",
                                description="Centralised sanity check of the image defenses on Fashion-MNIST")
    p.add_argument("--data-dir", required=True, type=Path, help="folder with the Fashion-MNIST IDX (.gz) files")
    p.add_argument("--attack", choices=ATTACKS, default="badnets")
    p.add_argument("--model", choices=MODEL_NAMES, default="cnn")
    p.add_argument("--subset", type=int, default=20000, help="training images (poisoned at --rate)")
    p.add_argument("--clean-size", type=int, default=1000, help="defender's clean set, disjoint from train/test")
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--target", type=int, default=0)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], choices=["clean", "abl", "rnp", "nad", "finetune"])
    return p


def btu(argv: list[str]) -> int:
    """``bastionfl sanity btu``."""
    from bastionfl.simulations import sanity_btu

    return sanity_btu.run(_btu_parser().parse_args(argv))


def defenses(argv: list[str]) -> int:
    """``bastionfl sanity defenses``."""
    from bastionfl.simulations import sanity_defenses

    return sanity_defenses.run(_defenses_parser().parse_args(argv))
