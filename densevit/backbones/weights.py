"""Loading backbone weights from a file, ours or in the library's (timm / torchvision) layout.

Files are read by :func:`densevit.weights.read_weights` (``.pth``, ``.pt``, ``.safetensors``,
always as data; Google's ViT ``.npz`` for the backbones that take it), and the state dict is
found inside the usual wrappers by :func:`densevit.weights.state_dict_of`.

Key layouts:
  * ours: the keys of ``backbone.state_dict()`` (``body.*`` plus added layers such as ``fpn.*``);
  * the library's: the keys of the wrapped network, e.g. what
    ``timm.create_model("vit_base_patch16_224", pretrained=False).state_dict()`` or a torchvision
    ResNet produces. Classifier keys (``head.*``, ``fc.*``) are dropped; timm's checkpoint
    filter resamples position embeddings and relative-position tables to the model's sizes;
  * Google's ``.npz`` arrays, for TransUNet's encoders (``r50_vit_b16``, ``vit_b16_transunet``).

Keys the file lacks or the model does not know are logged as one warning that names them; a
file that matches no key at all, or whose tensors have the wrong shapes, is a UserInputError.
A weights name (``timm:<model>``, ``hf-hub:<org>/<repo>[/<file>]``) stands for its file in the
Hugging Face cache (:mod:`densevit.hub_weights`); nothing else is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

from densevit.backbones.base import Backbone
from densevit.errors import UserInputError
from densevit.weights import (
    LoadReport,
    _listed,
    load_state,
    read_weights,
    resolve_weights,
    state_dict_of,
)


def load_pretrained(backbone: Backbone, path: str | Path) -> LoadReport:
    """Load the weights in ``path`` (a file or a weights name) into ``backbone``, in our key
    layout or the library's; the report lists the keys the file lacked or the backbone lacks."""
    path = resolve_weights(path)
    if path.suffix == ".npz" and not backbone.accepts_google_npz:
        raise UserInputError(
            f"{path}: a Google ViT .npz loads only into r50_vit_b16 or vit_b16_transunet, "
            f"not {type(backbone).__name__} (expected a .pth, .pt or .safetensors file)"
        )
    content = read_weights(path, "pretrained weights")
    state = content if path.suffix == ".npz" else state_dict_of(content, path)
    own = backbone.state_dict()
    if backbone.in_library_layout(state):
        try:
            state = backbone.convert_library_state_dict(state)
        except (KeyError, RuntimeError, ValueError, AssertionError) as err:
            raise UserInputError(
                f"{path}: not a {type(backbone).__name__} checkpoint ({type(err).__name__}: {err})"
            ) from None
    if not any(k in own for k in state):
        raise UserInputError(
            f"{path}: none of its {len(state)} keys belong to {type(backbone).__name__} "
            f"(file has {_listed(state)}; expected e.g. {_listed(own)})"
        )
    return load_state(backbone, state, path, strict=False)
