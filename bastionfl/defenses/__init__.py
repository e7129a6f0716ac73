"""Backdoor defenses over a torch model and tensors: ABL (client-side training), RNP, NAD, fine-tuning, fine-pruning
(repair).

Nothing here knows about federation or encryption; the client and server rooms call these functions.
"""

from bastionfl.defenses.abl import ABLConfig, ABLState, abl_local_train
from bastionfl.defenses.fineprune import FinePruneConfig, apply_fineprune_mask, fineprune_repair
from bastionfl.defenses.finetune import FinetuneConfig, finetune_repair
from bastionfl.defenses.nad import NADConfig, attention_distillation_loss, attention_map, nad_repair
from bastionfl.defenses.rnp import RNPConfig, apply_rnp_mask, rnp_repair

__all__ = [
    "ABLConfig",
    "ABLState",
    "abl_local_train",
    "FinetuneConfig",
    "finetune_repair",
    "FinePruneConfig",
    "fineprune_repair",
    "apply_fineprune_mask",
    "NADConfig",
    "nad_repair",
    "attention_map",
    "attention_distillation_loss",
    "RNPConfig",
    "rnp_repair",
    "apply_rnp_mask",
]
