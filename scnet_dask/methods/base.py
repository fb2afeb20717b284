"""The two contracts every denoising method fulfils: :class:`Method` and :class:`TilePredictor`.

See the package docstring (:mod:`scnet_dask.methods`) for how they fit together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from scnet_dask.errors import InputError
from scnet_dask.model.device import resolve_device

if TYPE_CHECKING:
    from scnet_dask.io import Volume

__all__ = [
    "Options",
    "NoOptions",
    "Geometry",
    "TilePredictor",
    "TrainState",
    "Trained",
    "PredictContext",
    "Method",
]

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Trained:
    """A loaded training checkpoint, networks in eval mode on one device."""

    networks: dict[str, torch.nn.Module]
    options: Any
    config: dict[str, Any]
    normalisation: dict[str, dict[str, Any]]
    voxel_size_angstrom: tuple[float, float, float] | None
    path: str
    sha256: str
    inputs: dict[str, str] = field(default_factory=dict)


class Options(BaseModel):
    """Base of every method's option models: unknown keys are errors, assignments validated.

    Every field needs a ``description``: it is the ``--help`` text of the generated option.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class NoOptions(Options):
    """A method without options of its own."""


@dataclass(frozen=True)
class Geometry:
    """What the tiling needs to know about a predictor, in input voxels (z, y, x).

    Attributes
    ----------
    margin
        How far an input voxel can influence the output (receptive reach); inside this margin
        of a tile the prediction differs from a whole-volume one, so the blend gives it ~0
        weight. The automatic halo is ``margin + post-filter radius + blend``.
    multiple
        Tile edges (and tile origins) must be multiples of this (16 for four stride-2 levels).
    post_sigma
        Gaussian σ (voxels) applied to each predicted tile after the predictor (0: none).
    upsample
        Up-sampling the predictor applies inside each tile (informational; it is already
        folded into ``margin``).
    stochastic
        Whether the output depends on a random seed (dropout ensembles, sampled masks); the
        tiling then passes one seed per tile, derived from the tile's position, so the output
        is deterministic and safe to resume.
    positional
        Whether the predictor reads other volumes at the tile's place (the Fourier pool); the
        tiling then passes ``spans``: per tile and axis ``(a, b, n)``, the padded coordinates
        ``[a, b)`` of an axis of ``n`` voxels (see :func:`scnet_dask.tiling.blend.read_box`).
    margin_hi
        The reach towards higher indices when it differs from ``margin`` (which is then the
        reach towards lower indices: what a tile needs at its low end); ``None``: symmetric.
    memory
        Peak memory of one float32 forward of a tile, as bytes (per voxel, per (y, x) plane,
        fixed) (see :func:`scnet_dask.tiling.tilesize.tile_memory_bytes`); lets ``denoise --tile
        auto``
        size tiles for the device. ``None``: unknown (one tile per output chunk).

    """

    margin: Triple
    multiple: int = 1
    post_sigma: float = 0.0
    upsample: Triple = (1, 1, 1)
    stochastic: bool = False
    positional: bool = False
    margin_hi: Triple | None = None
    memory: tuple[float, float, float] | None = None


@runtime_checkable
class TilePredictor(Protocol):
    """A picklable callable over a batch of tiles that carries its own geometry.

    ``__call__(tiles, seeds=None)`` takes a (batch, z, y, x) float32 array in the input's units
    and returns the denoised batch, same shape, float32, same units. ``seeds`` (one int per
    tile) is given to stochastic predictors only. Networks are loaded lazily, once per process,
    never pickled into tasks.
    """

    @property
    def geometry(self) -> Geometry:  # pragma: no cover - protocol
        """The predictor's :class:`Geometry`."""
        ...

    def __call__(
        self, tiles: np.ndarray, seeds: Sequence[int] | None = None
    ) -> np.ndarray:  # pragma: no cover - protocol
        """Denoise a (batch, z, y, x) float32 batch of tiles."""
        ...


