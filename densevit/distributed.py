"""Process groups under ``torchrun``: set-up, rank queries and small collective helpers.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; we join with ``init_method="env://"``, gloo on CPU and NCCL on GPU. Without
those variables everything here degrades to a single process.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist

from densevit.errors import UserInputError


def env_world_size() -> int:
    """World size announced by the launcher (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launcher_rank() -> int:
    """This process's rank as the launcher announced it (valid before and after the group exists)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched with more than one process; True if we joined here."""
    if env_world_size() <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method="env://", device_id=device)
    else:
        dist.init_process_group(backend, init_method="env://")
    return True


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes (in place; returned for chaining)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average named scalars over all processes (every process must pass the same names)."""
    if not is_distributed() or not values:
        return dict(values)
    names = sorted(values)
    tensor = torch.tensor([float(values[n]) for n in names], dtype=torch.float64, device=device)
    all_reduce_sum(tensor)
    return {n: v / world_size() for n, v in zip(names, tensor.tolist())}


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as process ``src`` holds it, on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@contextmanager
def input_errors_shared(device: torch.device) -> Iterator[None]:
    """Run a block on every process; a ``UserInputError`` raised in it anywhere is raised everywhere.

    A bad file that only one process reads (its shard of the data, its copy of a checkpoint)
    would otherwise stop that process alone, and the others would wait for it in their next
    collective until the timeout. Here every process finishes the block (the failing one
    from where it failed), then one small all-reduce says whether any failed; if so, the
    first failing process's message is raised on all of them, marked ``shared_by_all`` (the
    CLI then prints it once, from the first process). The block must hold no collectives.
    Single-process runs raise at once, as without the block.
    """
    error: UserInputError | None = None
    try:
        yield
    except UserInputError as err:
        if not is_distributed():
            raise
        error = err
    if not is_distributed():
        return
    failed = torch.tensor([0.0 if error is None else 1.0], device=device)
    if all_reduce_sum(failed).item() == 0:
        return
    # Messages travel, not exception objects: a subclass with its own constructor may not unpickle.
    message = next(m for m in all_gather_objects(None if error is None else str(error)) if m is not None)
    shared = error if error is not None and str(error) == message else UserInputError(message)
    shared.shared_by_all = True
    raise shared
