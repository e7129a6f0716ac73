"""The modes of a run as enums, and the catalogue of datasets and models with the task kind each belongs to.

This is the one place that says which datasets exist and whether a dataset is an image or a text task; the task
registry (``bastionfl.tasks.registry``) maps a task kind to its implementation. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "TaskKind",
    "Partition",
    "SecureAggregation",
    "HEProfile",
    "ThreatModel",
    "Attack",
    "ClientDefense",
    "TriggerType",
    "TriggerPosition",
    "AttackMode",
    "Repair",
    "BTUCut",
    "BTURanking",
    "Auth",
    "DATASETS",
    "IMAGE_MODELS",
    "TEXT_MODELS",
    "TaskProfile",
    "TASK_PROFILES",
    "task_kind",
]


class TaskKind(StrEnum):
    """What kind of learning task a dataset is."""

    IMAGE = "image"
    TEXT = "text"


class Partition(StrEnum):
    """How the training set is split among clients."""

    IID = "iid"
    DIRICHLET = "dirichlet"


class SecureAggregation(StrEnum):
    """How the server combines updates: plaintext FedAvg or xMK-CKKS (it never sees one update)."""

    NONE = "none"
    XMKCKKS = "xmkckks"


class ThreatModel(StrEnum):
    """Whom secure aggregation defends against (``bastionfl.crypto.ThreatModel``; docs/crypto.md)."""

    HONEST_BUT_CURIOUS = "honest-but-curious"
    MALICIOUS = "malicious"
    MALICIOUS_COLLUDING = "malicious-colluding"


class HEProfile(StrEnum):
    """The xMK-CKKS parameter profiles (``bastionfl.crypto.get_profile``)."""

    PRECISE = "precise"
    LEAN = "lean"


class Attack(StrEnum):
    """The simulated data-poisoning backdoor; image attacks and text attacks (see ``TASK_PROFILES``)."""

    NONE = "none"
    BADNETS = "badnets"
    BLENDED = "blended"
    ADDSENT = "addsent"
    SYNTACTIC = "syntactic"
    STYLE = "style"


class TriggerType(StrEnum):
    """The pattern of an image trigger (auto: the attack's own, BadNets' grid or Blended's noise)."""

    AUTO = "auto"
    GRID = "grid"
    SQUARE = "square"
    NOISE = "noise"


class TriggerPosition(StrEnum):
    """Where a BadNets patch sits: a fixed corner, or a random place per image."""

    BOTTOM_RIGHT = "bottom-right"
    TOP_LEFT = "top-left"
    RANDOM = "random"


class AttackMode(StrEnum):
    """Which label a triggered image gets: the target (all-to-one) or the next class (all-to-all)."""

    ALL_TO_ONE = "all-to-one"
    ALL_TO_ALL = "all-to-all"


class ClientDefense(StrEnum):
    """The defense an honest client runs during local training."""

    NONE = "none"
    ABL = "abl"
    BTU = "btu"


class Repair(StrEnum):
    """The server's repair of the global model with a small clean set."""

    NONE = "none"
    RNP = "rnp"
    NAD = "nad"
    FINETUNE = "finetune"
    UNLEARN = "unlearn"
    FINEPRUNE = "fineprune"


class BTUCut(StrEnum):
    """What BTU writes into a flagged token's moved embedding dimensions."""

    PAD = "pad"
    OWN = "own"


class BTURanking(StrEnum):
    """Which of BTU's exposed tokens a client cuts: every top-k one (the paper) or the infrequent ones."""

    PAPER = "paper"
    FREQUENCY = "frequency"


class Auth(StrEnum):
    """Client admission: none, or one-time pseudonyms checked by a Home Authority."""

    NONE = "none"
    PSEUDONYM = "pseudonym"


DATASETS: dict[str, TaskKind] = {
    "digits": TaskKind.IMAGE,
    "fashion-mnist": TaskKind.IMAGE,
    "mnist": TaskKind.IMAGE,
    "cifar10": TaskKind.IMAGE,
    "sst2": TaskKind.TEXT,
    "hsol": TaskKind.TEXT,
}
IMAGE_MODELS = ("cnn", "wrn-16-1", "wrn-16-4")
TEXT_MODELS = ("minilm", "tiny-bert")  # plus any Hugging Face model id or local folder


@dataclass(frozen=True)
class TaskProfile:
    """What a task kind accepts, and the defaults a run takes when it switches to that kind."""

    kind: TaskKind
    attacks: tuple[Attack, ...]
    client_defenses: tuple[ClientDefense, ...]
    repairs: tuple[Repair, ...]
    defaults: dict[str, object]  # flat config key -> default for this kind (model, lr, batch size, ...)


TASK_PROFILES: dict[TaskKind, TaskProfile] = {
    TaskKind.IMAGE: TaskProfile(
        TaskKind.IMAGE,
        attacks=(Attack.NONE, Attack.BADNETS, Attack.BLENDED),
        client_defenses=(ClientDefense.NONE, ClientDefense.ABL),
        repairs=(Repair.NONE, Repair.RNP, Repair.NAD, Repair.FINETUNE, Repair.UNLEARN, Repair.FINEPRUNE),
        defaults={"model": "cnn", "lr": 0.05, "batch_size": 32, "text_layers": 0, "rounds": 5,
                  "stage_timeout_s": 600.0, "repair_val_fraction": 0.5},
    ),
    TaskKind.TEXT: TaskProfile(
        TaskKind.TEXT,
        attacks=(Attack.NONE, Attack.BADNETS, Attack.ADDSENT, Attack.SYNTACTIC, Attack.STYLE),
        client_defenses=(ClientDefense.NONE, ClientDefense.BTU),
        repairs=(Repair.NONE, Repair.FINETUNE),
        # MiniLM, all six layers, AdamW at 1e-4, batch 16: learns to ~85 % CA on SST-2 in three rounds
        # (docs/results-text.md); the image defaults (SGD's 0.05, two layers) leave it at chance.
        # A client trains a 22M-parameter encoder on the CPU: allow a stage half an hour before a node counts as lost.
        defaults={"model": "minilm", "lr": 1e-4, "batch_size": 16, "text_layers": 0, "rounds": 3,
                  "stage_timeout_s": 1800.0, "repair_val_fraction": 0.0},
    ),
}


def task_kind(dataset: str) -> TaskKind:
    """The task kind of a dataset name (``KeyError`` for an unknown one: the config refuses those first)."""
    return DATASETS[dataset]
