"""Surface voxels of label volumes and the distances between two surfaces, without distance transforms.

A voxel of label ``c`` is a surface voxel of ``c`` when one cross-shaped (connectivity 1)
binary erosion of ``labels == c``, with zeros outside the volume, removes it: when one of its
2·ndim face neighbours has another label or lies outside the volume. This is the surface MONAI
and medpy use (``mask ^ binary_erosion(mask)``); :func:`label_surfaces` finds the surfaces of
every label in a few vectorised passes over the volume.

The distance from a surface voxel to the other surface is found by a nearest-neighbour search
among the other surface's voxels only (a KD-tree, or chunked ``torch.cdist`` on a torch device),
never by a distance transform of the volume, so scattered voxels far apart cost nothing extra.
The distance to the neighbour found is then computed as ``scipy.ndimage.distance_transform_edt``
computes it (integer offsets times the spacing in float64, squared, summed in axis order, square
root), so the numbers are the distance transform's bit for bit whenever those sums are exact:
always without a spacing, and with spacings such as 0.5, 0.78125, 2.5 or 3 mm. With others
(0.7 mm) two voxels of the other surface can be exactly equally near yet have sums that round
differently; the distance transform's pick between them follows its sweep order, so there the
distance can differ by one ulp (about 1e-16 relative).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Pairwise distances per chunk on a torch device (float64 elements: 256 MiB).
TORCH_CHUNK_ELEMENTS = 2**25


def memory_order(*arrays: np.ndarray) -> str:
    """``"F"`` when every array is Fortran-contiguous and one is not also C-contiguous (nibabel
    reads NIfTI voxels in Fortran order), else ``"C"``: the order in which to flatten them alike
    without copying."""
    fortran = all(a.flags.f_contiguous for a in arrays) and not all(a.flags.c_contiguous for a in arrays)
    return "F" if fortran else "C"


def common_layout(*arrays: np.ndarray) -> tuple[str, list[np.ndarray]]:
    """The order of :func:`memory_order` and the arrays contiguous in it (copied only if not already)."""
    order = memory_order(*arrays)
    return order, [np.asarray(a, order=order) for a in arrays]


def label_surfaces(labels: np.ndarray, num_labels: int) -> list[np.ndarray]:
    """The surface voxels of each foreground label of a 2D or 3D label volume.

    A few vectorised passes over the whole volume (comparisons of neighbouring voxels), whatever
    the labels' bounding boxes: cheaper than visiting the foreground voxels one by one.

    Args:
        labels: integer labels, shape ``[D, H, W]`` or ``[H, W]``, values in ``[0, num_labels)``;
            best C- or Fortran-contiguous (else it is copied).
        num_labels: how many labels (background 0 included).

    Returns:
        ``num_labels`` int64 arrays of shape ``[n_c, ndim]``: the indices of the surface voxels
        of label ``c``, in the array's :func:`memory_order` (C order unless it is Fortran-ordered).
        Entry 0 (background) is always empty.
    """
    order = memory_order(labels)
    edge = np.zeros(labels.shape, dtype=bool, order=order)
    for axis in range(labels.ndim):
        low = (slice(None),) * axis + (slice(None, -1),)
        high = (slice(None),) * axis + (slice(1, None),)
        differs = labels[low] != labels[high]
        edge[low] |= differs
        edge[high] |= differs
        edge[(slice(None),) * axis + (0,)] = True  # erosion sees background outside the volume
        edge[(slice(None),) * axis + (-1,)] = True
    index = np.flatnonzero(edge.ravel(order))
    values = labels.ravel(order)[index]
    index, values = index[values != 0], values[values != 0]
    grouped = np.argsort(values, kind="stable")  # by label, memory order within each
    bounds = np.searchsorted(values[grouped], np.arange(num_labels + 1))
    points = np.stack(np.unravel_index(index[grouped], labels.shape, order=order), axis=1).astype(np.int64)
    empty = np.zeros((0, labels.ndim), dtype=np.int64)
    return [empty] + [points[bounds[c]:bounds[c + 1]] for c in range(1, num_labels)]


def mask_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a boolean mask: ``[n, ndim]`` indices in its memory order (:func:`label_surfaces`)."""
    return label_surfaces(mask.astype(np.uint8, copy=False), 2)[1]


