"""The one path every weight file takes: read it as data, find its state dict, load it with a report.

* :func:`read_weights`: ``.pth`` / ``.pt`` / anything ``torch.load`` reads (always with
  ``weights_only=True``: a weight file is data, never code), ``.safetensors`` and Google's
  ``.npz`` (arrays as tensors, under Google's names). Missing, truncated, corrupt and unsafe
  files are one :class:`UserInputError` naming the file. A weights name (``timm:<model>``,
  ``hf-hub:<org>/<repo>[/<file>]``) stands for its file in the Hugging Face cache
  (:mod:`densevit.hub_weights`, which fetches it when it is not there yet).
* :func:`state_dict_of`: the tensors inside the usual wrappers (``model``, ``state_dict``,
  ``state_dict_ema``, ``ema`` / ``module``), without DistributedDataParallel's ``module.`` prefix.
* :func:`load_state`: load a state dict into a module. Missing and unexpected keys are an
  error (``strict``) or a warning that names them; tensors of another shape are an error,
  except under ``resizable`` prefixes (a classifier for another number of classes), which
  keep their fresh initialisation with a warning.
* :func:`load_pretrained_model`: a config's ``model.pretrained``: the weights of the whole model
  (densevit's, or converted), or, when the file's keys are not the model's, weights for its
  backbone in any layout the backbone reads (timm, torchvision, Google ``.npz``).

Models say which of their parameters are the backbone and which are the classifier through
the attributes ``backbone_prefixes`` and ``classifier_prefixes`` (tuples of key prefixes).
"""
from __future__ import annotations

import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from densevit.errors import UserInputError
from densevit.hub_weights import resolve_weights

logger = logging.getLogger(__name__)

# Wrappers around a state dict, in the order they are looked for (EMA weights first: they are
# the ones published checkpoints are evaluated with).
WRAPPER_KEYS = ("state_dict_ema", "ema", "model", "state_dict", "module")
_LISTED = 6  # keys named in an error (one line)
_LISTED_IN_WARNINGS = 20


