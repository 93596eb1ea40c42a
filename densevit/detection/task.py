"""The ``detection`` task: DETR and RT-DETR on COCO, YOLO or Pascal VOC data, for the task-agnostic trainer.

Every layout is read into one COCO instances object (``data.format``; see
:func:`densevit.data.coco_json.read_instances`), checked and served by one dataset class.

The model's family decides the criterion (DETR's set loss or RT-DETR's varifocal one), the
data pipeline (DETR's aspect-keeping resize with padding masks, or RT-DETR's fixed square size
in [0, 1]) and whether the forward pass takes the targets (RT-DETR's denoising queries).
"""
from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from densevit.data.coco import CocoDetection, load_coco
from densevit.data.coco_json import Instances, read_instances
from densevit.data.collate import collate_detection
from densevit.data.det_transforms import train_transforms, val_transforms
from densevit.data.rtdetr_transforms import (
    MultiScaleBatchResize,
    rtdetr_train_transforms,
    rtdetr_val_transforms,
)
from densevit.detection.config import DetectionDataConfig, DetectionLossConfig
from densevit.detection.criterion import SetCriterion
from densevit.detection.matcher import HungarianMatcher
from densevit.detection.postprocess import PostProcess
from densevit.detection.rtdetr_criterion import RTDETRCriterion
from densevit.engine.task import TASKS, Task
from densevit.errors import ConfigError, UserInputError
from densevit.model_checks import check_registered_model


class DetectionEvaluator:
    """COCO box AP through :class:`densevit.evaluation.coco.COCOEvaluator`, flat scalar metrics.

    Detections of classes whose category id the ground truth lacks (the unused ids of a
    91-class COCO head) are left out, as pycocotools ignores categories it has no ground truth for.
    """

    def __init__(self, ground_truth: str | dict[str, Any], category_ids: list[int]) -> None:
        from densevit.evaluation.coco import COCOEvaluator, GroundTruth

        gt = GroundTruth(ground_truth, ("bbox",))  # an annotation file, or the validation set's (checked) data
        known = {category_id for category_id, _ in gt.categories}
        self.mapping = {label: cid for label, cid in enumerate(category_ids) if cid in known}
        self.coco = COCOEvaluator(gt, iou_types=("bbox",), label_to_category_id=self.mapping)

    def reset(self) -> None:
        self.coco.reset()

    def process(self, predictions: list[dict[str, Tensor]], targets: list[dict[str, Any]]) -> None:
        if len(self.mapping) < max((int(p["labels"].max()) + 1 for p in predictions if len(p["labels"])), default=0):
            mapped = torch.tensor(sorted(self.mapping))
            predictions = [{k: v[torch.isin(p["labels"], mapped.to(p["labels"].device))] for k, v in p.items()}
                           for p in predictions]
        self.coco.process(predictions, targets)

    def compute(self) -> dict[str, float]:
        """The 12 COCO stats (``AP``, ``AP50``, ...)."""
        stats = self.coco.compute()["bbox"]
        return {name: value for name, value in stats.items() if name != "per_class"}


