"""Random training patches over many tomograms, with a bounded pool of open readers.

Each patch first picks a tomogram with probability proportional to its weight (its training
volume, or its foreground volume with ``--foreground-mask``), then a place in it, exactly as
:class:`scnet_dask.engine.sampling.PatchSampler` does in one volume. Every tomogram is
normalised by its own statistics. At most ``max_open`` tomograms' readers (and foreground
centres) are held at once — a least-recently-used pool, as Warp's ``--max_loaded_maps`` — so
memory does not grow with the number of tomograms. All randomness comes from one generator
whose state a checkpoint saves, so ``--resume`` draws the same patches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scnet_dask.engine.sampling import (
    PrefetchingSampler,
    Region,
    apply_augmentation,
    draw_augmentation,
    draw_origin,
    mask_centres,
    patch_shape_of,
)
from scnet_dask.errors import InputError

__all__ = ["Member", "OpenTomogram", "ReaderPool", "MultiSampler", "fixed_draws"]


@dataclass(frozen=True)
class Member:
    """One tomogram the sampler draws from: plain data, cheap to hold for thousands.

    Attributes
    ----------
    name
        The tomogram's name.
    shape
        (z, y, x) in voxels.
    region
        The box patches are drawn in (the training region, or the whole of a validation
        tomogram).
    norm
        ``(mean, std)`` of each input, by input name.
    weight
        Relative probability of drawing a patch from this tomogram (> 0).

    """

    name: str
    shape: tuple[int, int, int]
    region: Region
    norm: dict[str, tuple[float, float]]
    weight: float


@dataclass
class OpenTomogram:
    """What the pool holds for one open tomogram.

    ``readers`` map input names to sliceable (z, y, x) arrays; ``mask`` is an optional coarse
    foreground mask and ``mask_factor`` its coarsening.
    """

    readers: dict[str, Any]
    mask: np.ndarray | None = None
    mask_factor: int = 1
    centres: np.ndarray | None = field(default=None, repr=False)


class ReaderPool:
    """At most ``max_open`` tomograms open at once; the least recently used is closed first.

    ``opener(i)`` opens tomogram ``i`` (an :class:`OpenTomogram`). ``peak`` is the most held
    at once, ``opens`` how many times one was opened. Thread-safe: reader threads and the
    drawing thread share it; a reader already handed out stays valid after eviction.
    """

    def __init__(self, opener: Callable[[int], OpenTomogram], max_open: int):
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.opener = opener
        self.max_open = max_open
        self._held: OrderedDict[int, OpenTomogram] = OrderedDict()
        self._lock = threading.Lock()
        self.peak = 0
        self.opens = 0

    def get(self, i: int) -> OpenTomogram:
        """Tomogram ``i``, opened if it is not held (closing the least recently used)."""
        with self._lock:
            if i in self._held:
                self._held.move_to_end(i)
                return self._held[i]
            while len(self._held) >= self.max_open:
                self._held.popitem(last=False)
            entry = self.opener(i)
            self._held[i] = entry
            self.opens += 1
            self.peak = max(self.peak, len(self._held))
            return entry

    @property
    def held(self) -> int:
        """Tomograms open now."""
        return len(self._held)

    def clear(self) -> None:
        """Close every tomogram."""
        with self._lock:
            self._held.clear()


class MultiSampler(PrefetchingSampler):
    """Random patches of the named inputs of many tomograms.

    Parameters
    ----------
    members
        The tomograms, with their regions, normalisations and weights.
    pool
        Their readers (:class:`ReaderPool`).
    names
        The inputs every patch reads (e.g. ``noisy`` and ``prior``; ``even`` and ``odd``).
    patch_size
        Cube edge or (z, y, x) patch shape in voxels.
    seed, augment, planes, prefetch, workers
        As :class:`scnet_dask.engine.sampling.PatchSampler`.
    foreground
        Draw patch centres only in each tomogram's foreground mask (held by the pool).

    """

    def __init__(
        self,
        members: Sequence[Member],
        pool: ReaderPool,
        names: Sequence[str],
        patch_size: int | tuple[int, int, int],
        seed: int = 0,
        augment: bool = True,
        planes: str = "all",
        prefetch: int = 4,
        workers: int = 2,
        foreground: bool = False,
    ):
        if not members:
            raise ValueError(f"the sampler needs at least one tomogram, got {list(members)}")
        weights = np.array([m.weight for m in members], dtype=np.float64)
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"tomogram weights must be positive, got {weights.tolist()}")
        self.members = list(members)
        self.pool = pool
        self.names = list(names)
        self.shape = patch_shape_of(patch_size)
        for m in self.members:
            r = m.region
            if any(b - a < n for n, a, b in zip(self.shape, r.start, r.stop, strict=True)):
                raise InputError(
                    f"tomogram {m.name!r}: its region {r.start}-{r.stop} is smaller than a "
                    f"{self.shape} patch"
                )
        self.cumulative = np.cumsum(weights) / weights.sum()
        self.planes = planes
        self.augment = augment
        self.foreground = foreground
        self.rng = np.random.default_rng(seed)
        self.prefetch = prefetch
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._queue = []
        self.wait_seconds = 0.0

    def _centres(self, i: int) -> np.ndarray:
        entry = self.pool.get(i)
        if entry.centres is None:
            if entry.mask is None:
                raise ValueError(f"tomogram {self.members[i].name!r} has no foreground mask")
            pts = mask_centres(entry.mask, entry.mask_factor, self.members[i].region, self.shape)
            if len(pts) == 0:
                raise InputError(
                    f"tomogram {self.members[i].name!r}: the foreground mask is empty inside "
                    "the training region"
                )
            entry.centres = pts
        return entry.centres

    def draw(self) -> tuple[tuple[int, tuple[int, int, int]], tuple[int, ...]]:
        """Draw one (tomogram index, patch origin (z, y, x)) and its augmentation code."""
        i = int(np.searchsorted(self.cumulative, self.rng.random(), side="right"))
        i = min(i, len(self.members) - 1)
        centres = self._centres(i) if self.foreground else None
        origin = draw_origin(self.rng, self.members[i].region, self.shape, centres)
        return (i, origin), draw_augmentation(self.rng, self.planes, self.augment)

    def batch_names(self) -> list[str]:
        """The input names, the keys of a batch."""
        return list(self.names)

    def read(
        self,
        key: tuple[int, tuple[int, int, int]],
        aug: tuple[int, ...],
        names: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Read, normalise (by the tomogram's own statistics) and augment one patch per input."""
        i, origin = key
        member = self.members[i]
        readers = self.pool.get(i).readers
        sl = tuple(slice(o, o + p) for o, p in zip(origin, self.shape, strict=True))
        out: dict[str, np.ndarray] = {}
        for name in self.names if names is None else names:
            mean, std = member.norm[name]
            raw = np.asarray(readers[name][sl], dtype=np.float32)
            out[name] = apply_augmentation((raw - np.float32(mean)) / np.float32(std), aug)
        return out

    def close(self) -> None:
        """Stop the reader threads and close every tomogram."""
        super().close()
        self.pool.clear()


def fixed_draws(
    members: Sequence[Member], n: int, patch: tuple[int, int, int], seed: int
) -> list[tuple[int, tuple[int, int, int]]]:
    """``n`` reproducible (tomogram index, origin) draws spread evenly over ``members``.

    Patch ``k`` comes from member ``k * len(members) // n`` (every member when ``n`` is at
    least their number), at a uniform place of its region; for validation sets.
    """
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        i = k * len(members) // n
        r = members[i].region
        origin = tuple(
            int(rng.integers(a, b - p + 1)) for a, b, p in zip(r.start, r.stop, patch, strict=True)
        )
        out.append((i, origin))
    return out  # type: ignore[return-value]
