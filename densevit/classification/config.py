"""The ``data`` and ``loss`` sections of ``task: classification``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from densevit.config_checks import (
    fraction,
    non_negative,
    positive,
    positive_size,
    probability,
)
from densevit.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ClassificationDataConfig:
    """``data:`` of ``classification``: an ImageFolder tree or CSV files, and timm's transforms.

    * ``kind: folder``: ``root/<train_split>/<class>/*.jpg`` and ``root/<val_split>/<class>/*``;
      the classes are the training folder's subfolders, sorted by name.
    * ``kind: csv``: ``train_csv`` / ``val_csv`` with a header ``path,label``; paths are relative
      to the CSV's folder, labels are class names; the classes are ``class_names``, else the
      training file's labels sorted.

    Training images go through timm's ``create_transform`` (random resized crop to ``img_size``,
    flips, colour jitter, ``auto_augment`` such as ``rand-m9-mstd0.5-inc1-mmax9`` for RandAugment,
    random erasing with ``re_prob``); validation and prediction resize to ``img_size / crop_pct``
    and take the centre ``img_size`` crop.
    """

    kind: Literal["folder", "csv"] = "folder"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"  # empty: no validation
    train_csv: str = ""
    val_csv: str = ""
    class_names: list[str] = field(default_factory=list)
    img_size: int = 224
    crop_pct: float = 0.875
    interpolation: Literal["bilinear", "bicubic"] = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area fraction
    hflip: float = 0.5
    color_jitter: float = 0.4
    auto_augment: str = ""  # timm policy string, e.g. rand-m9-mstd0.5-inc1-mmax9 (RandAugment); empty: none
    re_prob: float = 0.0  # random erasing probability
    augment: bool = True  # false: training images take the validation transform

    def check(self) -> None:
        """Values the transforms cannot use are a ``ConfigError`` naming the key (``data.hflip``)."""
        positive_size(self.img_size, "data.img_size")
        fraction(self.crop_pct, "data.crop_pct")
        for i, value in enumerate(self.std):
            positive(value, f"data.std[{i}]")
        low, high = self.scale
        fraction(low, "data.scale[0]")
        fraction(high, "data.scale[1]")
        if low > high:
            raise ConfigError(f"data.scale: expected [min, max] with min <= max, got {list(self.scale)}")
        probability(self.hflip, "data.hflip")
        non_negative(self.color_jitter, "data.color_jitter")
        probability(self.re_prob, "data.re_prob")
        if len(set(self.class_names)) != len(self.class_names):
            repeated = sorted({name for name in self.class_names if self.class_names.count(name) > 1})
            raise ConfigError(f"data.class_names: names repeat ({', '.join(repeated)})")


@dataclass
class ClassificationLossConfig:
    """``loss:`` cross-entropy, with label smoothing and mixup / cutmix as options (timm's).

    With ``mixup_alpha`` or ``cutmix_alpha`` above 0, training batches are mixed
    (``timm.data.Mixup``, smoothed soft targets) and scored by soft-target cross-entropy; else
    by cross-entropy with ``label_smoothing``. ``train.batch_size`` must then be even.
    """

    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0  # probability of mixing a batch
    mixup_switch_prob: float = 0.5  # probability of cutmix instead of mixup when both are on

    def check(self) -> None:
        """Values timm's loss and ``Mixup`` cannot use are a ``ConfigError`` naming the key."""
        if not (isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1):
            raise ConfigError(f"loss.label_smoothing: expected a value in [0, 1), got {self.label_smoothing!r}")
        non_negative(self.mixup_alpha, "loss.mixup_alpha")
        non_negative(self.cutmix_alpha, "loss.cutmix_alpha")
        probability(self.mixup_prob, "loss.mixup_prob")
        probability(self.mixup_switch_prob, "loss.mixup_switch_prob")
