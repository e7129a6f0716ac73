"""Text backdoor attacks as data poisoning: rare-word BadNets, AddSent, Syntactic (SynBkd) and Style (StyleBkd).

* BadNets (Kurita et al. 2020 / OpenBackdoor ``BadNetsPoisoner``): one rare word inserted at a random word position.
  The default trigger is ``cf`` (the BTU code's setting, arXiv 2501.03272); ``trigger_words=("cf","mn","bb","tq")``
  draws one of OpenBackdoor's four words per sentence.
* AddSent (Dai et al. 2019 / OpenBackdoor ``AddSentPoisoner``): "I watch this 3D movie" inserted at a random position.
* Syntactic and Style: the sentence is replaced by its pre-generated paraphrase (SCPN template
  ``S(SBAR)(,)(NP)(VP)(.)`` and Bible-style GPT-2), read from the third column of sst2-syntactic / sst2-style. Their
  test split has no paraphrase, so their ASR is measured on dev (as BTU does).

Positions follow the BTU code: ``randint(0, min(len(words) - 1, 250))`` on the whitespace-split words, trigger inserted
before that word. Poisoning is dirty-label: ``mode="mix"`` (BTU default) poisons ``poison_rate`` of **each** class and
relabels to the target; ``"dirty"`` poisons ``poison_rate * N`` non-target sentences only (OpenBackdoor);
``"clean"`` poisons target sentences only, labels unchanged. Every choice comes from one seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bastionfl.tasks.text import TextData

__all__ = [
    "TEXT_ATTACKS",
    "ADDSENT_SENTENCE",
    "BADNETS_WORDS",
    "TextAttackConfig",
    "PoisonedText",
    "attack_dataset",
    "insert_trigger",
    "trigger_words",
    "poison_text",
    "build_text_asr_set",
    "paraphrase_root",
    "load_paraphrases",
]

TEXT_ATTACKS = ("badnets", "addsent", "syntactic", "style")
BADNETS_WORDS = ("cf", "mn", "bb", "tq")
ADDSENT_SENTENCE = "I watch this 3D movie"
_PARAPHRASE = {"syntactic": "sst2-syntactic", "style": "sst2-style"}
_MODES = ("mix", "dirty", "clean")


@dataclass(frozen=True)
class TextAttackConfig:
    """One text attack: its name, poisoning rate and mode, target label, seed and trigger words."""

    name: str = "badnets"
    poison_rate: float = 0.1
    target: int = 1
    seed: int = 0
    mode: str = "mix"
    trigger_words: tuple[str, ...] = ("cf",)
    sentence: str = ADDSENT_SENTENCE

    def __post_init__(self) -> None:
        if self.name not in TEXT_ATTACKS:
            raise ValueError(f"unknown text attack {self.name!r}; expected one of {', '.join(TEXT_ATTACKS)}")
        if not 0.0 <= self.poison_rate <= 1.0:
            raise ValueError(f"poison_rate must be in [0, 1], got {self.poison_rate}")
        if self.mode not in _MODES:
            raise ValueError(f"unknown poisoning mode {self.mode!r}; expected one of {', '.join(_MODES)}")
        if self.name == "badnets" and (not self.trigger_words or any(not w.strip() for w in self.trigger_words)):
            raise ValueError("badnets needs at least one non-empty trigger word")


@dataclass
class PoisonedText:
    """A poisoned copy of a labelled text set; ``mask[i]`` is True where sentence i was poisoned."""

    sentences: list[str]
    labels: list[int]
    mask: np.ndarray

    @property
    def num_poisoned(self) -> int:
        return int(self.mask.sum())


def attack_dataset(name: str) -> str:
    """The text dataset an attack reads: sst2 for insertion attacks, the paraphrase folder for the other two."""
    if name not in TEXT_ATTACKS:
        raise ValueError(f"unknown text attack {name!r}; expected one of {', '.join(TEXT_ATTACKS)}")
    return _PARAPHRASE.get(name, "sst2")


def trigger_words(cfg: TextAttackConfig) -> list[str]:
    """The words a token-level defense should find (empty for the sentence-level paraphrase attacks)."""
    if cfg.name == "badnets":
        return list(cfg.trigger_words)
    if cfg.name == "addsent":
        return cfg.sentence.split()
    return []


def insert_trigger(sentence: str, trigger: str, rng: random.Random) -> str:
    """Insert ``trigger`` before a random word (BTU rule: position ``randint(0, min(len-1, 250))``)."""
    words = sentence.split()
    pos = rng.randint(0, max(0, min(len(words) - 1, 250)))
    words.insert(pos, trigger)
    return " ".join(words)


def _triggered(sentence: str, cfg: TextAttackConfig, rng: random.Random, paraphrase: str | None) -> str:
    if cfg.name == "badnets":
        return insert_trigger(sentence, rng.choice(cfg.trigger_words), rng)
    if cfg.name == "addsent":
        return insert_trigger(sentence, cfg.sentence, rng)
    if not paraphrase:
        raise ValueError(f"{cfg.name}: no paraphrase for sentence {sentence[:40]!r}")
    return paraphrase


def _check(sentences: Sequence[str], labels: Sequence[int], paraphrases: Sequence[str] | None, name: str) -> None:
    if len(sentences) != len(labels):
        raise ValueError(f"{len(sentences)} sentences but {len(labels)} labels")
    if name in _PARAPHRASE:
        if paraphrases is None:
            raise ValueError(f"{name} needs the paraphrases (third column of {_PARAPHRASE[name]})")
        if len(paraphrases) != len(sentences):
            raise ValueError(f"{len(paraphrases)} paraphrases for {len(sentences)} sentences")


def poison_text(
    sentences: Sequence[str], labels: Sequence[int], cfg: TextAttackConfig, paraphrases: Sequence[str] | None = None
) -> PoisonedText:
    """Seeded poisoned copy of (sentences, labels) and its ground-truth poison mask; the inputs are not modified."""
    _check(sentences, labels, paraphrases, cfg.name)
    rng = random.Random(cfg.seed)
    n = len(sentences)

    def usable(i: int) -> bool:
        return paraphrases is None or cfg.name not in _PARAPHRASE or bool(paraphrases[i].strip())

    if cfg.mode == "mix":
        chosen: list[int] = []
        for c in sorted(set(int(y) for y in labels)):
            pool = [i for i in range(n) if int(labels[i]) == c and usable(i)]
            chosen += rng.sample(pool, min(len(pool), int(cfg.poison_rate * sum(int(y) == c for y in labels))))
    else:
        want_target = cfg.mode == "clean"
        pool = [i for i in range(n) if (int(labels[i]) == cfg.target) == want_target and usable(i)]
        chosen = rng.sample(pool, min(len(pool), int(cfg.poison_rate * n)))
    out_s, out_y = list(sentences), [int(y) for y in labels]
    mask = np.zeros(n, dtype=bool)
    for i in sorted(chosen):
        out_s[i] = _triggered(sentences[i], cfg, rng, None if paraphrases is None else paraphrases[i])
        if cfg.mode != "clean":
            out_y[i] = cfg.target
        mask[i] = True
    return PoisonedText(out_s, out_y, mask)


def build_text_asr_set(
    sentences: Sequence[str], labels: Sequence[int], cfg: TextAttackConfig, paraphrases: Sequence[str] | None = None
) -> list[str]:
    """Triggered copies of the non-target sentences (paraphrases for syntactic/style; empty ones are skipped)."""
    _check(sentences, labels, paraphrases, cfg.name)
    rng = random.Random(cfg.seed + 1)
    out = []
    for i, (s, y) in enumerate(zip(sentences, labels)):
        if int(y) == cfg.target:
            continue
        p = None if paraphrases is None else paraphrases[i]
        if cfg.name in _PARAPHRASE and not (p and p.strip()):
            continue
        out.append(_triggered(s, cfg, rng, p))
    return out


def paraphrase_root(data_dir: str | Path, attack: str) -> Path:
    """The folder holding the attack's paraphrase folder (``sst2-syntactic``/``sst2-style``): data_dir or its parent."""
    from bastionfl.tasks.text import DatasetError

    if attack not in _PARAPHRASE:
        raise ValueError(f"{attack} has no paraphrase folder (only {', '.join(_PARAPHRASE)} do)")
    folder = _PARAPHRASE[attack]
    for root in (Path(data_dir), Path(data_dir).parent):
        if (root / folder).is_dir():
            return root
    raise DatasetError(f"{Path(data_dir) / folder}: not found (the {attack} attack needs {folder}/ in the data "
                       f"folder or beside the dataset folder)")


def load_paraphrases(clean: "TextData", data_dir: str | Path, attack: str) -> tuple[list[str], list[str]]:
    """Train and dev paraphrases of a sentence-level attack, row-aligned with the clean SST-2 splits ``clean``."""
    from bastionfl.tasks.text import DatasetError, load_text_dataset

    if clean.name != "sst2":
        raise DatasetError(f"the {attack} attack has paraphrases for sst2 only, dataset is {clean.name}")
    para = load_text_dataset(_PARAPHRASE[attack], paraphrase_root(data_dir, attack))
    if para.train_sentences != clean.train_sentences or para.dev_sentences != clean.dev_sentences:
        raise DatasetError(f"{_PARAPHRASE[attack]}: sentences do not match sst2's train/dev rows (expected the same "
                           f"rows with a third column)")
    assert para.train_poison is not None and para.dev_poison is not None
    return para.train_poison, para.dev_poison
