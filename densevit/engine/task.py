"""What a task (detection, segmentation) supplies to the task-agnostic trainer.

The trainer only ever calls these methods; it never looks inside batches, outputs or
targets beyond what they return. Each task subclass registers itself in ``TASKS`` under the
name that configs give as ``task:``, and names the dataclasses of its ``data`` and ``loss``
config sections.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from densevit.tasks import TASKS

__all__ = ["TASKS", "Evaluator", "Task", "move_to_device"]


class Evaluator(Protocol):
    """Accumulates predictions against targets; ``compute`` returns named metrics.

    In a distributed run every process calls ``process`` on its own share of the validation
    set (each sample on exactly one process) and every process calls ``compute``, which
    combines all shares (see :mod:`densevit.distributed`) and returns the same
    result everywhere. ``process`` receives tensors on the training device.
    """

    def reset(self) -> None: ...

    def process(self, predictions: Any, targets: Any) -> None: ...

    def compute(self) -> dict[str, Any]: ...


class Task(ABC):
    """Builds everything task-specific from an :class:`~densevit.config.ExperimentConfig`.

    Batches are ``(images, targets)`` as the task's ``collate`` makes them. ``images`` is
    whatever the model's ``forward`` takes (a tensor, or a padded tensor plus mask);
    ``targets`` is whatever the criterion and evaluator take.
    """

    name: ClassVar[str]
    data_config: ClassVar[type]
    loss_config: ClassVar[type]

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self._postprocess: Callable[[Any, Any], Any] | None = None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The network; ``model(images)`` returns the outputs the criterion takes."""

    @abstractmethod
    def build_criterion(self) -> nn.Module:
        """``criterion(outputs, targets)`` -> dict of named loss terms plus ``"loss"``, their weighted sum."""

    @abstractmethod
    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """The training and validation datasets (validation may be None)."""

    def build_val_dataset(self) -> Dataset | None:
        """The validation dataset alone (``densevit evaluate``): tasks override it so that scoring
        does not open the training data; the default builds both."""
        return self.build_datasets()[1]

    @abstractmethod
    def collate(self, samples: list[Any]) -> tuple[Any, Any]:
        """Batch a list of dataset samples into ``(images, targets)``."""

    @abstractmethod
    def build_evaluator(self) -> Evaluator:
        """A fresh evaluator for the validation set."""

    def train_forward(self, model: nn.Module, images: Any, targets: Any) -> Any:
        """The model's outputs for a training batch; the default is ``model(images)``. A task whose
        model learns from the targets in its forward pass (RT-DETR's denoising queries) overrides
        it. The trainer calls it under autocast, with ``model`` possibly wrapped by DDP or compile."""
        return model(images)

    def build_postprocessor(self) -> Callable[[Any, Any], Any]:
        """``postprocess(outputs, targets)`` -> predictions in the evaluator's format (used by the
        default :meth:`eval_step`; a task that overrides ``eval_step`` need not define it)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither build_postprocessor nor eval_step")

    def eval_step(self, model: nn.Module, images: Any, targets: Any) -> Any:
        """Predictions for one validation batch, in the evaluator's format.

        The default is ``postprocess(model(images), targets)``; a task overrides it when
        inference differs from a plain forward pass (sliding windows, whole volumes as slices).
        The trainer calls it under ``torch.no_grad()`` and autocast, with ``model`` in eval mode.
        """
        if self._postprocess is None:
            self._postprocess = self.build_postprocessor()
        return self._postprocess(model(images), targets)

    @classmethod
    def upgrade_config(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """A raw config mapping written for an earlier schema of this task, brought up to date
        (renamed keys); the default changes nothing. ``where`` names the source in errors."""
        return data

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Check the parts of a typed config that only this task can judge (its ``model``) when the
        config is loaded, before anything is built: raise ``ConfigError("model....: ...")``. The
        default checks nothing; tasks that build through the model registry call
        :func:`densevit.model_checks.check_registered_model`."""

    def to_device(self, batch: tuple[Any, Any], device: torch.device) -> tuple[Any, Any]:
        """Move a batch to ``device`` (tensors, and tensors inside lists and dicts)."""
        return move_to_device(batch, device)

    def class_names(self) -> list[str]:
        """Names of the classes the model predicts, stored in checkpoints."""
        return []


def move_to_device(obj: Any, device: torch.device) -> Any:
    """Recursively move tensors in nested lists, tuples and dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to_device(v, device) for v in obj)
    return obj