@dataclass
class TrainState:
    """What a method's training step works with; built and owned by the training engine.

    Attributes
    ----------
    networks, optimizers
        The method's networks (already on ``device``) and their optimisers, by name.
    forward
        Networks to call in the step: the DDP wrappers while training on several ranks, else
        the networks themselves.
    options
        The method's validated training options.
    device
        The training device.
    step, total_steps
        Optimiser steps taken so far and planned in all (for schedules such as warm-ups).
    update
        ``update(loss, optimizer_name, sync=False)``: checks that ``loss`` is finite on every
        rank (else stops the run, keeping the last checkpoint), then zero-grad, backward and
        step. ``sync=True`` averages that optimiser's gradients over the ranks before the step,
        for networks a step calls directly rather than through their DDP wrapper in
        ``forward`` (e.g. a WGAN-GP critic, whose double backward DDP does not support).
    run_dir
        The run folder (for a method's own diagnostics); ``lead``: whether this rank writes.

    """

    networks: dict[str, torch.nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    forward: dict[str, torch.nn.Module]
    options: Any
    device: torch.device
    step: int = 0
    total_steps: int = 1
    update: Callable[..., None] = field(default=lambda loss, name, sync=False: None)
    run_dir: Path | None = None
    lead: bool = True


@dataclass(frozen=True)
class PredictContext:
    """Everything a method may need to build its tile predictor for one ``denoise`` run.

    Attributes
    ----------
    volume
        The input volume (lazy).
    device_spec
        ``--device`` as given (``auto``, ``cpu``, ``cuda``, ``cuda:N``); :attr:`device`
        resolves it (only methods that use a device ask, so others never warn about CUDA).
    amp
        bfloat16 autocast on CUDA.
    checkpoint, checkpoint_sha256
        The checkpoint (trainable methods only) and its SHA-256.

    """

    volume: Volume
    device_spec: str
    amp: bool
    checkpoint: Path | None = None
    checkpoint_sha256: str = ""

    @property
    def device(self) -> str:
        """The resolved torch device (``cpu`` or ``cuda[:N]``); raises if CUDA is absent."""
        return str(resolve_device(self.device_spec))


def lr_factor(schedule: str, step: int, first: int, end: int) -> float:
    """The fraction of the base learning rate at optimiser step ``step`` (0-based).

    Parameters
    ----------
    schedule
        ``constant`` (always 1) or ``cosine``: ``(1 + cos(pi t)) / 2`` with
        ``t = (step - first) / (end - first)`` clipped to [0, 1], so 1 at ``first`` falling
        towards 0 at ``end``.
    step, first, end
        The step being taken and the span ``[first, end)`` the schedule covers.

    """
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"lr schedule must be constant or cosine, got {schedule!r}")
    if end <= first:
        return 1.0
    t = min(1.0, max(0.0, (step - first) / (end - first)))
    return 0.5 * (1.0 + math.cos(math.pi * t))


