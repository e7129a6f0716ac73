"""The server side of the text task: the model factory, clean accuracy on dev, ASR and its untriggered floor.

The global model starts from the pretrained weights (cut to ``text_layers``) with a classifier head seeded by
``cfg.seed``, exactly as every client builds its template, so BTU's reference embeddings (the pretrained ones)
are the round-1 global embeddings. CA is measured on the dev split (SST-2 test labels are not used; the Syntactic
and Style paraphrases exist for train and dev only). ASR = share of the triggered non-target dev sentences predicted
as the target; ``asr_floor`` = the same share on those sentences without the trigger (the model's own error;
reported without an attack too, as the clean model's rate of calling a non-target sentence the target).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.server.task import ServerTask
from bastionfl.tasks.text import (DatasetError, TextModelConfig, attack_success_rate, evaluate_text,
                                  load_text_dataset, load_text_model)

__all__ = ["text_server_task", "server_model_config"]

_MODEL_NAMES = {"minilm": "minilm", "tiny-bert": "tiny"}  # the config's names -> load_text_model's names


def server_model_config(cfg: RunConfig, num_labels: int) -> TextModelConfig:
    """The global model's config; the same as the clients' (``bastionfl.client.text_local.text_model_config``)."""
    return TextModelConfig(name=_MODEL_NAMES.get(cfg.model, cfg.model), num_labels=num_labels,
                           num_layers=cfg.text_layers or None, seed=cfg.seed)


def text_server_task(cfg: RunConfig) -> ServerTask:
    """Model factory, ``evaluate(model) -> {"loss", "accuracy"[, "asr", "asr_floor"]}``; no clean set (no repair)."""
    if cfg.repair != "none" or cfg.clean_set_size:
        raise ValueError(f"server repair ({cfg.repair}, clean_set_size {cfg.clean_set_size}) is not available for the "
                         f"text task; use client_defense = btu")
    if not cfg.data_dir:
        raise DatasetError(f"data_dir is empty: {cfg.dataset} needs the folder holding {cfg.dataset}/")
    data = load_text_dataset(cfg.dataset, Path(cfg.data_dir))
    model_cfg = server_model_config(cfg, data.num_classes)
    template, tokenizer = load_text_model(model_cfg)

    triggered: list[str] = []
    untriggered: list[str] = []
    if cfg.attack != "none":
        from bastionfl.tasks.text_backdoor import TextAttackConfig, build_text_asr_set, load_paraphrases

        paras = load_paraphrases(data, cfg.data_dir, cfg.attack)[1] if cfg.attack in ("syntactic", "style") else None
        attack = TextAttackConfig(cfg.attack, poison_rate=cfg.poison_rate, target=cfg.target_label, seed=cfg.seed)
        triggered = build_text_asr_set(data.dev_sentences, data.dev_labels, attack, paras)
        untriggered = [s for i, (s, y) in enumerate(zip(data.dev_sentences, data.dev_labels))
                       if int(y) != cfg.target_label and (paras is None or paras[i].strip())]
        if not triggered or len(triggered) != len(untriggered):
            raise DatasetError(f"{cfg.dataset} dev: {len(triggered)} triggered vs {len(untriggered)} untriggered "
                               f"non-target sentences (target {cfg.target_label}); expected the same non-empty set")
    else:  # no attack: the floor alone, i.e. how often the clean model calls a non-target sentence the target
        untriggered = [s for s, y in zip(data.dev_sentences, data.dev_labels) if int(y) != cfg.target_label]

    def factory() -> nn.Module:
        return copy.deepcopy(template)

    def run_eval(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            loss, acc = evaluate_text(model, tokenizer, data.dev_sentences, data.dev_labels, max_len=cfg.max_len)
            out = {"loss": loss, "accuracy": acc}
            if triggered:
                out["asr"] = attack_success_rate(model, tokenizer, triggered, cfg.target_label, max_len=cfg.max_len)
            if untriggered:
                out["asr_floor"] = attack_success_rate(model, tokenizer, untriggered, cfg.target_label,
                                                       max_len=cfg.max_len)
        return out

    return ServerTask(factory, run_eval, None)
