"""The ``image_segmentation`` task: pictures and label maps, trained on random crops, scored by mIoU
(and, for 2D medical sets, per-image Dice and HD95).

Validation runs each image at its own size through :func:`~densevit.segmentation.inferer.segment_images`
(whole, padded to the model's stride, or sliding windows, as ``data.eval_mode`` says): the same
function ``densevit predict`` uses, so predictions scored later give the same numbers.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.data import seg_transforms as T
from densevit.data.collate import collate_segmentation
from densevit.data.images import read_label_map
from densevit.data.label_maps import (
    CAMVID,
    CITYSCAPES,
    LabelMapDataset,
    find_pairs,
    image_label_samples,
    label_lookup,
)
from densevit.data.labels import binary_mapping
from densevit.errors import ConfigError, UserInputError, note, suspicious
from densevit.segmentation.config import ImageDataConfig
from densevit.segmentation.evaluators import ImageEvaluator
from densevit.segmentation.inferer import ImageInference, segment_images
from densevit.segmentation.task_base import SegmentationTaskBase
from densevit.tasks import TASKS

_CLASS_TABLES = {"camvid": CAMVID, "cityscapes": CITYSCAPES}
_CHECKED_FILES = 16  # label maps read at start-up to look for 0/255 masks and mostly-ignored labels
# Splits of up to this many label maps have every map read and its values checked when the data is
# opened (all of CamVid: well under a second); larger ones (Cityscapes' 2975 maps of 2048x1024,
# ADE20K's 20210) have their values checked as each map is read.
FULL_CHECK_FILES = 1000


@TASKS.register("image_segmentation")
class ImageSegmentationTask(SegmentationTaskBase):
    """Semantic segmentation of pictures (street scenes, 2D medical images): mIoU, mAcc, mDice, aAcc."""

    name = "image_segmentation"
    data_config = ImageDataConfig

    # ------------------------------------------------------------------ data

    def samples(self, split: str) -> list[tuple[Path, Path, Path | None]]:
        """``(picture, label map, field-of-view mask or None)`` of the ``train`` or ``val`` split."""
        d = self.data
        if d.kind == "images":
            images, labels, fov = (getattr(d, f"{split}_{part}") for part in ("images", "labels", "fov"))
            if not (images and labels):
                raise ConfigError(f"data.{split}_images / data.{split}_labels: required for data.kind images")
            return image_label_samples(Path(images), Path(labels), d.image_endings, d.label_endings,
                                       Path(fov) if fov else None, d.fov_endings)
        if not d.root:
            raise ConfigError("data.root: required (the dataset folder)")
        return find_pairs(d.kind, Path(d.root), d.train_split if split == "train" else d.val_split)

    def has_validation(self) -> bool:
        d = self.data
        return bool(d.val_images and d.val_labels) if d.kind == "images" else bool(d.val_split)

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        super().check_config(cfg)
        in_chans = cfg.model.kwargs.get("in_chans", 3)
        if in_chans != 3:
            raise ConfigError(f"model.kwargs.in_chans: image_segmentation reads RGB pictures (3 channels), got {in_chans}")

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """Every file is checked here, before training starts (:meth:`LabelMapDataset.check`): label
        values too for splits of up to ``FULL_CHECK_FILES`` label maps, larger ones as each map is read."""
        d = self.data
        datasets = []
        for split in ["train", "val"] if self.has_validation() else ["train"]:
            samples = self.samples(split)
            transform = self.train_transform() if split == "train" else T.street_eval()
            dataset = LabelMapDataset(samples, self.label_lookup(), transform, d.ignore_index, self.num_classes)
            dataset.check(d.bad_samples, _folder(samples, split), values=len(samples) <= FULL_CHECK_FILES)
            self._check_ignored(dataset)
            datasets.append(dataset)
        return datasets[0], datasets[1] if len(datasets) > 1 else None

    @cached_property
    def binary_masks(self) -> bool:
        """Whether the label maps are 0/255 masks, read as 0/1 (``data.binary_masks``)."""
        d = self.data
        if d.binary_masks != "auto" or self.num_classes != 2:
            return d.binary_masks == "yes"
        samples = self.samples("train")
        values: set[int] = set()
        for _, label, _ in _spread(samples, _CHECKED_FILES):
            try:
                values |= set(np.unique(read_label_map(label)).tolist())
            except UserInputError:  # a bad file: left to the checks of build_datasets
                continue
        binary = binary_mapping(values, 2, "auto")
        if binary:
            note(f"{samples[0][1].parent}: the label maps hold 0/255 masks: read as 0/1 "
                 "(data.binary_masks: no keeps 255 as the ignore index)")
        return binary

    def label_lookup(self) -> np.ndarray:
        """Label-file value -> class index table of the dataset kind (void -> ``ignore_index``)."""
        d = self.data
        return label_lookup(d.kind, d.ignore_index, tuple(d.void_labels), self.binary_masks,
                            size=65536 if d.kind == "images" else 256)

    def _check_ignored(self, dataset: LabelMapDataset) -> None:
        """Mostly-ignored label maps are suspicious (0/255 masks read with 255 as the ignore index)."""
        ignored = []
        for i in _spread(list(range(len(dataset))), _CHECKED_FILES):
            ignored.append((float(np.mean(dataset.labels(i) == self.data.ignore_index)), dataset.samples[i][1]))
        mostly = sorted(((f, p) for f, p in ignored if f > 0.5), reverse=True)
        if mostly and len(mostly) * 2 > len(ignored):
            shown = ", ".join(f"{p.name} ({100 * f:.0f}%)" for f, p in mostly[:3])
            suspicious(f"most label maps read are mostly the ignore value {self.data.ignore_index}: {shown} "
                       "(0/255 masks? see data.binary_masks)", self.cfg.strict)

    def collate(self, samples: list[Any]) -> tuple[Tensor, dict[str, Any]]:
        """Images [B,C,H,W] and ``{"masks", "sizes", "paths"}``, padded to a stride-divisible size (masks with the ignore index)."""
        return collate_segmentation(samples, self.data.size_divisor, self.data.ignore_index)

    # ------------------------------------------------------------------ inference and scores

    def inference(self, model: nn.Module, mode: str | None = None, overlap: float | None = None,
                  batch_size: int | None = None) -> ImageInference:
        """The configured way of running ``model`` on images; arguments that are not None override it."""
        d = self.data
        return ImageInference(
            mode=mode or d.eval_mode,
            window=tuple(d.crop_size),
            overlap=d.eval_overlap if overlap is None else overlap,
            batch_size=batch_size or d.eval_chunk,
            size_divisor=getattr(model, "size_divisor", d.size_divisor),
        )

    def eval_step(self, model: nn.Module, images: Tensor, targets: dict[str, Any]) -> list[Tensor]:
        """One label map [H_i,W_i] per image of the batch, each predicted at the image's own size."""
        own = [image[:, :h, :w] for image, (h, w) in zip(images, targets["sizes"])]
        return segment_images(model, own, self.inference(model))

    def build_evaluator(self) -> ImageEvaluator:
        from densevit.evaluation.medical import MedicalEvaluator
        from densevit.evaluation.semantic import SemanticEvaluator

        d = self.data
        names = self.class_names() or None
        medical = MedicalEvaluator(self.num_classes, class_names=names) if d.medical_metrics else None
        return ImageEvaluator(SemanticEvaluator(self.num_classes, ignore_index=d.ignore_index, class_names=names),
                              medical, d.ignore_index, tuple(d.spacing) or None, self.cfg.strict)

    def default_class_names(self) -> list[str]:
        table = _CLASS_TABLES.get(self.data.kind)
        return list(table.class_names) if table else []

    def palette(self) -> list[tuple[int, int, int]]:
        table = _CLASS_TABLES.get(self.data.kind)
        return list(table.palette) if table and len(table.palette) == self.num_classes else super().palette()


def _spread(items: list, count: int) -> list:
    """At most ``count`` of ``items``, evenly spread over the list (first and last included)."""
    if len(items) <= count:
        return list(items)
    step = (len(items) - 1) / (count - 1)
    return [items[round(k * step)] for k in range(count)]


def _folder(samples: list[tuple[Path, Path, Path | None]], split: str) -> str:
    """The folder of a split's label maps, to name in warnings about its files."""
    return os.path.commonpath([label.parent for _, label, _ in samples]) if samples else f"the {split} split"
