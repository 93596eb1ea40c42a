"""What the two segmentation tasks share: the TransUNet-style model, the CE + Dice loss, class names."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from densevit.data import seg_transforms as T
from densevit.data.label_maps import default_palette
from densevit.engine.task import Task
from densevit.errors import ConfigError, UserInputError
from densevit.model_checks import check_registered_model
from densevit.models import create_model
from densevit.segmentation.config import SegmentationLossConfig
from densevit.segmentation.losses import CEDiceLoss


class SegmentationTaskBase(Task):
    """Model and loss of both segmentation tasks; subclasses supply data, inference and evaluation."""

    loss_config = SegmentationLossConfig

    @property
    def data(self) -> Any:
        return self.cfg.data

    @property
    def num_classes(self) -> int:
        return self.cfg.model.num_classes

    def in_chans(self) -> int:
        """The image channels the model takes (``model.kwargs.in_chans``; 3 unless set)."""
        return int(self.cfg.model.kwargs.get("in_chans", 3))

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """The model, and the data and loss settings that depend on ``model.num_classes``."""
        check_registered_model(cfg.model, 2, "at least 2 (background included)")
        k, d = cfg.model.num_classes, cfg.data
        if 0 <= d.ignore_index < k:
            raise ConfigError(f"data.ignore_index: expected a value outside the classes 0..{k - 1} "
                              f"(model.num_classes: {k}; 255 is usual), got {d.ignore_index}")
        if d.class_names and len(d.class_names) != k:
            raise ConfigError(f"data.class_names: expected {k} names (model.num_classes), got {len(d.class_names)}")
        weights = cfg.loss.class_weights
        if weights and len(weights) != k:
            raise ConfigError(f"loss.class_weights: expected {k} weights (model.num_classes), got {len(weights)}")

    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        model = create_model(model_cfg.name, num_classes=model_cfg.num_classes, **model_cfg.kwargs)
        divisor = getattr(model, "size_divisor", 1)
        if any(side % divisor for side in self.data.crop_size):
            raise UserInputError(
                f"data.crop_size: {list(self.data.crop_size)} must be multiples of {divisor} for {model_cfg.name}"
            )
        return model

    def build_criterion(self) -> nn.Module:
        loss = self.cfg.loss
        return CEDiceLoss(loss.ce_weight, loss.dice_weight, self.data.ignore_index, loss.class_weights or None)

    def train_transform(self) -> Callable:
        """The configured augmentation of training samples (crops of ``data.crop_size``)."""
        d = self.data
        if d.augment == "medical":
            return T.medical_train(d.crop_size, d.rotate)
        if d.augment == "street":
            return T.street_train(d.crop_size, d.ignore_index, d.scale_range)
        return T.resize_only(d.crop_size)

    def default_class_names(self) -> list[str]:
        """Names the dataset kind gives its classes, when the config names none."""
        return []

    def class_names(self) -> list[str]:
        return list(self.data.class_names) or self.default_class_names()

    def palette(self) -> list[tuple[int, int, int]]:
        """One RGB colour per class, for overlays and colour label pictures."""
        return default_palette(self.num_classes)
