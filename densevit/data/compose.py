"""The albumentations pipeline every preset builds on, and the dataset side of its seeding.

Two faults of a plain ``A.Compose`` that training would inherit:

- ``A.Compose(seed=s)`` (and ``set_random_seed``) hands the same seed to every transform, so
  transforms with the same ``p`` apply together on every call (both flips, all photometric
  steps). :class:`Compose` derives one seed per transform instead.
- Every transform draws from a generator of its own, made once in the main process; loader
  workers fork with a copy in the same state, so every worker, and every epoch (workers are
  made anew from the unchanged main-process copy), would repeat the same augmentations.
  Datasets that mix in :class:`Augmented` seed every sample from the epoch's seed and the
  sample's index instead (the training loop calls ``reseed`` before each epoch).

:class:`UntilEpoch` groups in a :class:`Compose` follow ``set_epoch`` (strong augmentation that
stops for the last epochs).
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import albumentations as A
import numpy as np


class StopsAtEpoch:
    """``active`` while the epoch given to :meth:`set_epoch` (0 at first) is before ``stop_epoch``
    (None: always): the policy of augmentation that stops for the last epochs."""

    stop_epoch: int | None = None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def active(self) -> bool:
        return self.stop_epoch is None or self.epoch < self.stop_epoch


class UntilEpoch(StopsAtEpoch, A.Sequential):
    """Runs ``transforms`` in order while :attr:`active`; from then on hands the data back unchanged."""

    def __init__(self, transforms: Sequence[A.BasicTransform | A.BaseCompose], stop_epoch: int | None) -> None:
        super().__init__(list(transforms), p=1.0)
        self.stop_epoch = stop_epoch

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        # skipped transforms draw no random numbers; every transform has its own generator, so
        # the ones after this group draw the same whether it runs or not
        return super().__call__(*args, force_apply=force_apply, **data) if self.active else data


def _with_descendants(transforms: Sequence[A.BasicTransform | A.BaseCompose]) -> list[A.BasicTransform | A.BaseCompose]:
    """``transforms`` and everything nested in them, each parent before its children."""
    found = []
    for transform in transforms:
        found.append(transform)
        if isinstance(transform, A.BaseCompose):
            found.extend(_with_descendants(transform.transforms))
    return found


class Compose(A.Compose):
    """An ``A.Compose`` whose transforms draw from streams of their own under a seed, and whose
    :class:`UntilEpoch` groups (at the top level) follow :meth:`set_epoch`."""

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        if seed is None:
            return  # every transform already has an unseeded generator of its own
        # parents first, since a parent passes its seed on to its children
        seeds = random.Random(seed)
        for transform in _with_descendants(self.transforms):
            transform.set_random_seed(seeds.getrandbits(32))

    def set_epoch(self, epoch: int) -> None:
        for transform in self.transforms:
            if isinstance(transform, UntilEpoch):
                transform.set_epoch(epoch)


class Augmented:
    """Mixin for datasets whose ``transform`` may hold random generators (a :class:`Compose`, or
    a wrapper with ``set_random_seed`` / ``set_epoch``).

    After ``reseed(seed)`` (the training loop calls it before every epoch with a seed of that
    epoch) every sample is augmented with a seed of its own, from ``seed`` and its index:
    what sample ``i`` looks like in an epoch depends on nothing else, not on the loader
    workers, the order of reads or where a resumed run starts. ``__getitem__`` calls
    :meth:`seed_sample` first. Before any ``reseed``, the transform's own generators run on.
    """

    transform: Any
    augment_seed: int | None = None

    def reseed(self, seed: int) -> None:
        """Augment every sample from now on with a seed derived from ``seed`` and its index."""
        self.augment_seed = seed

    def seed_sample(self, index: int) -> None:
        """Seed the transform for sample ``index`` (no-op before :meth:`reseed`)."""
        set_random_seed = getattr(self.transform, "set_random_seed", None)
        if self.augment_seed is not None and set_random_seed is not None:
            set_random_seed(int(np.random.SeedSequence([self.augment_seed, index]).generate_state(1)[0]))

    def set_epoch(self, epoch: int) -> None:
        """Tell epoch-dependent augmentation the epoch (before the epoch's loader iterator is made)."""
        set_epoch = getattr(self.transform, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
