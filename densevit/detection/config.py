"""The ``data`` and ``loss`` sections of a detection config."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from densevit.config_checks import (
    at_least,
    fraction,
    non_negative,
    positive_size,
    probability,
)
from densevit.data.det_transforms import DETR_SCALES
from densevit.errors import ConfigError


@dataclass
class DetectionDataConfig:
    """``data:`` of a detection config: the dataset's files and the augmentation sizes.

    ``format`` says how the files are laid out (``datasets/detection_formats.md``):

    - ``coco``: ``train_images`` / ``val_images`` (folders) and ``train_annotations`` /
      ``val_annotations`` (COCO instances JSON; ``val_images`` defaults to ``train_images``);
    - ``yolo``: ``root`` is the ultralytics ``data.yaml``; ``train_split`` / ``val_split`` are its
      keys (``train``, ``val``), the image folders or lists of the two sets;
    - ``voc``: ``root`` is the Pascal VOC folder (``VOCdevkit/VOC2007``); ``train_split`` /
      ``val_split`` name ``ImageSets/Main/<split>.txt`` (e.g. ``trainval`` and ``test``);
      ``class_names`` replaces the 20 VOC classes.

    An empty ``val_split`` means no validation set.
    """

    format: Literal["coco", "yolo", "voc"] = "coco"
    root: str = ""
    train_split: str = "train"
    val_split: str = "val"
    train_images: str = ""
    train_annotations: str = ""
    val_images: str = ""
    val_annotations: str = ""
    # a bad annotation or image record: raise (stop, naming the file, record and field) or drop
    # (leave them out with one warning); "error" is the older name of "raise"
    bad_annotations: Literal["raise", "drop", "error"] = "raise"
    train_scales: list[int] = field(default_factory=lambda: list(DETR_SCALES))
    max_size: int = 1333
    crop: bool = True
    crop_resize_scales: list[int] = field(default_factory=lambda: [400, 500, 600])
    crop_size: tuple[int, int] = (384, 600)
    hflip: float = 0.5
    val_size: int = 800
    size_divisor: int = 1  # pad batches to a multiple (ViT needs 16, Swin 32)
    max_detections: int = 100
    # RT-DETR's pipeline: every image resized to one square size (aspect ratio not kept), values in
    # [0, 1]; photometric distortion, zoom-out and IoU crops until augment_stop_epoch, each batch
    # resized to one of batch_scales until then (data/rtdetr_transforms.py).
    pipeline: Literal["auto", "detr", "rtdetr"] = "auto"  # auto: rtdetr for RT-DETR models
    input_size: int = 640
    batch_scales: list[int] = field(default_factory=list)  # e.g. 480..800 step 32; [] = input_size only
    augment_stop_epoch: int = -1  # -1: strong augmentation all along
    # Used when the annotation files are not at hand (e.g. predicting on another machine).
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)

    def check(self) -> None:
        """Range checks (the config loader calls it and names the file)."""
        probability(self.hflip, "data.hflip")
        positive_size(self.train_scales, "data.train_scales")
        for key in ("max_size", "val_size", "input_size"):
            positive_size(getattr(self, key), f"data.{key}")
        positive_size(self.crop_resize_scales, "data.crop_resize_scales")
        positive_size(list(self.crop_size), "data.crop_size")
        if len(self.crop_size) != 2 or self.crop_size[0] > self.crop_size[1]:
            raise ConfigError(f"data.crop_size: expected [min, max] with min <= max, got {list(self.crop_size)}")
        if self.batch_scales:
            positive_size(self.batch_scales, "data.batch_scales")
        at_least(self.size_divisor, "data.size_divisor", 1)
        at_least(self.max_detections, "data.max_detections", 1)
        at_least(self.augment_stop_epoch, "data.augment_stop_epoch", -1)
        self._check_layout()

    def _check_layout(self) -> None:
        """The file fields that ``format`` uses, and no others (a value set for nothing is an error)."""
        coco_fields = ("train_images", "train_annotations", "val_images", "val_annotations")
        if self.format == "coco":
            if self.root:
                raise ConfigError(f"data.root: used by data.format yolo and voc, not coco (got {self.root!r}); "
                                  "set data.train_annotations and data.train_images")
            return
        named = next((key for key in coco_fields if getattr(self, key)), None)
        if named:
            where = "the data.yaml" if self.format == "yolo" else "the VOC folder (VOCdevkit/VOC2007)"
            raise ConfigError(f"data.{named}: used by data.format coco, not {self.format}; data.root names {where}")
        if not self.train_split:
            raise ConfigError(f"data.train_split: expected the name of the training split, got {self.train_split!r}")


@dataclass
class DetectionLossConfig:
    """``loss:`` of a detection config: matching costs and loss weights (DETR's by default).

    ``classification: sigmoid`` switches to focal loss with sigmoid scores (Deformable
    DETR's choice), which converges much faster on small data; use ``weight_class: 2`` and
    ``cost_class: 2`` with it. RT-DETR models use sigmoid scores and RT-DETR's criterion
    (``weight_vfl``, ``vfl_alpha``; ``cost_class: 2`` in its recipes).
    """

    classification: Literal["softmax", "sigmoid"] = "softmax"
    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    weight_class: float = 1.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    eos_coef: float = 0.1
    aux_loss: bool = True
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # RT-DETR's loss (varifocal, L1, GIoU on every layer, the proposals and the denoising groups)
    criterion: Literal["auto", "detr", "rtdetr"] = "auto"  # auto: rtdetr for RT-DETR models
    weight_vfl: float = 1.0
    vfl_alpha: float = 0.75

    def check(self) -> None:
        """Range checks (the config loader calls it and names the file)."""
        for key in ("cost_class", "cost_bbox", "cost_giou", "weight_class", "weight_bbox", "weight_giou",
                    "weight_vfl", "focal_gamma"):
            non_negative(getattr(self, key), f"loss.{key}")
        fraction(self.eos_coef, "loss.eos_coef")
        probability(self.focal_alpha, "loss.focal_alpha")
        probability(self.vfl_alpha, "loss.vfl_alpha")
