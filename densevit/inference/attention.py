"""Attention maps of a model on one image, as pictures and arrays: ``densevit attention``.

What is drawn depends on the model (:func:`attention_kind`):

* ``tokens`` (ViT, R50+ViT hybrids, TransUNet's encoder, TNT): the last layer's attention per
  head (the class token's row; without a class token, the mean attention each patch receives)
  and the attention rollout over all layers;
* ``swin``: the attention of one pixel's token within its window, in the last two blocks of a
  stage (a regular and a shifted window), mapped back to image coordinates;
* ``cswin``: the attention of one pixel's token in the last block of a stage, within its
  vertical stripe (the first half of the heads) and its horizontal stripe (the second half),
  or over the whole map in the last stage, mapped back to image coordinates (padding cut off);
* ``detr``: for the best-scoring queries, the last decoder layer's cross-attention over the
  feature map, with the query's box;
* ``rtdetr``: for the best-scoring queries, the last decoder layer's deformable sampling points
  as dots sized and coloured by their weights, with the query's box.

The image is resized (longer side ``size``, sides multiples of the model's largest stride) and
normalised with ImageNet's mean and std, the model runs once in eval mode with the captures of
:mod:`.attention_capture`, and every map is drawn over the original image. Each map is written
as ``.npy`` (float64, on the model's grid) beside its ``.png``; ``attention.json`` lists them.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn
from torchvision.ops import box_convert

from densevit.backbones import BACKBONES, create_backbone
from densevit.data.images import read_rgb
from densevit.detection.detr import DETR
from densevit.detection.rtdetr import RTDETR
from densevit.engine.build import build_from_checkpoint
from densevit.errors import UserInputError
from densevit.inference import attention_pictures as pictures
from densevit.inference.attention_capture import (
    cswin_blocks,
    detr_cross_attention,
    rtdetr_sampling,
    stripe_attention,
    swin_blocks,
    token_attention,
    token_attention_modules,
    window_attention,
)
from densevit.inference.attention_maps import (
    attention_rollout,
    last_layer_map,
    rollout_map,
    stripe_map,
    top_queries,
    window_map,
)
from densevit.inference.writers import write_png
from densevit.io import atomic_path, write_json_atomic
from densevit.models import MODELS, create_model

DEFAULT_SIZE = 224
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class AttentionOptions:
    """``head``: one head's map in the main pictures (None: the mean over heads; RT-DETR: every
    head's points). ``pixel``: Swin's / CSWin's query pixel (x, y) in the image (None: the
    centre). ``stage``: Swin / CSWin stage (negative counts from the end). ``boxes``:
    detectors' queries shown.
    ``size``: the model input's longer side (None: a detection checkpoint's ``data.val_size``, or
    ``data.input_size`` for RT-DETR, else 224).
    ``num_classes``: for a detector built by name."""

    head: int | None = None
    pixel: tuple[int, int] | None = None
    stage: int = -1
    boxes: int = 5
    size: int | None = None
    num_classes: int = 80


@dataclass
class LoadedModel:
    model: nn.Module
    size: int | None
    class_names: list[str]


def load_model(source: str, weights: Path | None = None, num_classes: int = 80) -> LoadedModel:
    """A densevit checkpoint file, or a registered backbone / model name (random weights, or
    ``weights``, a local file or a weights name such as ``timm:...``), in eval mode."""
    path = Path(source)
    if path.suffix in CHECKPOINT_SUFFIXES or path.is_file():
        if weights is not None:
            raise UserInputError("--weights: only with a model or backbone name (a checkpoint holds its weights)")
        task, model = build_from_checkpoint(path)
        data = task.cfg.data
        size = getattr(data, "input_size" if getattr(task, "family", "") == "rtdetr" else "val_size", None)
        return LoadedModel(model, size, list(task.class_names()))
    if source in BACKBONES:
        return LoadedModel(create_backbone(source, pretrained=weights).eval(), None, [])
    if source in MODELS:
        model = create_model(source, num_classes=num_classes)
        if weights is not None:
            from densevit.weights import load_pretrained_model

            load_pretrained_model(model, weights)
        return LoadedModel(model.eval(), None, [])
    close = difflib.get_close_matches(source, [*BACKBONES.names(), *MODELS.names()], n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UserInputError(f"{source}: neither a checkpoint file nor a registered model or backbone name{hint}")


def attention_kind(model: nn.Module, name: str = "") -> str:
    """``detr``, ``rtdetr``, ``swin``, ``cswin`` or ``tokens`` (see the module docstring); a model without
    attention layers is a ``UserInputError`` naming ``name``."""
    if isinstance(model, DETR):
        return "detr"
    if isinstance(model, RTDETR):
        return "rtdetr"
    if swin_blocks(model):
        return "swin"
    if cswin_blocks(model):
        return "cswin"
    if token_attention_modules(model):
        return "tokens"
    raise UserInputError(f"{name or type(model).__name__}: {type(model).__name__} has no attention layers to draw (attention maps cover ViT, "
                         "R50+ViT, TransUNet, TNT, Swin and CSWin encoders, DETR and RT-DETR)")


def input_stride(model: nn.Module) -> int:
    """The largest stride of the model's backbone: input sides must be its multiples."""
    for part in (getattr(model, "backbone", None), getattr(model, "encoder", None), model):
        if part is not None and getattr(part, "strides", None):
            return max(part.strides)
    return 32