def read_weights(path: str | Path, what: str = "weight file", map_location: str | torch.device = "cpu",
                 allowed_globals: Sequence[type] = ()) -> dict[str, Any]:
    """The content of a weight file as a dict (see the module docstring for the formats).

    ``what`` names the file in messages ("checkpoint", "pretrained weights"); ``allowed_globals``
    are extra classes a ``torch.load`` may rebuild (the official DETR files hold an
    ``argparse.Namespace``). ``path`` may be a weights name (see the module docstring).
    """
    path = resolve_weights(path)
    if not path.is_file():
        raise UserInputError(f"{path}: {what} not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, what)
    if path.suffix == ".npz":
        return _read_npz(path, what)
    corrupt = f"{path}: cannot read {what}: the file is truncated or corrupt"
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            content = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not zipfile.is_zipfile(path):
            raise UserInputError(f"{corrupt} (not a torch.save archive)") from None
        raise UserInputError(
            f"{path}: refused to load: the {what} holds pickled Python objects, not only tensors and plain "
            f"containers ({_unsupported_global(err)}); a {what} must be data, never code"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch's unpickler fails on damaged files in many ways
        raise UserInputError(f"{corrupt} ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(content, dict):
        raise UserInputError(f"{path}: expected a state dict or a checkpoint dict in the {what}, "
                             f"got {type(content).__name__}")
    return content


def _read_safetensors(path: Path, what: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserInputError(f"{path}: cannot read {what}: not a valid .safetensors file ({_first_line(err)})") from None


def _read_npz(path: Path, what: str) -> dict[str, Any]:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise UserInputError(f"{path}: cannot read {what}: not a valid .npz file ({_first_line(err)})") from None


def state_dict_of(content: dict[str, Any], path: str | Path) -> dict[str, Tensor]:
    """The tensors of the state dict inside ``content`` (see :data:`WRAPPER_KEYS`), ``module.`` removed."""
    state: Any = content
    while isinstance(state, dict):
        inner = next((state[key] for key in WRAPPER_KEYS if isinstance(state.get(key), dict)), None)
        if inner is None:
            break
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, Tensor)}
    if not tensors:
        raise UserInputError(f"{path}: holds no tensors (top-level keys: {_listed(content)}); "
                             "expected a state dict of named tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


@dataclass
class LoadReport:
    """What :func:`load_state` did: keys the file lacked, keys the module lacks, tensors re-initialised."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def load_state(module: nn.Module, state: dict[str, Tensor], source: str | Path, strict: bool = True,
               resizable: Iterable[str] = ()) -> LoadReport:
    """Load ``state`` into ``module`` (see the module docstring); ``source`` names the file in messages."""
    own = module.state_dict()
    prefixes = tuple(resizable)
    wrong = [k for k in state if k in own and own[k].shape != state[k].shape]
    resized = [k for k in wrong if prefixes and k.startswith(prefixes)]
    misfits = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}" for k in wrong if k not in resized]
    if misfits:
        raise UserInputError(f"{source}: {len(misfits)} tensors have the wrong shape for {type(module).__name__} "
                             f"({'; '.join(misfits[:_LISTED])})")
    # torch decides what is missing or unexpected (FrozenBatchNorm2d, for one, ignores the
    # num_batches_tracked of the BatchNorm it replaces). As with torch's own strict loading, a
    # module that failed to load is left partly loaded: the caller discards it.
    result = module.load_state_dict({k: v for k, v in state.items() if k not in resized}, strict=False)
    report = LoadReport(sorted(k for k in result.missing_keys if k not in resized), sorted(result.unexpected_keys),
                        resized)
    if strict and (report.missing or report.unexpected):
        raise UserInputError(
            f"{source}: not weights of this {type(module).__name__}: {len(report.missing)} missing "
            f"({_listed(report.missing)}) and {len(report.unexpected)} unexpected tensors ({_listed(report.unexpected)})"
        )
    if report.resized:
        warnings.warn(f"{source}: re-initialised {', '.join(report.resized)} (shape differs: other classes)",
                      stacklevel=2)
    if report.missing or report.unexpected:
        logger.warning("%s: loaded %d tensors; %d missing from the file (left as initialised): %s; "
                       "%d in the file but not in the model (ignored): %s", source,
                       len(own) - len(report.missing) - len(resized), len(report.missing),
                       _listed(report.missing, _LISTED_IN_WARNINGS), len(report.unexpected),
                       _listed(report.unexpected, _LISTED_IN_WARNINGS))
    return report


def load_pretrained_model(model: nn.Module, path: str | Path) -> LoadReport | None:
    """Load a config's ``model.pretrained`` (a file or a weights name) into ``model`` (see the module docstring).

    Whole-model weights load strictly, except the classifier (``model.classifier_prefixes``),
    which may have another number of classes. Other files go to the backbone
    (``model.backbone_prefixes``), whose ``load_weights_file`` reads any layout it knows.
    """
    path = resolve_weights(path)
    content = read_weights(path, "pretrained weights")
    own = model.state_dict()
    state = None if path.suffix == ".npz" else state_dict_of(content, path)
    if state is not None and any(key in own for key in state):
        return load_state(model, state, path, strict=True, resizable=getattr(model, "classifier_prefixes", ()))
    prefixes = getattr(model, "backbone_prefixes", ())
    backbone = model.get_submodule(prefixes[0].rstrip(".")) if len(prefixes) == 1 else None
    if backbone is None or not hasattr(backbone, "load_weights_file"):
        raise UserInputError(f"model.pretrained: {path}: none of its keys belong to {type(model).__name__} "
                             f"(file has {_listed(state or content)}; expected e.g. {_listed(own)})")
    backbone.load_weights_file(path)
    return None


def _listed(keys: Iterable[Any], limit: int = _LISTED) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:limit])
    more = f", ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"[{shown}{more}]" if keys else "none"


def _unsupported_global(err: pickle.UnpicklingError) -> str:
    """The line of torch's long message that names the refused class."""
    for line in str(err).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().split(" was not")[0]
    return _first_line(err)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].split(". ")[0] if text else type(err).__name__
