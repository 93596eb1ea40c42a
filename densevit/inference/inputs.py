"""Which files a prediction run reads: files as given, folders replaced by the files inside them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from densevit.errors import UserInputError


def expand_inputs(inputs: Sequence[str | Path], suffixes: Sequence[str], what: str = "images") -> list[Path]:
    """Every input file, with each folder replaced by its files ending in ``suffixes`` (sorted).

    A path that does not exist, or inputs that hold no such file, are a ``UserInputError``.
    """
    files: list[Path] = []
    for path in map(Path, inputs):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(tuple(suffixes))))
        elif path.is_file():
            files.append(path)
        else:
            raise UserInputError(f"{path}: no such file or folder")
    if not files:
        raise UserInputError(f"no {what} ({', '.join(suffixes)}) found in {', '.join(str(p) for p in inputs)}")
    return files
