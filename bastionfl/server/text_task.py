"""The server side of the text task: the model factory, clean accuracy on dev, ASR and its untriggered floor.

The global model starts from the pretrained weights (cut to ``text_layers``) with a classifier head seeded by
``cfg.seed``, exactly as every client builds its template, so BTU's reference embeddings (the pretrained ones)
are the round-1 global embeddings. CA is measured on the dev split (SST-2 test labels are not used; the Syntactic
and Style paraphrases exist for train and dev only). ASR = share of the triggered non-target dev sentences predicted
as the target; ``asr_floor`` = the same share on those sentences without the trigger (the model's own error;
reported without an attack too, as the clean model's rate of calling a non-target sentence the target).
With ``repair = finetune`` the server runs BTU's clean tune (one AdamW epoch at the run's lr, as the paper tunes at
its training lr) on ``clean_set_size`` sentences of the test split, after aggregation.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from bastionfl.config import RunConfig
from bastionfl.server.task import ServerTask
from bastionfl.tasks.text import (DatasetError, TextData, TextModelConfig, attack_success_rate, evaluate_text,
                                  load_text_dataset, load_text_model)

__all__ = ["text_server_task", "server_model_config", "server_clean_sentences", "clean_tune_schedule"]

_MODEL_NAMES = {"minilm": "minilm", "tiny-bert": "tiny"}  # the config's names -> load_text_model's names


def server_model_config(cfg: RunConfig, num_labels: int) -> TextModelConfig:
    """The global model's config; the same as the clients' (``bastionfl.client.text_local.text_model_config``)."""
    return TextModelConfig(name=_MODEL_NAMES.get(cfg.model, cfg.model), num_labels=num_labels,
                           num_layers=cfg.text_layers or None, seed=cfg.seed)


def clean_tune_schedule(cfg: RunConfig) -> tuple[float, int, str]:
    """The clean tune's lr and batch size (``repair_*``, else the run's own) and a phrase for results pages."""
    lr, batch = cfg.repair_lr or cfg.lr, cfg.repair_batch_size or cfg.batch_size
    return lr, batch, f"lr {lr}{' decaying linearly to 0' if cfg.repair_lr_decay else ''}, batch {batch}"


def server_clean_sentences(data: TextData, cfg: RunConfig) -> tuple[list[str], list[int]]:
    """The server's clean set: a seeded subset of ``clean_set_size`` sentences of the test split.

    The test split is disjoint from the clients' (train) and from CA/ASR (dev); a dataset whose test split is its
    dev split has no clean set to give without tuning on the evaluation sentences, and is refused.
    """
    n = cfg.clean_set_size
    if data.test_sentences == data.dev_sentences:
        raise DatasetError(f"{cfg.dataset}: the test split is the dev split, so a server clean set would tune on the "
                           "sentences CA and ASR are measured on; no clean tune for this dataset")
    if n > len(data.test_sentences):
        raise DatasetError(f"clean_set_size {n} is more than the {len(data.test_sentences)} sentences of the "
                           f"{cfg.dataset} test split")
    gen = torch.Generator().manual_seed(cfg.seed * 7_919 + 17)
    pick = torch.randperm(len(data.test_sentences), generator=gen)[:n].tolist()
    return [data.test_sentences[i] for i in pick], [int(data.test_labels[i]) for i in pick]


def text_server_task(cfg: RunConfig) -> ServerTask:
    """Model factory, ``evaluate(model) -> {"loss", "accuracy"[, "asr", "asr_floor"]}``, and with
    ``repair = finetune`` the clean set and BTU's clean tune as the task's repair."""
    if cfg.repair not in ("none", "finetune"):
        raise ValueError(f"server repair {cfg.repair} is not available for the text task (none or finetune)")
    if not cfg.data_dir:
        raise DatasetError(f"data_dir is empty: {cfg.dataset} needs the folder holding {cfg.dataset}/")
    data = load_text_dataset(cfg.dataset, Path(cfg.data_dir))
    model_cfg = server_model_config(cfg, data.num_classes)
    template, tokenizer = load_text_model(model_cfg)
    clean = server_clean_sentences(data, cfg) if cfg.repair == "finetune" else None

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

    def clean_tune(model: nn.Module, seed: int) -> tuple[nn.Module, dict[str, object]]:
        from bastionfl.defenses.btu import btu_clean_tune

        assert clean is not None
        tuned = copy.deepcopy(model)
        lr, batch, _ = clean_tune_schedule(cfg)
        report = btu_clean_tune(tuned, tokenizer, clean[0], clean[1], epochs=1, lr=lr, batch_size=batch,
                                max_len=cfg.max_len, seed=seed, decay=cfg.repair_lr_decay)
        return tuned, report

    return ServerTask(factory, run_eval, clean, clean_tune if clean is not None else None)
