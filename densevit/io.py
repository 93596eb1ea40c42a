"""Atomic file writes, strict JSON and YAML with YAML 1.2 numbers: an output file is either
complete or absent.

Every result, checkpoint, picture and log rewrite goes through :func:`atomic_path`: the data
is written to a temporary file in the target's folder, flushed to disk, then renamed over the
target, so a crash or a full disk never leaves a half-written file behind.
"""
from __future__ import annotations

import functools
import json
import math
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from densevit.errors import UserInputError, one_line


def public_file_mode() -> int:
    """The mode a plain ``open`` would give (``mkstemp`` makes files private to their owner)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def writable_folder(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` if needed and make sure files can be written in it.

    Called before any work, so that a folder that cannot be created or written stops the
    command at once with one line (``UserInputError`` naming ``what`` and the folder)
    rather than after the computation, or halfway through writing its results.
    """
    path = Path(path)
    blocking = next((p for p in (path, *path.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UserInputError(f"{path}: cannot write the {what}: {blocking} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".densevit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(f"{path}: cannot write the {what} ({err.strerror or err})") from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); on success it replaces ``path``.

    The temporary name ends with all of ``path``'s suffixes (``.nii.gz``), so writers that
    choose the format by extension (nibabel, Pillow, matplotlib) write the right one.

    Example::

        with atomic_path("out/picture.png") as tmp:
            image.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, public_file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def plain(value: Any) -> Any:
    """Plain Python containers and numbers: tensors and numpy values via ``tolist``, tuples as lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    return value


def json_safe(value: Any) -> Any:
    """:func:`plain`, with string keys and NaN/Inf as None (JSON has neither)."""
    value = plain(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (see :func:`json_safe`)."""
    return json.dumps(json_safe(value), indent=indent, allow_nan=False)


def write_json_atomic(value: Any, path: str | Path, indent: int | None = 2) -> None:
    """Write ``value`` as strict JSON to ``path`` atomically."""
    write_text_atomic(path, dumps_json(value, indent) + "\n")


# YAML 1.2 floats: PyYAML follows YAML 1.1, where a float needs a dot, so ``lr: 1e-4`` (as configs
# of every other detection library write it) would be read as the string "1e-4".
_YAML12_FLOAT = re.compile(r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+
                               |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""", re.X)


@functools.cache
def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """PyYAML's safe loader, reading ``1e-4`` and ``2E5`` as floats too."""

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    return Loader


def load_yaml(text: str) -> Any:
    """``text`` read as PyYAML's ``safe_load`` reads it, except that exponent numbers without a dot
    (``1e-4``) are floats, as in YAML 1.2; PyYAML's errors (``yaml.YAMLError``) pass through."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def yaml_problem(err: Any) -> str:
    """PyYAML's error on one line: what is wrong and where (``line 3, column 7``)."""
    problem = getattr(err, "problem", None)
    mark = getattr(err, "problem_mark", None)
    if not problem:
        return one_line(err)
    context = getattr(err, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")
