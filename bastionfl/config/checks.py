"""Checks that span settings, run whenever a configuration is built: each names the key it refuses, in one line."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .enums import IMAGE_MODELS, TASK_PROFILES, Auth, Repair, TaskKind

if TYPE_CHECKING:
    from .run import RunConfig

__all__ = ["cross_check", "MIN_CLEAN_SET", "DROPOUT_STAGES", "threshold_rule", "val_images_needed"]

MIN_CLEAN_SET = 10  # examples: below this a server repair has nothing to learn from


def _fail(key: str, text: str) -> None:
    from .run import ConfigError

    raise ConfigError(f"config key '{key}': {text}")


def _task(cfg: "RunConfig") -> None:
    t, kind = cfg.task, cfg.kind
    profile = TASK_PROFILES[kind]
    if kind is TaskKind.IMAGE and t.model not in IMAGE_MODELS:
        _fail("model", f"image datasets need one of {', '.join(IMAGE_MODELS)}, got {t.model!r}")
    if kind is TaskKind.TEXT and t.model in IMAGE_MODELS:
        _fail("model", f"dataset {t.dataset} needs a text model (minilm, tiny-bert or a Hugging Face id), got "
                       f"{t.model!r}")
    if kind is TaskKind.TEXT and t.lr > 0.01:
        _fail("lr", f"text models train with AdamW, where lr {t.lr} diverges; use about 1e-4 (0.05 is an SGD rate)")
    if cfg.attack.kind not in profile.attacks:
        article = "an" if kind is TaskKind.IMAGE else "a"
        _fail("attack", f"{cfg.attack.kind} is not {article} {kind} attack (dataset {t.dataset}); {kind} attacks: "
                        f"{', '.join(profile.attacks)}")
    if cfg.defense.client_defense not in profile.client_defenses:
        _fail("client_defense", f"{cfg.defense.client_defense} does not apply to {t.dataset} ({kind} task)")
    if cfg.defense.repair not in profile.repairs:
        _fail("repair", f"{cfg.defense.repair} does not apply to {kind} models; {kind} runs take "
                        f"{' or '.join(profile.repairs)}" + (" (BTU's clean tune)" if kind is TaskKind.TEXT else ""))


_IMAGE_ATTACK_KEYS = ("attack_mode", "trigger_type", "trigger_size", "trigger_position", "trigger_seed",
                      "blend_alpha")


def _attack(cfg: "RunConfig") -> None:
    a = cfg.attack
    if a.poisoned_clients > cfg.federation.num_clients:
        _fail("poisoned_clients", f"{a.poisoned_clients} poisoned clients but only "
                                  f"{cfg.federation.num_clients} clients")
    if cfg.kind is TaskKind.TEXT:
        from .run import RunConfig

        default = RunConfig().attack
        for key in _IMAGE_ATTACK_KEYS:
            if getattr(a, key) != getattr(default, key):
                _fail(key, f"sets an image trigger; dataset {cfg.task.dataset} is a text task")


def _repair(cfg: "RunConfig") -> None:
    d = cfg.defense
    if d.repair is not Repair.NONE and d.clean_set_size < MIN_CLEAN_SET:
        _fail("clean_set_size", f"repair = {d.repair} needs clean_set_size >= {MIN_CLEAN_SET}, got "
                                f"{d.clean_set_size}")
    if d.repair_last_rounds > cfg.federation.rounds:
        _fail("repair_last_rounds", f"{d.repair_last_rounds} is more than the {cfg.federation.rounds} rounds")
    text_tune = cfg.kind is TaskKind.TEXT and d.repair is Repair.FINETUNE
    if (d.repair_lr or d.repair_batch_size or d.repair_epochs) and d.repair is Repair.NONE:
        _fail("repair_lr", "'repair_lr' / 'repair_epochs' / 'repair_batch_size' set the server repair; this run has "
                           "repair = none")
    if d.repair_lr_decay and not text_tune:
        _fail("repair_lr_decay", "sets the text clean tune (text dataset, repair = finetune); this run has dataset "
                                 f"{cfg.task.dataset}, repair {d.repair}")
    if text_tune and d.repair_lr > 0.01:
        _fail("repair_lr", f"the text clean tune uses AdamW, where lr {d.repair_lr} diverges; use about 2e-5")
    if d.repair is not Repair.NONE and d.repair_val_fraction > 0:
        val = int(round(d.repair_val_fraction * d.clean_set_size))
        if val < MIN_CLEAN_SET or d.clean_set_size - val < MIN_CLEAN_SET:
            _fail("repair_val_fraction", f"{d.repair_val_fraction} of clean_set_size {d.clean_set_size} leaves "
                                         f"fewer than {MIN_CLEAN_SET} images for repair or validation")
        need = val_images_needed(d.repair_max_ca_drop)
        if val < need:
            _fail("clean_set_size", f"{d.clean_set_size} x repair_val_fraction {d.repair_val_fraction} = {val} "
                                    f"validation images cannot resolve repair_max_ca_drop {d.repair_max_ca_drop} "
                                    f"(one image is {100 / val:.2f} points; needs >= {need}): raise clean_set_size "
                                    "or repair_max_ca_drop")


def val_images_needed(max_ca_drop: float) -> int:
    """Validation images whose one-image step (100 / V points) is at most ``max_ca_drop`` (0: none, nothing resolves 0)."""
    if max_ca_drop <= 0:
        return 0
    return math.ceil(100 / max_ca_drop - 1e-9)


_RNP_KEYS = ("rnp_prune_by", "rnp_max_threshold", "rnp_max_pruned_fraction", "rnp_unlearn_stop_acc",
             "rnp_unlearn_max_epochs", "rnp_recover_lr")


def _rnp(cfg: "RunConfig") -> None:
    d = cfg.defense
    if d.repair is Repair.RNP:
        return
    default = type(d)()
    for key in _RNP_KEYS:
        if getattr(d, key) != getattr(default, key):
            _fail(key, f"sets RNP's repair; this run has repair = {d.repair}")


_UNLEARN_KEYS = ("unlearn_rounds", "unlearn_pgd_steps", "unlearn_eps", "unlearn_norm", "unlearn_search")


def _unlearn(cfg: "RunConfig") -> None:
    d = cfg.defense
    if d.repair is Repair.UNLEARN:
        return
    default = type(d)()
    for key in _UNLEARN_KEYS:
        if getattr(d, key) != getattr(default, key):
            _fail(key, f"sets the unlearn repair; this run has repair = {d.repair}")


_FINEPRUNE_KEYS = ("fineprune_max_drop", "fineprune_max_fraction")


def _fineprune(cfg: "RunConfig") -> None:
    d = cfg.defense
    if d.repair is Repair.FINEPRUNE:
        return
    default = type(d)()
    for key in _FINEPRUNE_KEYS:
        if getattr(d, key) != getattr(default, key):
            _fail(key, f"sets the fineprune repair; this run has repair = {d.repair}")


def _abl(cfg: "RunConfig") -> None:
    d = cfg.defense
    if d.abl_learned_to >= d.abl_learned_from:
        _fail("abl_learned_to", f"{d.abl_learned_to} must be below abl_learned_from {d.abl_learned_from}")


def _secure(cfg: "RunConfig") -> None:
    s, n = cfg.secure, cfg.federation.num_clients
    if s.mode == "none":
        return
    if s.min_uploads > s.min_members:
        _fail("min_uploads", f"{s.min_uploads} is more than min_members {s.min_members}: no epoch could decrypt")
    if s.min_members > n:
        _fail("min_members", f"{s.min_members} is more than the {n} clients: every key epoch would be refused")
    _threshold(cfg)


DROPOUT_STAGES = ("keygen", "train", "reveal", "consistency", "decrypt")


def threshold_rule(cfg: "RunConfig") -> object:
    """The t-of-n rule of the run (``crypto.ThresholdRule``), or None when every member decrypts."""
    from bastionfl.crypto.threshold import ThresholdRule

    value = cfg.secure.threshold
    if cfg.secure.mode == "none" or value == 1.0:
        return None
    return ThresholdRule.parse(int(value) if value > 1 else value)


def _threshold(cfg: "RunConfig") -> None:
    s = cfg.secure
    if s.threshold == 1.0:
        return
    if s.threshold > 1 and not float(s.threshold).is_integer():
        _fail("threshold", f"{s.threshold}: a fraction in (0.5, 1] of the members or an integer count")
    if s.threat_model == "honest-but-curious":
        _fail("threshold", "t-of-n decryption needs signed transcripts: threat_model malicious or malicious-colluding")
    if cfg.admission.mode is Auth.NONE:
        _fail("threshold", "t-of-n decryption under a malicious server needs auth = pseudonym: without a Home "
                           "Authority the server can enrol t members of its own and decrypt any single upload")
    if s.threshold > 1 and not cfg.federation.num_clients // 2 < s.threshold <= cfg.federation.num_clients:
        _fail("threshold", f"a count of {int(s.threshold)} must exceed half of the {cfg.federation.num_clients} "
                           "clients and not exceed them")


def _dropouts(cfg: "RunConfig") -> None:
    stages = [x.strip() for x in cfg.runtime.dropout_stages.split(",") if x.strip()]
    bad = [x for x in stages if x not in DROPOUT_STAGES]
    if bad or not stages:
        _fail("dropout_stages", f"{cfg.runtime.dropout_stages!r}: a comma-separated list of {', '.join(DROPOUT_STAGES)}")


def _admission(cfg: "RunConfig") -> None:
    a = cfg.admission
    if a.mode is not Auth.PSEUDONYM:
        return
    if a.ha_url:
        if not a.ha_url.startswith("https://"):
            _fail("auth_ha_url", f"the Home Authority must be reached over https://, got {a.ha_url!r}")
        if not a.ha_token_file:
            _fail("auth_ha_token_file", "required with auth_ha_url (the FL server's bearer token at the HA)")


def cross_check(cfg: "RunConfig") -> None:
    """Refuse combinations that cannot run (a model of the wrong task, an attack of the other modality, ...)."""
    _task(cfg)
    _attack(cfg)
    _repair(cfg)
    _rnp(cfg)
    _unlearn(cfg)
    _fineprune(cfg)
    _abl(cfg)
    _secure(cfg)
    _dropouts(cfg)
    _admission(cfg)
