"""``bastionfl experiment image|text|text-tune|text-ceiling``: parse the options and run the experiment.

Each experiment module runs its grid with a progress display and writes its results page; this module only parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["image", "text", "text_tune", "text_ceiling"]


def _image_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl experiment image",
                                description="Federated image-backdoor grid {none, ABL, RNP, NAD, fine-tune} x "
                                            "{BadNets, Blended} on Fashion-MNIST, with a no-attack CA reference.")
    p.add_argument("--data-dir", default="", help="Fashion-MNIST IDX folder (required unless --quick)")
    p.add_argument("--model", default="cnn", choices=("cnn", "wrn-16-1"), help="model (default: the small CNN)")
    p.add_argument("--secure-aggregation", default="none", choices=("none", "xmkckks"),
                   help="run the attack arms with xMK-CKKS secure aggregation (the reference stays plaintext)")
    p.add_argument("--only", help="comma-separated rows to run, as attack/defense shell patterns "
                                  "(e.g. 'badnets/*,*/nad' or 'blended'); the no-attack reference always runs")
    p.add_argument("--quick", action="store_true", help="tiny digits configuration: 3 clients, clean set 300 (150 validate a repair; for tests)")
    p.add_argument("--results", type=Path, default=Path("docs/results-image.md"), help="markdown output")
    p.add_argument("--work-dir", type=Path, help="keep the runs' metrics and checkpoints here (default: temporary)")
    p.add_argument("--seed", type=int, default=0, help="one seed (with --quick, or --seeds '')")
    p.add_argument("--seeds", default=None, help="comma-separated seeds; the table shows mean ± std over them "
                                                "(default 0,1,2; --quick: --seed only)")
    p.add_argument("--he-rows", action="store_true", help="add rows with xMK-CKKS secure aggregation (no defense "
                                                          "and the defense that applies under encryption, per attack)")
    p.add_argument("--repair-set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a repair key for the repair rows (repeatable): repair_* for every repair row, rnp_*, "
                        "unlearn_*, fineprune_* for that repair's rows (e.g. fineprune_max_drop=20)")
    p.add_argument("--poison-rate", type=float, default=0.2, help="share of a poisoned client's images triggered "
                                                                    "(BadNets; Blended and boosted arms use their own)")
    p.add_argument("--rounds", type=int, default=None, help="federated rounds per arm (default 8; --quick: 2)")
    p.add_argument("--train-subset", type=int, default=20000, help="training images used, clean set included")
    p.add_argument("--clean-set-size", type=int, default=1000, help="server's clean set (held out in every arm)")
    p.add_argument("--lr", type=float, default=0.05, help="local SGD learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="local batch size")
    return p



def _text_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl experiment text",
                                description="Federated text-backdoor grid {none, BTU} x {BadNets, AddSent, Syntactic, "
                                            "Style} on SST-2, with a no-attack CA reference.")
    p.add_argument("--data-dir", required=True,
                   help="folder holding sst2/ (and sst2-syntactic/, sst2-style/ for those attacks)")
    p.add_argument("--results", type=Path, default=Path("docs/results-text.md"), help="markdown output")
    p.add_argument("--work-dir", type=Path, help="keep the runs' metrics and checkpoints here (default: temporary)")
    p.add_argument("--only", help="comma-separated attacks (badnets) or rows (badnets/btu) to run (default: all "
                                    "eight rows); the no-attack reference always runs")
    p.add_argument("--quick", action="store_true", help="tiny configuration (random tiny BERT, 1 round; for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="minilm", help="minilm | tiny-bert | a Hugging Face model id")
    p.add_argument("--layers", type=int, default=0, help="keep the first N transformer layers (0: all six)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--train-subset", type=int, default=3000,
                   help="training sentences shared by the clients (0: all 6,920)")
    p.add_argument("--lr", type=float, default=1e-4, help="local AdamW learning rate")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reference", type=Path,
                   help="reuse the no-attack run in this folder (from an earlier grid's --work-dir, same settings) "
                        "instead of running it again")
    p.add_argument("--btu-cut-to", choices=("pad", "own"), default="pad",
                   help="BTU replacement values: pad (the paper) or the token's own pretrained values (a variant)")
    p.add_argument("--clean-tune", type=int, default=0, metavar="N",
                   help="server runs BTU's clean tune (one epoch) on N held-out SST-2 test sentences after "
                        "the last aggregation, in every arm, the reference included (0: none; the test split has "
                        "1,821)")
    p.add_argument("--clean-tune-lr", type=float, default=0.0, metavar="LR",
                   help="the clean tune's AdamW lr (0: --lr; the BTU paper tunes at 2e-5)")
    p.add_argument("--clean-tune-batch", type=int, default=0, metavar="B",
                   help="the clean tune's batch size (0: --batch-size; the BTU paper uses 64)")
    p.add_argument("--clean-tune-decay", action="store_true",
                   help="the clean tune's lr falls linearly to 0 over its epoch (the paper keeps it constant)")
    p.add_argument("--btu-purity", type=float, default=0.0, metavar="Q",
                   help="BTU variant: cut only suspects whose sentences at the client carry one label at least Q of "
                        "the time (e.g. 0.95; 0: off, the paper)")
    p.add_argument("--btu-hold", action="store_true",
                   help="BTU variant: in later rounds cut first and keep the cut rows fixed while training")
    p.add_argument("--btu-ranking", choices=("paper", "frequency"), default="paper",
                   help="BTU suspects: paper (every top-k token) or frequency (spare tokens in >= 2%% of every "
                        "label's sentences at the client or with a vocabulary id below 7,000)")
    return p



def _text_tune_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl experiment text-tune",
                                description="Tune finished text runs with BTU's server clean tune over several seeds "
                                            "and compare them, paired, with the no-attack reference (the first run).")
    p.add_argument("runs", nargs="+", type=Path,
                   help="run folders (metrics.json + checkpoint.pt), the no-attack reference first")
    p.add_argument("--clean-set", type=int, default=1821, help="test-split sentences the server tunes on")
    p.add_argument("--seeds", type=int, default=3, help="tune seeds per run (the first is the federation's own)")
    p.add_argument("--lr", type=float, default=0.0, help="the tune's AdamW lr (0: the runs' own; the BTU paper: 2e-5)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="the tune's batch size (0: the runs' own; the BTU paper: 64)")
    p.add_argument("--decay", action="store_true", help="the tune's lr falls linearly to 0 (the paper: constant)")
    p.add_argument("--results", type=Path, default=Path("docs/results-text-tune.md"), help="markdown output")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    return p



def _text_ceiling_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastionfl experiment text-ceiling",
                                description="Central fine-tuning of the text model on SST-2 without attack: the CA, "
                                            "ASR floor and clean-model BadNets ASR that bound BTU's goal.")
    p.add_argument("--data-dir", type=Path, required=True, help="folder holding sst2/")
    p.add_argument("--results", type=Path, default=Path("docs/results-text-ceiling.md"), help="markdown output")
    p.add_argument("--plot", action="store_true", help="also draw the curves (PNG beside the results page)")
    p.add_argument("--model", default="minilm", help="minilm | tiny-bert | a Hugging Face model id")
    p.add_argument("--layers", type=int, default=0, help="keep the first N transformer layers (0: all)")
    p.add_argument("--train-subset", type=int, default=0, help="training sentences (0: all 6,920)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--evals-per-epoch", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate")
    p.add_argument("--decay", action="store_true", help="lr falls linearly to 0 over the whole run")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-len", type=int, default=48, help="tokens per sentence (the grid's 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own, one per core)")
    return p



def image(argv: list[str]) -> int:
    """``bastionfl experiment image``."""
    from bastionfl.simulations import experiment_image

    return experiment_image.run(_image_parser().parse_args(argv), argv)


def text(argv: list[str]) -> int:
    """``bastionfl experiment text``."""
    from bastionfl.simulations import experiment_text

    return experiment_text.run(_text_parser().parse_args(argv), argv)


def text_tune(argv: list[str]) -> int:
    """``bastionfl experiment text-tune``."""
    from bastionfl.simulations import experiment_tune

    return experiment_tune.run(_text_tune_parser().parse_args(argv), argv)


def text_ceiling(argv: list[str]) -> int:
    """``bastionfl experiment text-ceiling``."""
    from bastionfl.simulations import experiment_ceiling

    return experiment_ceiling.run(_text_ceiling_parser().parse_args(argv), argv)
