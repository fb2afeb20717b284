"""Lazy random patch sampling from aligned OME-Zarr volumes for training.

Patches are read straight from the Zarr arrays, so only the chunks a patch touches are read;
reads run ahead of the trainer in a thread pool. All randomness comes from one
``numpy.random.Generator`` whose state is saved in checkpoints, so a resumed run draws the same
patches as an uninterrupted one.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from scipy import ndimage

from scnet_dask.errors import InputError

__all__ = [
    "Region",
    "PatchSampler",
    "split_regions",
    "foreground_mask",
    "mask_centres",
    "patch_shape_of",
    "apply_augmentation",
    "draw_augmentation",
    "draw_origin",
    "PrefetchingSampler",
]


@dataclass(frozen=True)
class Region:
    """A box of the volume, [start, stop) per axis, in level-0 voxels (z, y, x)."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def contains(self, origin: tuple[int, int, int], size: int | tuple[int, int, int]) -> bool:
        """Whether the patch ``origin + [0, size)`` (a cube's edge or a shape) lies inside."""
        shape = patch_shape_of(size)
        return all(
            a <= o and o + n <= b
            for o, n, a, b in zip(origin, shape, self.start, self.stop, strict=True)
        )


def patch_shape_of(patch: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """A patch size as a (z, y, x) tuple (an int is a cube)."""
    if isinstance(patch, (int, np.integer)):
        return (int(patch),) * 3
    pz, py, px = (int(v) for v in patch)
    return (pz, py, px)


def split_regions(
    shape: tuple[int, int, int], patch_size: int | tuple[int, int, int], val_fraction: float = 0.1
) -> tuple[Region, Region | None]:
    """Split the volume into disjoint train and validation boxes along its longest axis.

    The validation box is the last ``max(patch edge, val_fraction * length)`` voxels of the
    longest axis; ``val_fraction=0`` gives no validation box. ``patch_size`` is a cube's edge
    or a (z, y, x) patch shape.

    Raises
    ------
    InputError
        If a patch does not fit, or the axis is too short for two disjoint boxes.

    """
    patch = patch_shape_of(patch_size)
    text = f"{patch[0]}³" if len(set(patch)) == 1 else "x".join(str(p) for p in patch)
    if any(s < p for s, p in zip(shape, patch, strict=True)):
        raise InputError(f"patch size {text} is larger than the volume {tuple(shape)}")
    train = Region((0, 0, 0), tuple(shape))  # type: ignore[arg-type]
    if val_fraction <= 0:
        return train, None
    axis = int(np.argmax(shape))
    n_val = max(patch[axis], int(round(val_fraction * shape[axis])))
    if shape[axis] - n_val < patch[axis]:
        raise InputError(
            f"volume {tuple(shape)} is too small for disjoint train and validation patches of "
            f"{text}; use a smaller --patch-size or --val-fraction 0"
        )
    stop = list(shape)
    stop[axis] = shape[axis] - n_val
    start = [0, 0, 0]
    start[axis] = shape[axis] - n_val
    return Region((0, 0, 0), tuple(stop)), Region(tuple(start), tuple(shape))  # type: ignore[arg-type]


def foreground_mask(level: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Foreground of a (small) pyramid level: local std above ``threshold`` x its median.

    Vacuum and empty resin have a low local standard deviation; sample and ice a high one.
    """
    x = level.astype(np.float64)
    m = ndimage.uniform_filter(x, 3)
    v = np.maximum(ndimage.uniform_filter(x * x, 3) - m * m, 0)
    s = np.sqrt(v)
    return s > threshold * np.median(s)


def mask_centres(
    mask: np.ndarray, factor: int, region: Region, patch: tuple[int, int, int]
) -> np.ndarray:
    """Level-0 (z, y, x) centres of a coarse foreground ``mask`` where a ``patch`` fits.

    Parameters
    ----------
    mask
        Boolean mask of a pyramid level ``factor`` times coarser than level 0.
    region
        The box every patch must lie in.

    Returns
    -------
    numpy.ndarray
        (n, 3) int centres; a patch's origin is its centre minus ``patch // 2``.

    """
    size = np.array(patch)
    half = size // 2
    pts = np.argwhere(mask) * factor + factor // 2
    lo = np.array(region.start) + half
    hi = np.array(region.stop) - (size - half)
    ok = np.all((pts >= lo) & (pts <= hi), axis=1)
    return pts[ok]


class PrefetchingSampler:
    """Reads of drawn patches running ahead of the trainer in a thread pool.

    Subclasses set ``rng``, ``prefetch``, ``_pool``, ``_queue`` and ``wait_seconds`` and define
    ``draw() -> (key, aug)``, ``read(key, aug, names)``, ``choose()`` and ``batch_names()``;
    draws happen in the calling thread, in order, so the generator's state is exact.
    """

    rng: np.random.Generator
    prefetch: int
    wait_seconds: float
    _pool: ThreadPoolExecutor
    _queue: list[Future[dict[str, np.ndarray]]]

    def draw(self) -> tuple[Any, tuple[int, ...]]:  # pragma: no cover - abstract
        """Draw one patch's key and augmentation code."""
        raise NotImplementedError

    def read(
        self, key: Any, aug: tuple[int, ...], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """Read one patch of every input."""
        raise NotImplementedError

    def choose(self) -> list[str] | None:
        """The inputs to read for the next patch (``None``: all)."""
        return None

    def batch_names(self) -> list[str]:  # pragma: no cover - abstract
        """Keys of the dicts that :meth:`next_batch` returns."""
        raise NotImplementedError

    def _fill(self, batch_size: int) -> None:
        while len(self._queue) < self.prefetch * batch_size:
            origin, aug = self.draw()
            self._queue.append(self._pool.submit(self.read, origin, aug, self.choose()))

    def next_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """(batch, 1, pz, py, px) arrays by name; keeps reads running ahead."""
        self._fill(batch_size)
        futures, self._queue = self._queue[:batch_size], self._queue[batch_size:]
        self._fill(batch_size)
        t0 = time.perf_counter()
        patches = [f.result() for f in futures]
        self.wait_seconds += time.perf_counter() - t0
        names = self.batch_names()
        return {name: np.stack([q[name] for q in patches])[:, None] for name in names}

    def reset_queue(self) -> None:
        """Drop prefetched patches (e.g. at an epoch end, so the RNG state is exact)."""
        for f in self._queue:
            f.cancel()
        self._queue = []

    def get_state(self) -> dict[str, Any]:
        """The generator state, to be saved; prefetched patches must be dropped first."""
        return dict(self.rng.bit_generator.state)

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a generator state from :meth:`get_state`."""
        self.reset_queue()
        self.rng.bit_generator.state = state

    def close(self) -> None:
        """Stop the reader threads."""
        self.reset_queue()
        self._pool.shutdown(wait=True)



class PatchSampler(PrefetchingSampler):
    """Random patches at the same places of any number of aligned, named Zarr arrays.

    Parameters
    ----------
    arrays
        Level-0 (z, y, x) Zarr arrays of the same shape, by name (e.g. ``noisy`` and
        ``prior``; ``even`` and ``odd``; ``input`` and ``target``).
    stats
        Each array's statistics by name (``mean`` and ``std`` normalise it).
    patch_size
        Edge of cubic patches, or the (z, y, x) patch shape, in voxels.
    region
        Box the patches must lie in.
    seed
        Seed of the generator that draws origins and augmentations.
    mask, mask_factor
        Optional foreground mask computed on a pyramid level ``mask_factor`` times coarser;
        patch centres are drawn only where it is true.
    augment
        Random flips and 90° rotations, identical for every array.
    planes
        Rotation planes: ``"all"`` ((y, x), (z, x), (z, y); cubic patches only) or ``"yx"``
        (rotations about z only: keeps z, the section axis of vEM and the missing wedge's
        orientation, where it is). Flips are along every axis in both.
    subset
        Read only this many of the arrays for each patch, drawn without replacement (the
        Fourier-sampling pool); the batch then names them ``draw0``, ``draw1``, ... in the
        order drawn. ``None``: every array, by its own name.

    Notes
    -----
    Names that share one array object and one normalisation are read once.

    """

    def __init__(
        self,
        arrays: dict[str, zarr.Array],
        stats: dict[str, dict[str, Any]],
        patch_size: int | tuple[int, int, int],
        region: Region,
        seed: int = 0,
        mask: np.ndarray | None = None,
        mask_factor: int = 1,
        augment: bool = True,
        prefetch: int = 4,
        workers: int = 2,
        subset: int | None = None,
        planes: str = "all",
    ):
        if not arrays:
            raise ValueError(f"the sampler needs at least one array, got {arrays}")
        shapes = {name: tuple(a.shape) for name, a in arrays.items()}
        if len(set(shapes.values())) > 1:
            raise InputError(f"volumes are not on one grid: {shapes}")
        missing = sorted(set(arrays) - set(stats))
        if missing:
            raise ValueError(f"no statistics for {missing}")
        if subset is not None and not 1 <= subset <= len(arrays):
            raise ValueError(f"subset must be between 1 and {len(arrays)} arrays, got {subset}")
        self.arrays = dict(arrays)
        self.subset = subset
        self.norm = {
            name: (float(stats[name]["mean"]), float(stats[name]["std"]) or 1.0) for name in arrays
        }
        self.shape = patch_shape_of(patch_size)
        if planes not in ("all", "yx"):
            raise ValueError(f"planes must be 'all' or 'yx', got {planes!r}")
        if planes == "all" and augment and len(set(self.shape)) > 1:
            raise ValueError(f"rotations in every plane need cubic patches, got {self.shape}")
        if self.shape[1] != self.shape[2]:
            raise ValueError(f"patches must be square in (y, x), got {self.shape}")
        self.planes = planes
        self.region = region
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.prefetch = prefetch
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._queue: list[Future[dict[str, np.ndarray]]] = []
        self.wait_seconds = 0.0
        self._centres: np.ndarray | None = None
        if mask is not None:
            self._centres = self._mask_centres(mask, mask_factor)

    def _mask_centres(self, mask: np.ndarray, factor: int) -> np.ndarray:
        pts = mask_centres(mask, factor, self.region, self.shape)
        if len(pts) == 0:
            raise InputError("the foreground mask is empty inside the training region")
        return pts

    # --- drawing (main thread, deterministic) -------------------------------------------
    def draw(self) -> tuple[tuple[int, int, int], tuple[int, ...]]:
        """Draw one patch origin (z, y, x) and its augmentation code."""
        origin = draw_origin(self.rng, self.region, self.shape, self._centres)
        return origin, draw_augmentation(self.rng, self.planes, self.augment)

    # --- reading (worker threads) ---------------------------------------------------------
    def choose(self) -> list[str] | None:
        """The arrays to read for the next patch (``subset`` of them, in drawn order)."""
        if self.subset is None:
            return None
        names = list(self.arrays)
        picks = self.rng.choice(len(names), size=self.subset, replace=False)
        return [names[int(i)] for i in picks]

    def batch_names(self) -> list[str]:
        """Keys of the dicts that :meth:`read` and :meth:`next_batch` return."""
        if self.subset is None:
            return list(self.arrays)
        return [f"draw{i}" for i in range(self.subset)]

    def read(
        self, origin: tuple[int, int, int], aug: tuple[int, ...], names: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Read, normalise and augment one (pz, py, px) float32 patch of every array.

        With ``names``, only those arrays, returned as ``draw0``, ``draw1``, ...
        """
        sl = tuple(slice(o, o + p) for o, p in zip(origin, self.shape, strict=True))
        out: dict[str, np.ndarray] = {}
        raw: dict[int, np.ndarray] = {}
        done: dict[tuple[int, float, float], np.ndarray] = {}
        chosen = list(self.arrays) if names is None else names
        keys = chosen if names is None else [f"draw{i}" for i in range(len(names))]
        for key, name in zip(keys, chosen, strict=True):
            arr = self.arrays[name]
            m, s = self.norm[name]
            tag = (id(arr), m, s)
            if tag not in done:
                if id(arr) not in raw:
                    raw[id(arr)] = np.asarray(arr[sl], dtype=np.float32)
                done[tag] = apply_augmentation((raw[id(arr)] - m) / s, aug)
            out[key] = done[tag]
        return out

    def fixed_patches(
        self, n: int, seed: int
    ) -> list[tuple[tuple[int, int, int], tuple[int, ...], list[str] | None]]:
        """``n`` reproducible (origin, no augmentation, arrays) draws, e.g. for validation."""
        saved = self.rng
        self.rng = np.random.default_rng(seed)
        try:
            return [(self.draw()[0], (0, 0, 0, 0, 0), self.choose()) for _ in range(n)]
        finally:
            self.rng = saved

def draw_origin(
    rng: np.random.Generator,
    region: Region,
    patch: tuple[int, int, int],
    centres: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """A random patch origin (z, y, x): uniform in ``region``, or a ``centres`` row - patch // 2."""
    if centres is not None:
        c = centres[rng.integers(len(centres))]
        z, y, x = (int(v) - p // 2 for v, p in zip(c, patch, strict=True))
    else:
        z, y, x = (
            int(rng.integers(a, b - p + 1))
            for a, b, p in zip(region.start, region.stop, patch, strict=True)
        )
    return z, y, x


def draw_augmentation(
    rng: np.random.Generator, planes: str, augment: bool
) -> tuple[int, int, int, int, int]:
    """A random augmentation code: flips along z, y, x, then a rotation plane and quarter turns.

    Five draws whatever ``planes`` and ``augment`` (so seeds stay comparable); ``"yx"`` keeps
    rotations about z only, ``augment=False`` gives the identity.
    """
    a, b, c = (int(v) for v in rng.integers(0, 2, 3))
    plane, turns = int(rng.integers(0, 3)), int(rng.integers(0, 4))
    if planes == "yx":
        plane = 0
    if not augment:
        return (0, 0, 0, 0, 0)
    return (a, b, c, plane, turns)


def apply_augmentation(x: np.ndarray, aug: tuple[int, ...]) -> np.ndarray:
    """Flip along z, y, x by ``aug[0:3]``, then rotate ``aug[4]`` x 90° in plane ``aug[3]``.

    Planes: 0 = (y, x), 1 = (z, x), 2 = (z, y). Cubic patches keep their shape.
    """
    for axis in range(3):
        if aug[axis]:
            x = np.flip(x, axis)
    planes = ((1, 2), (0, 2), (0, 1))
    if aug[4]:
        x = np.rot90(x, k=aug[4], axes=planes[aug[3]])
    return np.ascontiguousarray(x)
