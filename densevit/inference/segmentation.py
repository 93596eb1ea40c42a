"""Picture segmentation predictions: label PNGs named as the pictures, so that ``densevit score``
pairs them with the ground truth directly, and overlays to look at in ``pictures/``.

Every picture is normalised as in validation and segmented by
:func:`~densevit.segmentation.inferer.segment_images` with the config's inference mode (whole
image or sliding windows, overlap, chunk), unless the options say otherwise; ``NAME.png`` holds
the class indices and ``pictures/NAME.png`` the colours over the picture. Volume predictions are
in :mod:`densevit.inference.volume_segmentation`; videos give ``NAME/frame_000123.png`` per
frame and an overlay video (:class:`VideoSegmentation`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from densevit.data import IMAGE_SUFFIXES
from densevit.data import seg_transforms as T
from densevit.data.collate import pad_to, pad_to_multiple
from densevit.data.images import read_rgb
from densevit.inference.export import EXPORTERS, ExportSpec
from densevit.inference.inputs import expand_inputs
from densevit.inference.pictures import PICTURES, generated_picture, overlay
from densevit.inference.predictor import RUNNERS, Predictor
from densevit.inference.video import VIDEO_RUNNERS, Frame
from densevit.inference.writers import write_png
from densevit.segmentation.image_task import ImageSegmentationTask
from densevit.segmentation.inferer import ImageInference, segment_images


def picture_inference(predictor: Predictor) -> ImageInference:
    """The checkpoint's way of segmenting pictures, with the options' mode, overlap and batch size."""
    options = predictor.options
    return predictor.task.inference(predictor.model, options.mode, options.overlap, options.batch_size)  # type: ignore[attr-defined]


def segment_pictures(predictor: Predictor, pictures: Sequence[np.ndarray], settings: ImageInference) -> list[np.ndarray]:
    """The step that pictures and video frames share: pictures [H,W,3] uint8 -> class indices
    [H,W] int64 each, normalised as in validation and segmented with ``settings``."""
    normalise = T.street_eval()
    images = [normalise(rgb, np.zeros(rgb.shape[:2], np.int64))[0].to(predictor.device) for rgb in pictures]
    with predictor.running():
        labels = segment_images(predictor.model, images, settings)
    return [label.cpu().numpy() for label in labels]


@RUNNERS.register("image_segmentation")
def predict_images(predictor: Predictor, inputs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Segment every picture of ``inputs``; see the module docstring for the files."""
    task: ImageSegmentationTask = predictor.task  # type: ignore[assignment]
    files = expand_inputs(inputs, IMAGE_SUFFIXES)
    settings = picture_inference(predictor)
    written = []
    for start in range(0, len(files), settings.batch_size):
        chunk = files[start : start + settings.batch_size]
        pictures = [read_rgb(path) for path in chunk]
        for path, rgb, label in zip(chunk, pictures, segment_pictures(predictor, pictures, settings)):
            written.append(write_png(label, out_dir / f"{path.stem}.png"))
            if predictor.options.pictures:
                write_png(overlay(rgb, label, task.palette(), class_names=task.class_names()),
                          out_dir / PICTURES / f"{path.stem}.png")
    return {"images": len(files), "label_maps": [str(p) for p in written]}


@VIDEO_RUNNERS.register("image_segmentation")
class VideoSegmentation:
    """Segmentation of a video (:mod:`densevit.inference.video`): ``NAME/frame_000123.png`` holds
    the class indices of frame 123, the annotated video the colours over the frames."""

    def __init__(self, predictor: Predictor, frames_dir: Path) -> None:
        self.predictor = predictor
        self.frames_dir = frames_dir
        self.settings = picture_inference(predictor)
        self.batch_size = self.settings.batch_size
        self.palette = predictor.task.palette()
        self.names: list[str] = []

    def predict(self, frames: list[Frame]) -> list[np.ndarray]:
        labels = segment_pictures(self.predictor, [frame.rgb for frame in frames], self.settings)
        for frame, label in zip(frames, labels):
            write_png(label, self.frames_dir / frame.file_name)
            self.names.append(frame.file_name)
        if not self.predictor.options.pictures:
            return []
        return [overlay(frame.rgb, label, self.palette) for frame, label in zip(frames, labels)]

    def finish(self, out_dir: Path, name: str) -> dict[str, Any]:
        return {"label_maps": [str(out_dir / name / file_name) for file_name in self.names]}


class SegmentationGraph(nn.Module):
    """The segmenter with a named output, for export: images [B,C,H,W] -> logits [B,K,H,W]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


def graph_metadata(model: nn.Module, divisor: int) -> dict[str, Any]:
    return {"size_divisor": divisor, "in_chans": getattr(model, "in_chans", 3)}


@EXPORTERS.register("image_segmentation")
def image_export(task: ImageSegmentationTask, model: nn.Module, sample: Path | None) -> ExportSpec:
    """Two pictures (the sample and its mirror) padded to the model's stride, and one of another size."""
    divisor = getattr(model, "size_divisor", task.data.size_divisor)
    if sample is not None:
        rgb = read_rgb(sample)
    elif task.has_validation() and (task.data.root or task.data.val_images):
        rgb = read_rgb(task.samples("val")[0][0])
    else:
        rgb = generated_picture(*task.data.crop_size)
    image = pad_to_multiple(T.street_eval()(rgb, np.zeros(rgb.shape[:2], np.int64))[0], divisor)
    height, width = image.shape[-2:]
    other = pad_to(image, height + divisor, width + 2 * divisor)[None]
    return ExportSpec(SegmentationGraph(model).eval(), (torch.stack([image, image.flip(-1)]),), (other,),
                      ["images"], ["logits"], metadata=graph_metadata(model, divisor))