class Method:
    """One denoising method. Subclass it in one module and :func:`register` an instance.

    Class attributes
    ----------------
    name
        The ``--method`` value.
    summary
        One line for ``--help``.
    inputs
        Named volumes the training step receives, the first being the command's positional
        input (e.g. ``("noisy", "prior")``); every other name must be a path field of
        ``train_options``.
    train_options, denoise_options
        Pydantic models (subclasses of :class:`Options`) of the method's own options; their
        fields become command-line options and YAML keys of ``train`` / ``denoise``.
    log_terms
        Columns of ``log.csv`` (``total`` first) that :meth:`step` returns.
    lr_schedule
        What ``--lr-schedule auto`` means for the method (``constant`` or ``cosine``).

    Trainable methods implement :meth:`build`, :meth:`step` and :meth:`predictor` (from a
    checkpoint); others implement :meth:`predictor` only.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("noisy",)
    train_options: ClassVar[type[Options] | None] = None
    denoise_options: ClassVar[type[Options]] = NoOptions
    log_terms: ClassVar[tuple[str, ...]] = ("total",)
    lr_schedule: ClassVar[str] = "constant"

    @property
    def trains(self) -> bool:
        """Whether the method is trained (needs ``train`` and a checkpoint)."""
        return self.train_options is not None

    def prepare(self, config: Any, show_progress: bool = True) -> None:
        """Make what training needs before it starts (e.g. a pool of volumes); once per run."""

    def patch_shape(self, options: Any, patch_size: int) -> Triple:
        """The (z, y, x) training patch for ``--patch-size`` (default: a cube of that edge).

        A 2.5-D method returns ``(slices, patch_size, patch_size)``.
        """
        return (patch_size, patch_size, patch_size)

    def patch_subset(self, options: Any) -> int | None:
        """How many inputs each patch reads, drawn without replacement (``None``: all).

        With a number, the batch names the drawn inputs ``draw0``, ``draw1``, ...
        """
        return None

    def user_inputs(self, primary: Path, options: Any) -> list[Path]:
        """The volumes the user gave (never written; a run folder must not overlap them)."""
        return list(self.input_paths(primary, options, None).values())

    def input_paths(
        self, primary: Path, options: Any, run_dir: Path | None = None
    ) -> dict[str, Path]:
        """Paths of the named :attr:`inputs`: the positional input and option fields."""
        paths = {self.inputs[0]: Path(primary)}
        for name in self.inputs[1:]:
            value = getattr(options, name, None)
            if value is None:
                raise InputError(f"--method {self.name} needs --{name.replace('_', '-')}")
            paths[name] = Path(value)
        return paths

    def input_statistics(
        self, options: Any, stats: dict[str, dict[str, Any]], arrays: Mapping[str, Any],
        labels: Mapping[str, str],
    ) -> dict[str, dict[str, Any]]:  # fmt: skip
        """The ``mean``/``std`` each input is normalised with (default: its own statistics).

        ``stats`` holds each input's statistics by name, ``arrays`` its lazy (z, y, x) Dask
        array and ``labels`` the name messages give it (its path, or a tomogram's name); a
        method may return other values for an input (e.g. SC-Net's prior in the noisy
        volume's units).
        """
        return stats

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        """The method's networks, freshly initialised (on the CPU, from torch's global RNG)."""
        raise NotImplementedError(f"method {self.name} is not trainable")

    def optimizers(
        self, networks: dict[str, torch.nn.Module], options: Any, config: Any
    ) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network with the run's ``lr``, ``beta1``, ``beta2`` (override for more)."""
        return {
            name: torch.optim.Adam(
                net.parameters(), lr=config.lr, betas=(config.beta1, config.beta2)
            )
            for name, net in networks.items()
        }

    def lr_schedule_span(
        self, options: Any, optimizers: Iterable[str], total_steps: int
    ) -> dict[str, tuple[int, int]]:
        """The optimisers ``--lr-schedule`` drives, each with the (first, end) step it spans.

        Default: every one of ``optimizers`` (names) over the whole run. A method that
        schedules an optimiser itself leaves it out (e.g. NMSG's noise-model GAN).
        """
        return dict.fromkeys(optimizers, (0, total_steps))

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        """One training (or, with ``train=False``, validation) step on a batch.

        ``batch`` maps each of :attr:`inputs` to a (batch, 1, p, p, p) float32 array,
        normalised. A training step calls ``state.update`` for each optimiser it steps.
        Returns :attr:`log_terms` as scalar tensors.
        """
        raise NotImplementedError(f"method {self.name} is not trainable")

    def preview(self, state: TrainState, sample: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Volumes for the epoch figure: each input patch and the first network's output.

        ``sample`` maps each input to a (p, p, p) array; networks are in eval mode.
        """
        net = next(iter(state.networks.values()))
        x = torch.from_numpy(sample[self.inputs[0]][None, None]).to(state.device)
        with torch.no_grad():
            out = net(x).float().cpu().numpy()[0, 0]
        return {**dict(sample), "output": out}

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """The tile predictor for one ``denoise`` run and the details for its provenance."""
        raise NotImplementedError
