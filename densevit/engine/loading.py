"""Input errors out of DataLoader workers, whole.

A ``UserInputError`` raised while a worker process loads a sample would reach the main process
re-wrapped by torch ("Caught UserInputError in DataLoader worker process 0" and the worker's
traceback). :class:`ReportingDataset` catches it in the worker and hands the exception over as
an ordinary sample (:class:`LoadFailure`); :class:`ReportingCollate` passes it on as the batch,
and :func:`raise_failures` raises it, unchanged, where the batches are consumed. Without workers
the same path raises at the same place, so one message serves both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from densevit.errors import UserInputError


@dataclass
class LoadFailure:
    """A sample (or batch) that could not be loaded, and why."""

    error: UserInputError


class ReportingDataset(Dataset):
    """``dataset`` whose ``UserInputError`` comes back as a :class:`LoadFailure` item."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except UserInputError as err:
            return LoadFailure(err)


class ReportingCollate:
    """``collate`` that returns the batch's first :class:`LoadFailure` instead of collating it."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[Any]) -> Any:
        failure = next((s for s in samples if isinstance(s, LoadFailure)), None)
        return failure if failure is not None else self.collate(samples)


def raise_failures(batches: Iterable[Any]) -> Iterator[Any]:
    """The batches of a loader built on :class:`ReportingDataset`; a failure is raised as its error."""
    for batch in batches:
        if isinstance(batch, LoadFailure):
            raise batch.error
        yield batch


def input_loader(dataset: Dataset, sampler: Any, batch_size: int, drop_last: bool, num_workers: int,
                 collate: Callable[[list[Any]], Any], pin_memory: bool = False) -> DataLoader:
    """The engine's DataLoader: input errors reported (iterate it through :func:`raise_failures`).

    It owns its generator: creating an iterator draws worker seeds from it rather than from
    the global RNG, whose state must only move with training itself.
    """
    return DataLoader(
        ReportingDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=ReportingCollate(collate),
        pin_memory=pin_memory,
        generator=torch.Generator(),
    )