def edt_distances(points: np.ndarray, partners: np.ndarray, spacing: Sequence[float] | None) -> np.ndarray:
    """Distances between paired voxels, computed as ``distance_transform_edt`` computes them.

    Args:
        points, partners: int ``[n, ndim]`` voxel indices, row ``i`` of one paired with row ``i``
            of the other.
        spacing: voxel size per axis, or None (unit, no multiplication).

    Returns:
        float64 ``[n]``: ``sqrt(sum over axes in order of ((p - q) * spacing) ** 2)``.
    """
    offsets = (partners - points).astype(np.float64)
    total = np.zeros(len(points), dtype=np.float64)
    for axis in range(points.shape[1]):
        term = offsets[:, axis] * spacing[axis] if spacing is not None else offsets[:, axis]
        total += term * term
    return np.sqrt(total)


def nearest(points: np.ndarray, targets: np.ndarray, spacing: Sequence[float] | None,
            device: str | None = None) -> np.ndarray:
    """For each point, the index of its nearest target (physical distance).

    Args:
        points: int ``[n, ndim]`` voxel indices; targets: int ``[m, ndim]``, ``m >= 1``.
        spacing: voxel size per axis, or None (unit).
        device: None: a KD-tree (scipy, all CPU cores); a torch device (``"cuda"``, ``"cpu"``):
            chunked ``torch.cdist`` in float64 there.

    Returns:
        int64 ``[n]`` indices into ``targets``.
    """
    scale = np.ones(points.shape[1]) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if device is None:
        from scipy.spatial import (
            cKDTree,  # here: importing scipy.spatial takes about 0.4 s
        )

        tree = cKDTree(targets * scale)
        return tree.query(points * scale, k=1, workers=-1)[1].astype(np.int64, copy=False)
    return _nearest_torch(points * scale, targets * scale, device)


def _nearest_torch(points: np.ndarray, targets: np.ndarray, device: str) -> np.ndarray:
    """:func:`nearest` on a torch device: float64 ``[n, ndim]`` and ``[m, ndim]`` physical coordinates.

    ``torch.cdist`` through matrix products (``|p|² + |t|² - 2 p·t``), in float64 and about the
    targets' centre: its rounding (~1e-16 of the squared extent) can only swap voxels whose
    distances differ by less than that, i.e. exact ties, as the KD-tree's can.
    """
    import torch

    where = torch.device(device)
    centre = targets.mean(axis=0)
    to = torch.as_tensor(targets - centre, dtype=torch.float64, device=where)
    found = torch.empty(len(points), dtype=torch.int64, device=where)
    rows = max(1, TORCH_CHUNK_ELEMENTS // len(targets))
    for start in range(0, len(points), rows):
        chunk = torch.as_tensor(points[start:start + rows] - centre, dtype=torch.float64, device=where)
        pairwise = torch.cdist(chunk, to, compute_mode="use_mm_for_euclid_dist")
        found[start:start + rows] = pairwise.argmin(dim=1)
    return found.cpu().numpy()


def surface_distances(pred_surface: np.ndarray, gt_surface: np.ndarray, spacing: Sequence[float] | None = None,
                      device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the other mask's surface, and back.

    Args:
        pred_surface, gt_surface: int ``[n, ndim]`` and ``[m, ndim]`` surface voxel indices
            (:func:`label_surfaces`), both non-empty.
        spacing: voxel size per axis (distances in those units); None = 1 per axis.
        device: where to search for nearest voxels (:func:`nearest`).

    Returns:
        ``(pred_to_gt, gt_to_pred)``: float64 ``[n]`` and ``[m]``, in the order of the voxels given.
    """
    to_gt = edt_distances(pred_surface, gt_surface[nearest(pred_surface, gt_surface, spacing, device)], spacing)
    to_pred = edt_distances(gt_surface, pred_surface[nearest(gt_surface, pred_surface, spacing, device)], spacing)
    return to_gt, to_pred
