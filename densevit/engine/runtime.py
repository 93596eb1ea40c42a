"""Where and how the numbers are computed: device, precision, seeds, determinism, memory format."""
from __future__ import annotations

import contextlib
import os
import random
from typing import Any, ContextManager

import numpy as np
import torch
from torch import nn

from densevit.distributed import env_world_size, local_rank
from densevit.errors import UserInputError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` under torchrun -> this process's GPU."""
    name = (name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserInputError(f"--device: {name!r} asked for, but no CUDA device is available")
        if device.index is None:
            device = torch.device("cuda", local_rank() if env_world_size() > 1 else torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise UserInputError(f"--device: {name!r}, but only {torch.cuda.device_count()} CUDA devices exist")
    elif device.type != "cpu":
        raise UserInputError(f"--device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on GPUs that support it, fp32 elsewhere; explicit choices are checked."""
    if precision not in PRECISIONS:
        raise UserInputError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserInputError("train.precision: bf16 is not supported by this GPU; use fp16 or fp32")
    return precision


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The mixed-precision context for forward passes and losses (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 (whose small range underflows gradients); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def start_epoch(dataset: Any, task: Any, epoch: int, seed: int) -> None:
    """Before the epoch's loader iterator exists (workers copy the dataset then): call
    ``set_epoch(epoch)`` on the training dataset and the task where they define it
    (augmentation that changes with the epoch), and ``dataset.reseed(seed)`` where the
    dataset has it (augmentation with random generators of its own, which torch's seeding of
    python, numpy and torch in the process and its workers does not reach)."""
    for owner in (dataset, task):
        set_epoch = getattr(owner, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
    reseed = getattr(dataset, "reseed", None)
    if reseed is not None:
        reseed(seed)


def sync_batchnorm(model: nn.Module, world: int, device: torch.device) -> tuple[nn.Module, str | None]:
    """``model`` with SyncBatchNorm layers where they can run (CUDA, more than one process),
    else ``model`` unchanged and the reason why (BatchNorm statistics then stay per process)."""
    if world > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), None
    if world == 1:
        return model, "one process: BatchNorm already normalises over the whole batch; nothing to synchronise"
    return model, (f"SyncBatchNorm needs CUDA processes (NCCL); this {device.type.upper()} run normalises "
                   "each process's own batch")


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (a warning names any op that has none), or torch's defaults.

    cuDNN autotuning stays off either way: detection trains on varying image sizes, and
    autotuning every new shape costs more than it saves.
    """
    if enabled:
        # cuBLAS needs a fixed workspace to be reproducible; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """This process's generator states, as tensors and plain containers only."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def channels_last(obj: Any) -> Any:
    """4-D floating-point tensors (images) inside ``obj`` converted to channels-last memory format."""
    if isinstance(obj, torch.Tensor):
        return obj.contiguous(memory_format=torch.channels_last) if obj.ndim == 4 and obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: channels_last(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(channels_last(v) for v in obj)
    return obj
