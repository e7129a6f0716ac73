"""What the server needs from a learning task: a model factory, an evaluation, and (for repair) a clean set.

The image task is built here; the text task provides the same three things (``bastionfl.server.text_task``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from bastionfl.config import TEXT_DATASETS, RunConfig

__all__ = ["ServerTask", "build_server_task"]


RepairFn = Callable[[nn.Module, int], tuple[nn.Module, dict[str, Any]]]


@dataclass
class ServerTask:
    """A model factory, ``evaluate(model) -> {"loss", "accuracy"[, "asr"]}`` and the server's clean set (or None).

    ``repair`` (optional): the task's own repair, ``repair(model, seed) -> (repaired copy, report)``, used by the
    repair stage instead of the image defenses (the text task's clean tune).
    """

    model_factory: Callable[[], nn.Module]
    evaluate: Callable[[nn.Module], dict[str, float]]
    clean_set: Any = None
    repair: RepairFn | None = None


def _image_task(cfg: RunConfig) -> ServerTask:
    from bastionfl.tasks.federated_data import DataSpec, load_dataset_cached, server_clean_set
    from bastionfl.tasks.models import build_model
    from bastionfl.tasks.training import evaluate

    data = load_dataset_cached(cfg.dataset, cfg.data_dir)
    asr_set = None
    if cfg.attack != "none":
        from bastionfl.tasks.backdoor import build_asr_set, make_trigger

        trigger = make_trigger(cfg.attack, tuple(data.test_x.shape[1:]), seed=cfg.seed)
        asr_set = build_asr_set(data.test_x, data.test_y, trigger, target=cfg.target_label)

    def factory() -> nn.Module:
        return build_model(cfg.model, data.in_channels, data.num_classes)

    def run_eval(model: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            loss, acc = evaluate(model, data.test_x, data.test_y)
            out = {"loss": loss, "accuracy": acc}
            if asr_set is not None:
                out["asr"] = evaluate(model, *asr_set)[1]
        return out

    clean = server_clean_set(DataSpec.from_config(cfg, cfg.num_clients)) if cfg.clean_set_size else None
    return ServerTask(factory, run_eval, clean)


def build_server_task(cfg: RunConfig) -> ServerTask:
    """The server side of the configured task."""
    if cfg.dataset in TEXT_DATASETS:
        from bastionfl.server.text_task import text_server_task

        return text_server_task(cfg)
    return _image_task(cfg)
