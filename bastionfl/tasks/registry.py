"""The task registry: the run's task is chosen here, once, from the dataset's task kind."""

from __future__ import annotations

from functools import lru_cache

from bastionfl.config import RunConfig, TaskKind
from bastionfl.tasks.base import Task

__all__ = ["build_task", "TASKS"]


def _image(cfg: RunConfig) -> Task:
    from bastionfl.tasks.image_task import ImageTask

    return ImageTask(cfg)


def _text(cfg: RunConfig) -> Task:
    from bastionfl.tasks.text_task import TextTask

    return TextTask(cfg)


TASKS = {TaskKind.IMAGE: _image, TaskKind.TEXT: _text}


@lru_cache(maxsize=8)
def build_task(cfg: RunConfig) -> Task:
    """The task of ``cfg`` (one instance per configuration and process: its data and model template are cached)."""
    return TASKS[cfg.kind](cfg)