@TASKS.register("detection")
class DetectionTask(Task):
    """DETR: model, set criterion, COCO datasets, padding collate, box postprocessing, COCO AP."""

    name = "detection"
    data_config = DetectionDataConfig
    loss_config = DetectionLossConfig

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        check_registered_model(cfg.model, 0, "0 (count the categories of the data) or a positive number")

    @classmethod
    def upgrade_config(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """``data.size_divisibility`` (before 0.2) is now ``data.size_divisor``, as in segmentation."""
        section = data.get("data")
        if isinstance(section, dict) and "size_divisibility" in section:
            section = dict(section)
            section.setdefault("size_divisor", section.pop("size_divisibility"))
            section.pop("size_divisibility", None)
            return {**data, "data": section}
        return data

    # ------------------------------------------------------------------ classes

    @cached_property
    def categories(self) -> tuple[list[int], list[str]]:
        """(category ids, class names) in contiguous-label order.

        ``data.category_ids`` (e.g. the identity map of converted official COCO weights) wins
        over the annotation files, which give the ids in increasing order otherwise.
        """
        data = self.cfg.data
        names: dict[int, str] = {}
        for split in ("train", "val"):
            instances = self.split_instances(split, present_only=True)
            if instances is not None:
                cats = load_coco(instances).dataset["categories"]
                names = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
                break
        if data.category_ids:
            if data.class_names and len(data.class_names) != len(data.category_ids):
                raise ConfigError(f"data.category_ids: {len(data.category_ids)} ids for {len(data.class_names)} class_names")
            given = dict(zip(data.category_ids, data.class_names))
            return list(data.category_ids), [names.get(i, given.get(i, f"category {i}")) for i in data.category_ids]
        if names:
            ids = sorted(names)
            return ids, [names[i] for i in ids]
        if data.class_names:
            return list(range(1, len(data.class_names) + 1)), list(data.class_names)
        count = self.num_classes
        warnings.warn("no annotation file or data.class_names: classes are named by index", stacklevel=2)
        return list(range(1, count + 1)), [f"class {i}" for i in range(1, count + 1)]

    @cached_property
    def num_classes(self) -> int:
        """``model.num_classes``, or (when 0) the number of categories in the annotation file."""
        if self.cfg.model.num_classes > 0:
            return self.cfg.model.num_classes
        instances = self.split_instances("train") or self.split_instances("val")
        if instances is None and self.cfg.data.class_names:
            return len(self.cfg.data.class_names)
        if instances is None:
            key = "data.train_annotations" if self.cfg.data.format == "coco" else "data.root"
            raise ConfigError(f"model.num_classes: 0 means 'from the data', but {key} is empty")
        return len(load_coco(instances).dataset["categories"])

    def split_instances(self, split: str, present_only: bool = False) -> Instances | None:
        """The ``train`` or ``val`` set as the config names it (``data.format``), read once, as a
        COCO instances object with its images folder; None when the config names no such set
        (with ``present_only``, also when its files are not at hand, e.g. on another machine)."""
        data = self.cfg.data
        if data.format == "coco":
            source = data.train_annotations if split == "train" else data.val_annotations
            images = data.train_images if split == "train" else data.val_images or data.train_images
            name, needed = "", Path(source)
        else:
            source, images, name = data.root, "", getattr(data, f"{split}_split")
            # the file that must be at hand: the data.yaml, or the VOC split's list
            needed = Path(source) / "ImageSets" / "Main" / f"{name}.txt" if data.format == "voc" else Path(source)
        if not source or (data.format != "coco" and not name) or (present_only and not needed.is_file()):
            return None
        read = self.__dict__.setdefault("_instances", {})
        if split not in read:
            read[split] = read_instances(data.format, source, name, images, data.class_names, data.bad_annotations)
        return read[split]

    def __getstate__(self) -> dict[str, Any]:
        """The task without the splits it read (loader workers receive it with its collate function)."""
        return {key: value for key, value in self.__dict__.items() if key != "_instances"}

    def class_names(self) -> list[str]:
        return self.categories[1]

    # ------------------------------------------------------------------ builders

    @cached_property
    def family(self) -> str:
        """``rtdetr`` or ``detr``: which criterion, data pipeline and scores the model needs."""
        chosen = self.cfg.loss.criterion
        if chosen != "auto":
            return chosen
        return "rtdetr" if self.cfg.model.name.startswith("rtdetr") else "detr"

    @property
    def pipeline(self) -> str:
        return self.family if self.cfg.data.pipeline == "auto" else self.cfg.data.pipeline

    @property
    def classification(self) -> str:
        return "sigmoid" if self.family == "rtdetr" else self.cfg.loss.classification

    def build_model(self) -> nn.Module:
        from densevit.models import create_model

        kwargs = dict(self.cfg.model.kwargs)
        if self.family == "detr":
            kwargs.setdefault("classification", self.cfg.loss.classification)
            kwargs.setdefault("aux_loss", self.cfg.loss.aux_loss)
        return create_model(self.cfg.model.name, num_classes=self.num_classes, **kwargs)

    def build_criterion(self) -> nn.Module:
        loss = self.cfg.loss
        matcher = HungarianMatcher(loss.cost_class, loss.cost_bbox, loss.cost_giou, self.classification,
                                   loss.focal_alpha, loss.focal_gamma)
        if self.family == "rtdetr":
            return RTDETRCriterion(self.num_classes, matcher, loss.weight_vfl, loss.weight_bbox, loss.weight_giou,
                                   loss.vfl_alpha, loss.focal_gamma)
        return SetCriterion(self.num_classes, matcher, loss.weight_class, loss.weight_bbox, loss.weight_giou,
                            loss.eos_coef, loss.aux_loss, loss.classification, loss.focal_alpha, loss.focal_gamma)

    def train_forward(self, model: nn.Module, images: Any, targets: Any) -> Any:
        """RT-DETR learns from the targets in its forward pass (denoising queries), on batches
        resized together to one of ``data.batch_scales`` until ``data.augment_stop_epoch``."""
        if self.family != "rtdetr":
            return model(images)
        return model(self.batch_resize(images[0]), targets)

    @cached_property
    def batch_resize(self) -> Callable[[Tensor], Tensor]:
        data = self.cfg.data
        if not data.batch_scales:
            return lambda images: images
        return MultiScaleBatchResize(data.batch_scales, _stop(data.augment_stop_epoch))

    def set_epoch(self, epoch: int) -> None:
        """The engine's epoch hook: RT-DETR's batch scales stop at ``data.augment_stop_epoch``."""
        if self.family == "rtdetr" and self.cfg.data.batch_scales:
            self.batch_resize.set_epoch(epoch)

    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.cfg.data
        required = ("train_images", "train_annotations") if data.format == "coco" else ("root",)
        for key in required:
            if not getattr(data, key):
                what = {"coco": "a folder of images and a COCO instances JSON", "yolo": "the YOLO data.yaml",
                        "voc": "the Pascal VOC folder, e.g. VOCdevkit/VOC2007"}[data.format]
                raise ConfigError(f"data.{key}: required ({what})")
        if self.pipeline == "rtdetr":
            augment = rtdetr_train_transforms(data.input_size, _stop(data.augment_stop_epoch), hflip=data.hflip)
        else:
            augment = train_transforms(data.train_scales, data.max_size, data.crop_resize_scales, data.crop_size,
                                       data.crop, data.hflip)
        instances = self.split_instances("train")
        train = CocoDetection(instances.image_dir, instances, augment, data.bad_annotations,
                              self.num_classes, self._label_categories())
        return train, self.build_val_dataset()

    def build_val_dataset(self) -> Dataset | None:
        data = self.cfg.data
        instances = self.split_instances("val")
        if instances is None:
            return None
        val = CocoDetection(instances.image_dir, instances, self.eval_transforms(),
                            data.bad_annotations, self.num_classes, self._label_categories())
        self.val_ground_truth = val.coco.dataset  # what data.bad_annotations left: scored as loaded
        return val

    def _label_categories(self) -> list[int]:
        """The category id of each label, checked against ``model.num_classes``: both sets number their
        labels as the model does (``data.category_ids``, else the training file's), not by their own file."""
        ids, data = self.categories[0], self.cfg.data
        if len(ids) > self.num_classes:
            instances = self.split_instances("train")
            source = "data.category_ids" if data.category_ids or instances is None else f"{instances.source}: 'categories'"
            raise UserInputError(f"{source}: {len(ids)} categories, more than the model's {self.num_classes} "
                                 "classes (model.num_classes)")
        return ids

    def eval_transforms(self) -> Any:
        if self.pipeline == "rtdetr":
            return rtdetr_val_transforms(self.cfg.data.input_size)
        return val_transforms(self.cfg.data.val_size, self.cfg.data.max_size)

    def collate(self, samples: list[Any]) -> tuple[Any, Any]:
        return collate_detection(samples, self.cfg.data.size_divisor)

    def build_postprocessor(self) -> Callable[[Any, Any], Any]:
        postprocess = PostProcess(self.classification, self.cfg.data.max_detections)

        def to_predictions(outputs: dict[str, Any], targets: list[dict[str, Any]]) -> list[dict[str, Tensor]]:
            sizes = torch.stack([t["orig_size"] for t in targets]).to(outputs["pred_boxes"].device)
            return postprocess(outputs, sizes)

        return to_predictions

    def build_evaluator(self) -> DetectionEvaluator:
        instances = self.split_instances("val")
        if instances is None:
            key = "data.val_annotations" if self.cfg.data.format == "coco" else "data.root and data.val_split"
            raise ConfigError(f"{key}: required for evaluation")
        # what data.bad_annotations left of the validation set, scored as loaded; else the file itself
        ground_truth = getattr(self, "val_ground_truth", None) or (
            instances.source if self.cfg.data.format == "coco" else instances.data)
        return DetectionEvaluator(ground_truth, self.categories[0])


def _stop(epoch: int) -> int | None:
    """``data.augment_stop_epoch``: -1 (never) as None."""
    return None if epoch < 0 else epoch
