"""``task: classification``: one label per image, from an ImageFolder tree or a CSV; top-1/top-5.

The classes are read from the data once (the training folder's subfolders, or the training
CSV's labels) and written into the config the task was given (``data.class_names``): the run's
``config.yaml`` and checkpoints then name them, and ``densevit predict`` needs no dataset.
A model is built without the data when ``model.num_classes`` is given.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.classification import data as D
from densevit.classification.config import (
    ClassificationDataConfig,
    ClassificationLossConfig,
)
from densevit.classification.losses import ClassificationLoss, build_mixup
from densevit.engine.task import Task
from densevit.errors import ConfigError
from densevit.model_checks import check_registered_model
from densevit.models import create_model
from densevit.tasks import TASKS

TOP_K = 5


@TASKS.register("classification")
class ClassificationTask(Task):
    """Image classification: cross-entropy (optionally mixup / cutmix), scored by top-1, top-5,
    per-class accuracy and a confusion matrix."""

    name = "classification"
    data_config = ClassificationDataConfig
    loss_config = ClassificationLossConfig

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        what = "0 (count the classes of the data) or at least 2"
        if cfg.model.num_classes == 1:
            raise ConfigError(f"model.num_classes: expected {what}, got 1")
        check_registered_model(cfg.model, 0, what)

    @cached_property
    def classes(self) -> list[str]:
        """``data.class_names``, else the classes on disk (then written into ``data.class_names``)."""
        d, wanted = self.cfg.data, self.cfg.model.num_classes
        if not d.class_names:
            d.class_names = self._classes_on_disk()
        if len(d.class_names) < 2:
            raise ConfigError(f"data: found {len(d.class_names)} class ({', '.join(d.class_names)}); "
                              "a classifier needs at least 2")
        if len(set(d.class_names)) != len(d.class_names):
            raise ConfigError(f"data.class_names: names repeat ({', '.join(d.class_names)})")
        if wanted and wanted != len(d.class_names):
            raise ConfigError(f"model.num_classes: {wanted}, but the data has {len(d.class_names)} classes "
                              f"({', '.join(d.class_names[:5])}{', ...' if len(d.class_names) > 5 else ''}); "
                              "0 counts them")
        return list(d.class_names)

    def _classes_on_disk(self) -> list[str]:
        d = self.cfg.data
        if d.kind == "folder":
            if not d.root:
                raise ConfigError("data.root: required for data.kind folder (<root>/<split>/<class>/<images>)")
            return D.folder_classes(Path(d.root) / d.train_split)
        if not d.train_csv:
            raise ConfigError("data.train_csv: required for data.kind csv (a file with the header path,label)")
        return sorted({label for _, label in D.read_label_csv(Path(d.train_csv), check_files=False)})

    def class_names(self) -> list[str]:
        return list(self.classes)

    @property
    def num_classes(self) -> int:
        """``model.num_classes``, or (when 0) the number of classes."""
        return self.cfg.model.num_classes or len(self.classes)

    # ------------------------------------------------------------------ builders

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return create_model(m.name, num_classes=self.num_classes, **m.kwargs)

    def build_criterion(self) -> nn.Module:
        return ClassificationLoss(self.cfg.loss.label_smoothing)

    def samples(self, split: str) -> list[D.Sample] | None:
        """The samples of ``train`` or ``val`` (None: no validation set configured)."""
        d = self.cfg.data
        classes = self.class_names()
        if d.kind == "folder":
            name = d.train_split if split == "train" else d.val_split
            return D.folder_samples(Path(d.root) / name, classes) if name else None
        path = d.train_csv if split == "train" else d.val_csv
        return D.csv_samples(Path(path), classes) if path else None

    def eval_transform(self) -> Any:
        """Resize and centre crop, as validation and ``densevit predict`` run."""
        return D.build_transform(self.cfg.data, training=False)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        train = D.ImageDataset(self.samples("train"), D.build_transform(self.cfg.data, training=True))
        val_samples = self.samples("val")
        return train, D.ImageDataset(val_samples, self.eval_transform()) if val_samples else None

    def collate(self, samples: list[Any]) -> tuple[Tensor, dict[str, Any]]:
        """Images [B,3,H,W] and ``{"labels": [B] int64, "paths": [B] str}``."""
        return D.collate(samples)

    @cached_property
    def mixup(self) -> Any:
        return build_mixup(self.cfg.loss, self.num_classes, self.cfg.train.batch_size)

    def train_forward(self, model: nn.Module, images: Tensor, targets: dict[str, Any]) -> Any:
        """Logits [B,K]; with mixup / cutmix, ``{"logits", "soft_targets"}`` of the mixed batch."""
        if self.mixup is None:
            return model(images)
        mixed, soft = self.mixup(images, targets["labels"])
        return {"logits": model(mixed), "soft_targets": soft}

    def eval_step(self, model: nn.Module, images: Tensor, targets: Any) -> dict[str, Tensor]:
        """``{"topk": [B,k] class indices, best first, "probs": [B,k] their softmax probabilities}``, k = min(5, K)."""
        probs = torch.softmax(model(images).float(), dim=-1)
        values, indices = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)
        return {"topk": indices, "probs": values}

    def build_evaluator(self) -> Any:
        from densevit.evaluation.classification import ClassificationEvaluator

        return ClassificationEvaluator(self.num_classes, class_names=self.class_names())
