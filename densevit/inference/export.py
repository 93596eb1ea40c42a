"""``densevit export``: a checkpoint as an ONNX graph, checked in onnxruntime before it is written.

Each task says how its model is exported (:data:`EXPORTERS`: the wrapped module, a real
example input with padding, and one of another size). The graph is exported with dynamic
batch and image size; when the graph does not give the same outputs at the second size
(Swin's window masks, for one, are built for one size) it is exported again with the image
size fixed (batch still dynamic, if that holds), and the command says so. A file is written
only when onnxruntime's outputs on the example equal PyTorch's within the tolerance and hold
no NaN; it carries the checkpoint's config and class names, so that ``densevit predict --onnx``
needs nothing else.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from densevit import __version__
from densevit.engine.build import build_from_checkpoint
from densevit.errors import UserInputError
from densevit.io import atomic_path
from densevit.registry import Registry

EXPORTERS = Registry("exporter")  # task name -> (task, model, sample path or None) -> ExportSpec
METADATA_PREFIX = "densevit."
DEFAULT_TOLERANCE = 1e-4


@dataclass
class ExportSpec:
    """How one task's model goes to ONNX.

    Attributes:
        module: ``forward(*inputs) -> tuple of tensors`` (the model with plain tensor outputs).
        inputs: a real example, padding included (the check runs on it).
        other_inputs: the same kind of input at another batch and image size (checks the dynamic sizes).
        input_names, output_names: the graph's names; inputs are [B, C, H, W] images (and
            [B, H, W] masks), their dims 0, -2, -1 the dynamic ones.
        derived: extra named arrays computed from the outputs that must agree too (detection
            scores from logits), or None.
        metadata: what ``predict --onnx`` needs besides the config (``size_divisor``, ``in_chans``).
    """

    module: nn.Module
    inputs: tuple[Tensor, ...]
    other_inputs: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    derived: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class ExportMismatch(Exception):
    """onnxruntime's outputs differ from PyTorch's (or hold NaN)."""


def export_onnx(checkpoint: str | Path, out: str | Path, sample: str | Path | None = None,
                tolerance: float = DEFAULT_TOLERANCE, opset: int | None = None) -> dict[str, Any]:
    """Export ``checkpoint`` to ``out`` (see the module docstring); returns a report of what was checked."""
    out = Path(out)
    task, model = build_from_checkpoint(checkpoint, device="cpu")
    name = task.name
    if name not in EXPORTERS:
        raise UserInputError(f"{checkpoint}: task {name!r} has no ONNX exporter (known: {', '.join(EXPORTERS.names())})")
    spec = EXPORTERS.get(name)(task, model.float().eval(), Path(sample) if sample else None)
    with atomic_path(out) as tmp:
        sizes = "dynamic batch and image size"
        try:
            _export(spec, tmp, opset, dynamic_dims=(0, -2, -1))
            worst = max(_check(tmp, spec, spec.inputs, tolerance), _check(tmp, spec, spec.other_inputs, tolerance))
        except ExportMismatch:
            height, width = spec.inputs[0].shape[-2:]
            sizes = f"dynamic batch, image size fixed at {height}x{width}"
            same_size = tuple(_batch_of(t, spec.other_inputs[0].shape[0]) for t in spec.inputs)
            try:
                _export(spec, tmp, opset, dynamic_dims=(0,))
                worst = max(_check(tmp, spec, spec.inputs, tolerance), _check(tmp, spec, same_size, tolerance))
            except ExportMismatch:
                sizes = f"batch {spec.inputs[0].shape[0]}, image size fixed at {height}x{width}"
                _export(spec, tmp, opset, dynamic_dims=())
                worst = _check(tmp, spec, spec.inputs, tolerance)
        _write_metadata(tmp, task, {**spec.metadata, "sizes": sizes})
    return {"onnx": str(out), "task": name, "sizes": sizes, "max_abs_difference": worst, "tolerance": tolerance,
            "inputs": {n: list(t.shape) for n, t in zip(spec.input_names, spec.inputs)}}


def _batch_of(tensor: Tensor, batch: int) -> Tensor:
    """``tensor`` with its first dim repeated or cut to ``batch``."""
    repeats = -(-batch // tensor.shape[0])
    return tensor.repeat(repeats, *[1] * (tensor.dim() - 1))[:batch]


def _export(spec: ExportSpec, path: Path, opset: int | None, dynamic_dims: Sequence[int]) -> None:
    auto = torch.export.Dim.AUTO
    shapes = tuple({d % t.dim(): auto for d in dynamic_dims} for t in spec.inputs)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(spec.module, spec.inputs, str(path), dynamo=True, external_data=False,
                              input_names=spec.input_names, output_names=spec.output_names, opset_version=opset,
                              dynamic_shapes=shapes if dynamic_dims else None)
        except Exception as err:  # noqa: BLE001 - the exporter fails in many ways on unsupported models
            if dynamic_dims:
                raise ExportMismatch(f"export with dynamic dims failed: {err}") from err
            raise UserInputError(f"cannot export this model to ONNX: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def _check(path: Path, spec: ExportSpec, inputs: tuple[Tensor, ...], tolerance: float) -> float:
    """Largest difference between onnxruntime and PyTorch on ``inputs``; ``ExportMismatch`` beyond ``tolerance``."""
    import onnxruntime as ort

    with torch.no_grad():
        outputs = spec.module(*inputs)
    expected = [t.numpy() for t in ((outputs,) if isinstance(outputs, Tensor) else outputs)]
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {n: t.numpy() for n, t in zip(spec.input_names, inputs)})
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ExportMismatch(f"onnxruntime failed: {str(err).splitlines()[0]}") from err
    named_expected = dict(zip(spec.output_names, expected))
    named_got = dict(zip(spec.output_names, got))
    if spec.derived is not None:
        named_expected.update(spec.derived(named_expected))
        named_got.update(spec.derived(named_got))
    worst = 0.0
    for name, reference in named_expected.items():
        value = named_got[name]
        if value.shape != reference.shape:
            raise ExportMismatch(f"{name}: shape {value.shape} in ONNX, {reference.shape} in PyTorch")
        if np.isnan(value).any():
            raise ExportMismatch(f"{name}: NaN in onnxruntime's output")
        difference = float(np.abs(value.astype(np.float64) - reference.astype(np.float64)).max(initial=0.0))
        bound = tolerance * (1.0 + float(np.abs(reference).max(initial=0.0)))
        if difference > bound:
            raise ExportMismatch(f"{name}: differs from PyTorch by {difference:.3g} (> {bound:.3g})")
        worst = max(worst, difference)
    return worst


def _write_metadata(path: Path, task: Any, extra: dict[str, Any]) -> None:
    """The checkpoint's config, class names and ``extra`` as the graph's metadata."""
    import onnx

    model = onnx.load(str(path))
    values = {"version": __version__, "task": task.name, "config": json.dumps(task.cfg.to_dict()),
              "class_names": json.dumps(list(task.class_names())), **{k: json.dumps(v) for k, v in extra.items()}}
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, value
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``densevit.*`` metadata of an exported graph, without the prefix."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise UserInputError(f"{path}: cannot read as an ONNX file ({type(err).__name__}: {err})") from None
    found = {p.key[len(METADATA_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(METADATA_PREFIX)}
    if "config" not in found:
        raise UserInputError(f"{path}: not written by densevit export (no densevit.config metadata)")
    return found
