"""Loading backbone weights from a local file: ours, or the library's (timm / torchvision) layout.

Accepted files:
  * ``.safetensors`` (read with safetensors), or ``.pth`` / ``.pt`` / anything else torch can read
    with ``torch.load(weights_only=True)`` (a checkpoint is data, never code);
  * ``.npz``: Google's ViT weights (``R50+ViT-B_16.npz``, ``ViT-B_16.npz``), for the backbones
    that take them (``Backbone.load_npz``: TransUNet's encoders);
  * a plain state dict, or one wrapped as ``{"model": ...}`` or ``{"state_dict": ...}``;
    a ``module.`` prefix left by DistributedDataParallel is removed.

Key layouts:
  * ours: the keys of ``backbone.state_dict()`` (``body.*`` plus added layers such as ``fpn.*``);
  * the library's: the keys of the wrapped network, e.g. what
    ``timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()`` or a torchvision
    ResNet produces. Classifier keys (``head.*``, ``fc.*``) are dropped; timm's checkpoint
    filter resamples position embeddings and relative-position tables to the model's sizes.

Keys the file lacks or the model does not know are logged as one warning that names them; a
file that matches no key at all, or whose tensors have the wrong shapes, is a UserInputError.
Nothing is ever downloaded.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from densevit.backbones.base import Backbone
from densevit.errors import UserInputError

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("model", "state_dict")
_MAX_LISTED = 20


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read the tensors of a local weight file (see the module docstring for formats)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(
            f"pretrained weights {path}: file not found (expected a local .pth, .pt or .safetensors file)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            content = load_file(str(path), device="cpu")
        else:
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the file is not a weight file we can use
        raise UserInputError(f"pretrained weights {path}: cannot read it as a state dict ({err})") from err
    for key in _WRAPPER_KEYS:
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    if not isinstance(content, dict):
        raise UserInputError(
            f"pretrained weights {path}: expected a state dict (a mapping of names to tensors), "
            f"got {type(content).__name__}"
        )
    state = {k: v for k, v in content.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not state:
        raise UserInputError(f"pretrained weights {path}: holds no tensors (top-level keys: {_listed(content)})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_pretrained(backbone: Backbone, path: str | Path) -> None:
    """Load the weights in ``path`` into ``backbone``, in our key layout or the library's."""
    if Path(path).suffix == ".npz":
        if not Path(path).is_file():
            raise UserInputError(f"pretrained weights {path}: file not found (expected a local Google ViT .npz file)")
        backbone.load_npz(Path(path))
        return
    state = read_state_dict(path)
    own = backbone.state_dict()
    if backbone.in_library_layout(state):
        try:
            state = backbone.convert_library_state_dict(state)
        except (KeyError, RuntimeError, ValueError, AssertionError) as err:
            raise UserInputError(
                f"pretrained weights {path}: not a {type(backbone).__name__} checkpoint ({type(err).__name__}: {err})"
            ) from err
    matched = [k for k in state if k in own]
    if not matched:
        raise UserInputError(
            f"pretrained weights {path}: none of its {len(state)} keys belong to {type(backbone).__name__} "
            f"(file has {_listed(state)}; expected e.g. {_listed(own)})"
        )
    wrong_shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
        for k in matched
        if state[k].shape != own[k].shape
    ]
    if wrong_shapes:
        raise UserInputError(
            f"pretrained weights {path}: {len(wrong_shapes)} tensors have the wrong shape for "
            f"{type(backbone).__name__} ({'; '.join(wrong_shapes[:5])})"
        )
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        logger.warning(
            "pretrained weights %s: loaded %d tensors; %d missing from the file (left as initialised): %s; "
            "%d in the file but not in the model (ignored): %s",
            path,
            len(matched),
            len(result.missing_keys),
            _listed(result.missing_keys),
            len(result.unexpected_keys),
            _listed(result.unexpected_keys),
        )
    else:
        logger.info("pretrained weights %s: loaded all %d tensors", path, len(matched))


def _listed(keys) -> str:
    keys = list(keys)
    shown = ", ".join(str(k) for k in keys[:_MAX_LISTED])
    more = f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"[{shown}{more}]" if keys else "none"
