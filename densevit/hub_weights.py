"""Pretrained weights by name: ``timm:<model>`` and ``hf-hub:<org>/<repo>[/<file>]`` -> a local file.

Wherever densevit takes a weight file (``model.pretrained``, a backbone's ``pretrained``,
``backbone_pretrained`` in ``model.kwargs``) it also takes one of these names:

* ``timm:<model>``, e.g. ``timm:vit_base_patch16_224.augreg_in21k``: timm's pretrained config
  for that name gives the Hugging Face hub repo (``hf_hub_id``) and file (``hf_hub_filename``);
  a name without a tag (``timm:resnet50``) means timm's default weights for the architecture;
* ``hf-hub:<org>/<repo>``: ``model.safetensors``, else ``pytorch_model.bin`` of that hub repo;
  ``hf-hub:<org>/<repo>/<file>`` names the file.

:func:`resolve_weights` turns a name into the file in the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``): a cached file is used as it is, without asking the hub; otherwise it is
downloaded through ``huggingface_hub``, unless offline (``HF_HUB_OFFLINE=1``, or no network),
which is a one-line error saying what to fetch and where to put it. Only a name the user wrote
is ever fetched; anything else is a local path and is returned as it is. The file is then read
by the one weights path (:func:`densevit.weights.read_weights`) like any local file.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from pathlib import Path

from densevit.errors import UserInputError

logger = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"
HF_HUB_PREFIX = "hf-hub:"
# What timm's hub repos (and most others) hold, in the order timm itself looks for them.
DEFAULT_FILES = ("model.safetensors", "pytorch_model.bin")
_FORMS = "timm:<model> or hf-hub:<org>/<repo>[/<file>]"


@dataclass(frozen=True)
class HubFile:
    """Where the weights a name stands for live on the hub: ``filenames`` are tried in order."""

    name: str
    repo_id: str
    filenames: tuple[str, ...]
    revision: str | None = None

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"


def is_hub_name(source: str | Path) -> bool:
    """Whether ``source`` is a weights name (``timm:...`` / ``hf-hub:...``) rather than a file path."""
    return str(source).startswith((TIMM_PREFIX, HF_HUB_PREFIX))


def parse_hub_name(name: str) -> HubFile:
    """The hub repo and files of the weights name ``name``, checked for form (no network).

    A timm name must be one timm knows (close matches are suggested); a malformed name is a
    one-line ``UserInputError``.
    """
    if name.startswith(TIMM_PREFIX):
        return _timm_file(name, name.removeprefix(TIMM_PREFIX))
    if name.startswith(HF_HUB_PREFIX):
        return _hf_hub_file(name, name.removeprefix(HF_HUB_PREFIX))
    raise UserInputError(f"weights name {name!r}: expected {_FORMS}")


def resolve_weights(source: str | Path) -> Path:
    """The local file behind ``source``: a path as it is, a weights name through the hub's cache."""
    if not is_hub_name(source):
        return Path(source)
    hub = parse_hub_name(str(source))
    path = _download(hub)
    logger.info("%s: weights from %s", hub.name, path)
    return path


def _timm_file(name: str, model: str) -> HubFile:
    import timm
    from timm.models import get_pretrained_cfg

    if not model or "/" in model or any(c.isspace() for c in model):
        raise UserInputError(f"weights name {name!r}: expected timm:<model>, a timm pretrained name such as "
                             "timm:resnet50.a1_in1k (python -c 'import timm; print(timm.list_pretrained())')")
    try:
        cfg = get_pretrained_cfg(model)
    except RuntimeError:  # a known architecture with an unknown tag
        cfg = None
    if cfg is None:
        close = difflib.get_close_matches(model, timm.list_pretrained(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise UserInputError(f"{name}: timm has no pretrained weights of that name{hint}")
    if not cfg.hf_hub_id:
        where = f" ({cfg.url})" if cfg.url else ""
        raise UserInputError(f"{name}: timm gives no Hugging Face hub repo for these weights{where}: "
                             "download the file and give its path instead")
    # timm writes a pinned revision as "<org>/<repo>@<revision>"
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else DEFAULT_FILES
    return HubFile(name, repo_id, files, revision or None)


def _hf_hub_file(name: str, rest: str) -> HubFile:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    org, _, tail = rest.partition("/")
    repo, _, filename = tail.partition("/")
    repo_id = f"{org}/{repo}"
    try:
        if not org or not repo:
            raise HFValidationError("an organisation and a repo are both required")
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserInputError(f"weights name {name!r}: expected hf-hub:<org>/<repo>[/<file>] "
                             f"({str(err).strip().splitlines()[0]})") from None
    return HubFile(name, repo_id, (filename,) if filename else DEFAULT_FILES)


def _download(hub: HubFile) -> Path:
    """The first of ``hub.filenames`` that the cache holds, else the first the hub gives (fetched
    into the cache). A cached file is used without asking the hub: published weights do not change."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for filename in hub.filenames:
        cached = try_to_load_from_cache(hub.repo_id, filename, revision=hub.revision)
        if isinstance(cached, str):  # else None, or a marker that the hub said the file does not exist
            return Path(cached)
    files = " or ".join(hub.filenames)
    for filename in hub.filenames:
        try:
            return Path(hf_hub_download(hub.repo_id, filename, revision=hub.revision))
        except LocalEntryNotFoundError:  # offline or no network (caught before EntryNotFoundError, its base)
            why = "HF_HUB_OFFLINE=1" if constants.HF_HUB_OFFLINE else "the hub cannot be reached"
            raise UserInputError(
                f"{hub.name}: weights not in the Hugging Face cache {constants.HF_HUB_CACHE} and {why}: fetch "
                f"{files} of hub repo {hub.repo_id} ({hub.url}) into that cache with network access (`hf download "
                f"{hub.repo_id} {hub.filenames[0]} --cache-dir {constants.HF_HUB_CACHE}`), or download the file "
                "and give its path instead"
            ) from None
        except EntryNotFoundError:  # the repo has no such file: try the next one
            continue
        except RepositoryNotFoundError:
            raise UserInputError(f"{hub.name}: no hub repo {hub.repo_id} ({hub.url}), or it is private or gated "
                                 "(log in with `hf auth login`)") from None
        except RevisionNotFoundError:
            raise UserInputError(f"{hub.name}: hub repo {hub.repo_id} has no revision {hub.revision}") from None
        except (HfHubHTTPError, OSError) as err:
            problem = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserInputError(f"{hub.name}: cannot fetch from hub repo {hub.repo_id}: {problem}") from None
    raise UserInputError(f"{hub.name}: hub repo {hub.repo_id} has no {files}; name the file as "
                         f"hf-hub:{hub.repo_id}/<file>")
