"""An exported graph run by onnxruntime and called like the PyTorch model it came from, so that
``densevit predict --onnx`` goes through the same runners as a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from densevit.errors import UserInputError
from densevit.inference.export import read_metadata


class OnnxModel:
    """``model(images)`` or ``model((images, mask))`` -> the outputs the PyTorch model gives
    (a dict of ``pred_logits`` / ``pred_boxes`` for detection, logits otherwise), as tensors on
    the device of the input. ``size_divisor`` and ``in_chans`` are read from the graph's metadata.
    """

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.config: dict[str, Any] = json.loads(self.metadata["config"])
        for key in ("size_divisor", "in_chans"):
            if key in self.metadata:
                setattr(self, key, json.loads(self.metadata[key]))
        providers = ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own error types
            raise UserInputError(f"{self.path}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def to(self, device: torch.device | str) -> "OnnxModel":
        if torch.device(device).type != "cpu":
            raise UserInputError(f"{self.path}: ONNX graphs run on the CPU here (onnxruntime); use --device cpu")
        return self

    def eval(self) -> "OnnxModel":
        return self

    def __call__(self, samples: Any) -> Any:
        images = samples if isinstance(samples, Tensor) else samples[0]
        feeds = {self.input_names[0]: images.detach().float().cpu().numpy()}
        if len(self.input_names) > 1:  # detection: the padding mask
            mask = samples[1] if not isinstance(samples, Tensor) else torch.zeros(
                images.shape[0], *images.shape[-2:], dtype=torch.bool)
            feeds[self.input_names[1]] = mask.cpu().numpy()
        try:
            outputs = self.session.run(None, feeds)
        except Exception as err:  # noqa: BLE001
            raise UserInputError(f"{self.path}: onnxruntime failed on an input of shape {list(images.shape)} "
                                 f"({str(err).splitlines()[0]}; this graph's sizes: {self.metadata.get('sizes')})") from None
        tensors = [torch.from_numpy(np.asarray(o)).to(images.device) for o in outputs]
        if self.output_names == ["logits", "boxes"]:
            return {"pred_logits": tensors[0], "pred_boxes": tensors[1]}
        return tensors[0]
