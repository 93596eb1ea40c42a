"""The ``image_segmentation`` task: pictures and label maps, trained on random crops, scored by mIoU.

Validation runs each image at its own size through :func:`~densevit.segmentation.inferer.segment_images`
(whole, padded to the model's stride, or sliding windows, as ``data.eval_mode`` says): the same
function ``densevit predict`` uses, so predictions scored later give the same numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.data import seg_transforms as T
from densevit.data.collate import collate_segmentation
from densevit.data.street import (
    CAMVID,
    CITYSCAPES,
    StreetDataset,
    find_pairs,
    label_lookup,
)
from densevit.errors import UserInputError
from densevit.segmentation.config import ImageDataConfig
from densevit.segmentation.evaluators import ImageEvaluator
from densevit.segmentation.inferer import ImageInference, segment_images
from densevit.segmentation.task_base import SegmentationTaskBase
from densevit.tasks import TASKS

_CLASS_TABLES = {"camvid": CAMVID, "cityscapes": CITYSCAPES}


@TASKS.register("image_segmentation")
class ImageSegmentationTask(SegmentationTaskBase):
    """Semantic segmentation of pictures (street scenes, 2D images): mIoU, mAcc, mDice, aAcc."""

    name = "image_segmentation"
    data_config = ImageDataConfig

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        d = self.data
        if not d.root:
            raise UserInputError("data.root: required (the dataset folder)")
        root, lookup = Path(d.root), self.label_lookup()
        train = StreetDataset(find_pairs(d.kind, root, d.train_split), lookup, self.train_transform())
        val = StreetDataset(find_pairs(d.kind, root, d.val_split), lookup, T.street_eval()) if d.val_split else None
        return train, val

    def label_lookup(self) -> np.ndarray:
        """Label-file value -> class index table of the dataset kind (void -> ``ignore_index``)."""
        return label_lookup(self.data.kind, self.data.ignore_index, tuple(self.data.void_labels))

    def collate(self, samples: list[Any]) -> tuple[Tensor, dict[str, Any]]:
        """Images [B,C,H,W] and ``{"masks", "sizes"}``, padded to a stride-divisible size (masks with the ignore index)."""
        return collate_segmentation(samples, self.data.size_divisor, self.data.ignore_index)

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
        from densevit.evaluation.semantic import SemanticEvaluator

        names = self.class_names()
        return ImageEvaluator(SemanticEvaluator(self.num_classes, ignore_index=self.data.ignore_index,
                                                class_names=names or None))

    def default_class_names(self) -> list[str]:
        table = _CLASS_TABLES.get(self.data.kind)
        return list(table.class_names) if table else []

    def palette(self) -> list[tuple[int, int, int]]:
        table = _CLASS_TABLES.get(self.data.kind)
        return list(table.palette) if table and len(table.palette) == self.num_classes else super().palette()