def model_input(image: np.ndarray, size: int, stride: int) -> Tensor:
    """[H,W,3] uint8 -> [1,3,h,w] float, normalised with ImageNet's statistics, the longer side
    about ``size`` and each side a multiple of ``stride`` (the aspect ratio kept to a stride)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    h, w = (max(stride, round(side * scale / stride) * stride) for side in (height, width))
    resized = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    normalised = (resized - np.array(IMAGENET_DEFAULT_MEAN, np.float32)) / np.array(IMAGENET_DEFAULT_STD, np.float32)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())[None]


def token_grid(count: int, height: int, width: int) -> tuple[int, int]:
    """The (rows, cols) of ``count`` tokens covering a ``height`` x ``width`` input with square cells."""
    stride = math.sqrt(height * width / count)
    grid = (round(height / stride), round(width / stride))
    if grid[0] * grid[1] != count:
        raise ValueError(f"{count} tokens do not tile a {height}x{width} input")
    return grid


def prefix_tokens(model: nn.Module) -> int:
    """Tokens before the patches (class / register tokens): timm's ``num_prefix_tokens``, else
    1 when the model has a class token (TNT), else 0 (TransUNet's encoder)."""
    for module in model.modules():
        if hasattr(module, "num_prefix_tokens"):
            return int(module.num_prefix_tokens)
    return int(any(getattr(m, "cls_token", None) is not None for m in model.modules()))


def _head_choice(maps: Tensor, head: int | None) -> tuple[Tensor, str]:
    """[heads, ...] -> the chosen head's map (or the mean) and its caption."""
    if head is None:
        return maps.mean(0), "mean of heads"
    if not -maps.shape[0] <= head < maps.shape[0]:
        raise UserInputError(f"--head {head}: the model has {maps.shape[0]} heads (0..{maps.shape[0] - 1})")
    return maps[head], f"head {head % maps.shape[0]}"


class _Writer:
    """Writes arrays and pictures into ``out`` and remembers what each file holds."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: dict[str, str] = {}

    def array(self, name: str, array: Tensor | np.ndarray, what: str) -> None:
        with atomic_path(self.out / name) as tmp:
            np.save(tmp, np.asarray(array))
        self.files[name] = what

    def picture(self, name: str, picture: np.ndarray, what: str) -> None:
        write_png(picture, self.out / name)
        self.files[name] = what


def _head_sheet(image: np.ndarray, maps: Tensor) -> np.ndarray:
    overlays = [pictures.heat_overlay(image, m) for m in maps]
    return pictures.tile(overlays, [f"head {i}" for i in range(len(overlays))])


def _tokens(loaded: LoadedModel, x: Tensor, image: np.ndarray, options: AttentionOptions, out: _Writer) -> None:
    model = loaded.model
    with torch.no_grad(), token_attention(model) as captured:
        model(x)
    layers = [attention[0] for attention in captured]
    prefix = prefix_tokens(model)
    grid = token_grid(layers[-1].shape[-1] - prefix, *x.shape[-2:])
    what = "the class token's attention" if prefix else "mean attention received by each patch (no class token)"
    heads = last_layer_map(layers[-1], prefix, grid)
    chosen, caption = _head_choice(heads, options.head)
    rollout = attention_rollout(layers)
    out.array("last_layer.npy", heads, f"last layer, {what}, per head [heads, rows, cols]")
    out.picture("last_layer_heads.png", _head_sheet(image, heads), f"last layer, {what}, one tile per head")
    out.picture("last_layer.png", pictures.heat_overlay(image, chosen), f"last layer, {what}, {caption}")
    out.array("rollout_matrix.npy", rollout, f"attention rollout over {len(layers)} layers [tokens, tokens], "
              f"{prefix} prefix token(s) first")
    rolled = rollout_map(rollout, prefix, grid)
    rows = "the class token's row" if prefix else "mean over all rows"
    out.array("rollout.npy", rolled, f"attention rollout, {rows} [rows, cols]")
    out.picture("rollout.png", pictures.heat_overlay(image, rolled), f"attention rollout, {rows}")


def _stage_and_pixel(options: AttentionOptions, stages: int, family: str,
                     image: np.ndarray) -> tuple[int, tuple[int, int]]:
    """The chosen stage (0..stages-1) and query pixel (x, y) in the image, checked."""
    if not -stages <= options.stage < stages:
        raise UserInputError(f"--stage {options.stage}: the model has {stages} {family} stages (0..{stages - 1})")
    height, width = image.shape[:2]
    px, py = options.pixel if options.pixel is not None else (width // 2, height // 2)
    if not (0 <= px < width and 0 <= py < height):
        raise UserInputError(f"--pixel {px} {py}: outside the {width}x{height} image")
    return options.stage % stages, (px, py)


def _swin(loaded: LoadedModel, x: Tensor, image: np.ndarray, options: AttentionOptions, out: _Writer) -> None:
    stages = swin_blocks(loaded.model)
    stage, (px, py) = _stage_and_pixel(options, len(stages), "Swin", image)
    blocks = stages[stage][-2:]  # the last regular and shifted pair (one block if the stage has one)
    first = len(stages[stage]) - len(blocks)
    height, width = image.shape[:2]
    with torch.no_grad(), window_attention(blocks) as calls:
        loaded.model(x)
    if not calls:
        raise UserInputError(f"--stage {stage}: the model does not run that stage (its out_indices stop earlier)")
    for offset, call in enumerate(calls):
        grid_h, grid_w = call.size
        maps = window_map(call, int(py * grid_h / height), int(px * grid_w / width))
        chosen, caption = _head_choice(maps, options.head)
        shifted = "shifted window" if any(call.shift) else "window"
        stem = f"swin_stage{stage}_block{first + offset}"
        what = f"stage {stage}, block {first + offset} ({shifted} {call.window}, shift {call.shift}): attention " \
               f"of the token under pixel ({px}, {py})"
        out.array(f"{stem}.npy", maps, f"{what}, per head [heads, rows, cols] on the stage's grid")
        marked = pictures.draw_marker(pictures.heat_overlay(image, chosen), px, py)
        out.picture(f"{stem}.png", marked, f"{what}, {caption}")
        out.picture(f"{stem}_heads.png", _head_sheet(image, maps), f"{what}, one tile per head")


def _cswin(loaded: LoadedModel, x: Tensor, image: np.ndarray, options: AttentionOptions, out: _Writer) -> None:
    stages = cswin_blocks(loaded.model)
    stage, (px, py) = _stage_and_pixel(options, len(stages), "CSWin", image)
    number = len(stages[stage]) - 1  # the stage's last block
    with torch.no_grad(), stripe_attention(stages[stage][-1]) as calls:
        loaded.model(x)
    if not calls:
        raise UserInputError(f"--stage {stage}: the model does not run that stage (its out_indices stop earlier)")
    heads = calls[0].weights.shape[1]
    if options.head is not None and not -heads <= options.head < heads:
        each = " in each stripe" if len(calls) > 1 else ""
        raise UserInputError(f"--head {options.head}: stage {stage} has {heads} head{'s' * (heads != 1)}{each} "
                             f"(0..{heads - 1})")
    height, width = image.shape[:2]
    stem = f"cswin_stage{stage}_block{number}"
    chosen_maps = []
    for call in calls:
        grid_h, grid_w = call.size
        maps = stripe_map(call, int(py * grid_h / height), int(px * grid_w / width))
        chosen, caption = _head_choice(maps, options.head)
        chosen_maps.append(chosen)
        region = "the whole map" if call.orientation == "full" else f"its {call.orientation} stripe"
        what = f"stage {stage}, block {number} ({region}, windows {call.window[0]}x{call.window[1]}): attention " \
               f"of the token under pixel ({px}, {py})"
        name = f"{stem}_{call.orientation}"
        out.array(f"{name}.npy", maps, f"{what}, per head [heads, rows, cols] on the stage's grid")
        marked = pictures.draw_marker(pictures.heat_overlay(image, chosen), px, py)
        out.picture(f"{name}.png", marked, f"{what}, {caption}")
        out.picture(f"{name}_heads.png", _head_sheet(image, maps), f"{what}, one tile per head")
    if len(chosen_maps) == 2:  # both stripes together: the cross the token sees
        cross = (chosen_maps[0] + chosen_maps[1]) / 2
        marked = pictures.draw_marker(pictures.heat_overlay(image, cross), px, py)
        out.picture(f"{stem}_cross.png", marked, f"stage {stage}, block {number}: the vertical and horizontal "
                    f"stripes' maps averaged (the cross), token under pixel ({px}, {py}), {caption}")


def _detections(loaded: LoadedModel, outputs: dict[str, Any], image: np.ndarray,
                options: AttentionOptions) -> list[tuple[int, list[float], str]]:
    """(query, pixel box xyxy, caption) of the best ``options.boxes`` queries."""
    model = loaded.model
    queries, scores, labels = top_queries(outputs["pred_logits"][0], model.classification, options.boxes)
    height, width = image.shape[:2]
    boxes = box_convert(outputs["pred_boxes"][0].float(), "cxcywh", "xyxy") * torch.tensor([width, height] * 2)
    found = []
    for query, score, label in zip(queries.tolist(), scores.tolist(), labels.tolist()):
        name = loaded.class_names[label] if label < len(loaded.class_names) else f"class {label}"
        found.append((query, boxes[query].tolist(), f"q{query} {name} {score:.2f}"))
    return found


def _detr(loaded: LoadedModel, x: Tensor, image: np.ndarray, options: AttentionOptions, out: _Writer) -> None:
    with torch.no_grad(), detr_cross_attention(loaded.model) as found:
        outputs = loaded.model(x)
    weights = found["weights"][0]  # [heads, Q, h*w]
    grid = token_grid(weights.shape[-1], *x.shape[-2:])
    for query, box, caption in _detections(loaded, outputs, image, options):
        maps = weights[:, query].double().reshape(weights.shape[0], *grid)
        chosen, head = _head_choice(maps, options.head)
        what = f"query {query} ({caption}): last decoder layer's cross-attention"
        out.array(f"detr_query{query}.npy", maps, f"{what}, per head [heads, rows, cols] on the feature map")
        picture = pictures.draw_box(pictures.heat_overlay(image, chosen), box, caption)
        out.picture(f"detr_query{query}.png", picture, f"{what}, {head}, with the box")


def _rtdetr(loaded: LoadedModel, x: Tensor, image: np.ndarray, options: AttentionOptions, out: _Writer) -> None:
    with torch.no_grad(), rtdetr_sampling(loaded.model) as found:
        outputs = loaded.model(x)
    height, width = image.shape[:2]
    # the maps cover the whole input (no padding), so [0, 1] spans the image
    locations = found["locations"][0].double() * torch.tensor([width, height], dtype=torch.float64)
    weights = found["weights"][0].double()  # [Q, heads, P]
    for query, box, caption in _detections(loaded, outputs, image, options):
        points, point_weights = locations[query], weights[query]  # [heads, P, 2], [heads, P]
        shown = slice(None)
        head = "every head"
        if options.head is not None:
            _, head = _head_choice(point_weights, options.head)
            shown = slice(options.head % len(point_weights), options.head % len(point_weights) + 1)
        what = f"query {query} ({caption}): last decoder layer's deformable sampling points"
        out.array(f"rtdetr_query{query}_points.npy", points, f"{what}, (x, y) in image pixels [heads, points, 2]")
        out.array(f"rtdetr_query{query}_weights.npy", point_weights,
                  f"{what}, their weights [heads, points] (each head's sum to 1)")
        picture = pictures.draw_points(image, points[shown].reshape(-1, 2).numpy(),
                                       point_weights[shown].reshape(-1).numpy())
        out.picture(f"rtdetr_query{query}.png", pictures.draw_box(picture, box, caption),
                    f"{what}, {head}, dots sized and coloured by weight, with the box")


_DRAWERS: dict[str, Callable[[LoadedModel, Tensor, np.ndarray, AttentionOptions, _Writer], None]] = {
    "tokens": _tokens, "swin": _swin, "cswin": _cswin, "detr": _detr, "rtdetr": _rtdetr,
}


def attention_maps(source: str, image_path: str | Path, out_dir: str | Path, options: AttentionOptions | None = None,
                   weights: Path | None = None) -> dict[str, Any]:
    """Draw the attention of ``source`` (checkpoint or registered name) on one image into ``out_dir``.

    Returns the summary written to ``attention.json``: the model, its kind, the input size and
    each file with what it holds.
    """
    options = options or AttentionOptions()
    image = read_rgb(image_path)
    loaded = load_model(source, weights, options.num_classes)
    kind = attention_kind(loaded.model, source)
    channels = getattr(loaded.model, "in_chans", 3)
    if channels != 3:
        raise UserInputError(f"{source}: the model takes {channels}-channel inputs (volumes); attention maps are "
                             "drawn for models of RGB pictures")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"--out: cannot create the folder {out} ({err.strerror or err})") from None
    x = model_input(image, options.size or loaded.size or DEFAULT_SIZE, input_stride(loaded.model))
    writer = _Writer(out)
    _DRAWERS[kind](loaded, x, image, options, writer)
    summary = {"model": source, "kind": kind, "image": str(image_path), "input_size": list(x.shape[-2:]),
               "files": writer.files}
    write_json_atomic(summary, out / "attention.json")
    return summary
