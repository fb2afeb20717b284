"""``denoise``: tiled, blended, resumable inference of a whole volume, out of core.

The input (OME-Zarr, MRC or TIFF) is read lazily in ``--chunks`` blocks; each block plus its
halo is predicted once (:mod:`scnet_dask.tiling.graph`), blended with its neighbours and written as
one chunk of the output OME-Zarr, with a marker per finished chunk so that ``--resume`` after a
kill recomputes only the chunks not yet written. MRC/TIFF outputs are streamed from a work
OME-Zarr beside the target once every chunk is done.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from scipy import ndimage

from scnet_dask.commands.export import write_volume_file
from scnet_dask.config import DenoiseConfig
from scnet_dask.distributed.compute import _client, _gpu_annotations, write_blocks
from scnet_dask.errors import InputError, nonfinite_input
from scnet_dask.io import Volume, open_source, store_of
from scnet_dask.io._atomic import (
    check_output_target,
    partial_path,
    refuse_overlap,
    remove_path,
)
from scnet_dask.io.output import ResumableOutput, atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.resume import (
    progress_record,
)
from scnet_dask.io.store import finalise_store, source_signature
from scnet_dask.methods import Geometry, PredictContext, TilePredictor, get
from scnet_dask.methods.runtime import file_sha256
from scnet_dask.science.stats import central_box, sample_step
from scnet_dask.tiling.blend import TilePlan
from scnet_dask.tiling.graph import overlap_add
from scnet_dask.tiling.halo import HaloSides, plan_halo_sides
from scnet_dask.tiling.tilesize import choose_tile, device_memory_budget

__all__ = ["denoise", "build_denoiser"]

log = logging.getLogger(__name__)


def _check_finite(block: np.ndarray, path: str, block_info: Any = None) -> np.ndarray:
    if not np.isfinite(block).all():
        loc = block_info[0]["array-location"] if block_info else "?"
        where = tuple(int(s[0]) for s in loc) if loc != "?" else loc
        raise nonfinite_input(path, f" (block at (z, y, x) = {where})")
    return block


def build_denoiser(cfg: DenoiseConfig, vol: Volume) -> tuple[TilePredictor, dict[str, Any]]:
    """The tile predictor of ``cfg.method`` for ``vol`` and the details for its provenance.

    Raises
    ------
    InputError
        For a checkpoint given to a method that takes none, a missing, foreign or incompatible
        checkpoint, or a CUDA device that is absent.

    """
    method = get(cfg.method)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint is not None else None
    sha = ""
    if ckpt is not None:
        if not method.trains:
            raise InputError(
                f"{ckpt}: --method {cfg.method} takes no checkpoint; give INPUT OUTPUT only"
            )
        if not ckpt.is_file():
            raise InputError(f"{ckpt}: no such checkpoint")
        sha = file_sha256(ckpt)
    ctx = PredictContext(vol, cfg.device, cfg.amp, ckpt, sha)
    return method.predictor(cfg.options, ctx)


def _resolve_tile(
    cfg: DenoiseConfig,
    geom: Any,
    sides: HaloSides,
    shape: tuple[int, int, int],
    device: str,
    annotations: dict[str, Any] | None,
) -> tuple[int, int, int] | None:
    """The tile core edge (z, y, x) for this run, or ``None`` for one tile per chunk.

    ``--tile N`` is checked against the network's grid; ``auto`` sizes tiles for the device
    (:func:`scnet_dask.tiling.tilesize.choose_tile`), and ``--resume`` keeps the tiling the
    interrupted run recorded (free memory may differ now; see :func:`_signature` for when a
    resume may change the tile).
    """
    if isinstance(cfg.tile, int):
        if cfg.tile % geom.multiple:
            raise InputError(
                f"--tile must be a multiple of {geom.multiple} for --method {cfg.method}, "
                f"got {cfg.tile}"
            )
        return (cfg.tile, cfg.tile, cfg.tile)
    if cfg.resume:
        recorded = _recorded_tile(_store_path(Path(cfg.output)))
        if recorded is not None:
            return recorded or None
    client = _client()
    budget = device_memory_budget(device, client, annotations is not None)
    return choose_tile(shape, sides, geom.multiple, geom.memory, budget, cfg.batch_size)


def _recorded_tile(store: Path) -> tuple[int, int, int] | tuple[()] | None:
    """The tile an interrupted run at ``store`` used (``()``: per chunk; ``None``: no record)."""
    record = progress_record(store)
    if not isinstance(record, dict) or "tile" not in record:
        return None
    tile = record["tile"]
    return () if tile is None else (int(tile[0]), int(tile[1]), int(tile[2]))


def _signature(
    cfg: DenoiseConfig, vol: Volume, details: dict[str, Any], inputs: Sequence[Path] | None
) -> dict[str, Any]:
    opts = cfg.model_dump(mode="json", exclude={"resume", "overwrite", "output", "device"})
    opts["options"] = cfg.options.model_dump(mode="json")
    # exact tilings agree to float rounding (2e-7), so a resume may change the tile (e.g. a
    # smaller --tile after running out of memory); a stochastic predictor's draws depend on it
    opts["tile"] = details.get("tile_voxels") if details.get("stochastic") else "any exact"
    # the numbers a chunk holds depend on bf16 autocast: never mix fp32 and bf16 chunks
    opts["numerics"] = "bf16" if details.get("amp") else "fp32"
    return json.loads(
        json.dumps(
            {
                "source": source_signature(Path(cfg.input))
                if inputs is None
                else [source_signature(Path(p)) for p in inputs],
                "shape": list(vol.data.shape),
                "options": opts,
                "checkpoint_sha256": details.get("checkpoint_sha256"),
            }
        )
    )


def _store_path(target: Path) -> Path:
    """The OME-Zarr written while denoising into ``target`` (partial or work store)."""
    if str(target).lower().endswith(".zarr"):
        return partial_path(target)
    return target.with_name(f".{target.name}.work.zarr")


def _plan(
    cfg: DenoiseConfig,
    data: da.Array,
    geom: Geometry,
    device: str,
    annotations: dict[str, Any] | None,
) -> tuple[TilePlan, HaloSides, tuple[int, int, int] | None]:
    """The tile plan of ``data``: halo per side from the predictor's geometry, tile size."""
    sides = plan_halo_sides(cfg.halo, geom.margin, geom.margin_hi, geom.post_sigma)
    shape3 = (int(data.shape[0]), int(data.shape[1]), int(data.shape[2]))
    tile = _resolve_tile(cfg, geom, sides, shape3, device, annotations)
    plan = TilePlan(
        shape=shape3,
        chunks=data.chunks,
        halo=sides.halo_lo,
        margin=sides.margin_lo,
        multiple=geom.multiple,
        window=cfg.window,
        post_sigma=geom.post_sigma,
        halo_hi=sides.halo_hi,
        margin_hi=sides.margin_hi,
        tile=tile,
    )
    return plan, sides, tile


def denoise(
    cfg: DenoiseConfig,
    show_progress: bool = True,
    vol: Volume | None = None,
    inputs: Sequence[Path] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Denoise ``cfg.input`` into ``cfg.output`` (OME-Zarr, MRC or TIFF).

    Parameters
    ----------
    cfg
        The command's options.
    show_progress
        Show a progress bar.
    vol
        The volume to denoise when it is not ``cfg.input`` as a file (a dataset tomogram's
        mean of halves); ``inputs`` then lists the files it is made of (their content
        signatures decide whether a partial output resumes).
    extra
        More provenance for the output (e.g. ``--method auto``'s score table).

    Returns
    -------
    dict
        Output path, method, shape, voxel size (Å), halo and margin (voxels, z/y/x), chunks
        written and skipped, tile voxels per output voxel, and the output statistics.

    """
    src = Path(cfg.input)
    target = Path(cfg.output)
    refuse_overlap(target, src, cfg.checkpoint, *(inputs or ()))
    check_output_target(target, cfg.overwrite)
    vol = open_source(src) if vol is None else vol
    stats_in = vol.attrs.get("statistics") or {}
    if stats_in.get("n_nonfinite"):
        raise nonfinite_input(src, f" ({stats_in['n_nonfinite']} voxels)")
    predictor, details = build_denoiser(cfg, vol)
    geom = predictor.geometry
    chunk = tuple(min(cfg.chunks, int(s)) for s in vol.data.shape)
    with dask.config.set({"array.rechunk.method": "tasks"}):  # no p2p shuffle on clusters
        data = vol.data.astype(np.float32).rechunk(chunk)
    data = data.map_blocks(_check_finite, path=str(src), dtype=np.float32)
    annotations = _gpu_annotations()
    plan, sides, tile = _plan(cfg, data, geom, str(details.get("device", "cpu")), annotations)
    halo, margin = sides.halo_lo, sides.margin_lo
    # an OME-Zarr output is written in place of its partial store and renamed; MRC/TIFF are
    # streamed from a work OME-Zarr once every chunk is done, then the work store goes
    res = ResumableOutput(
        target, cfg.overwrite, cfg.resume, keep_on_error=True, store=_store_path(target)
    )
    scratch = res.scratch  # tile pieces awaiting their blend, beside the output
    remove_path(scratch)  # pieces of an interrupted run are recomputed, never trusted
    out = overlap_add(
        data,
        predictor,
        plan,
        cfg.batch_size,
        annotations=annotations,
        reader=store_of(vol.data),
        scratch=scratch,
        source_name=str(src),
        delete_pieces=False,
        done_markers=res.done,
        # a GPU worker runs one annotated task at a time: read tiles in tasks of their own
        separate_reads=annotations is not None,
    )
    details.update(_tiling_details(cfg, tile, geom, sides))
    details.update(extra or {})
    attrs = volume_attrs(target, "denoise", vol, input=str(src.resolve()), **details)
    sig = _signature(cfg, vol, details, inputs)
    try:
        return _write(
            cfg, res, vol, out, plan, attrs, sig, annotations, halo, margin, data.shape,
            show_progress,
        )  # fmt: skip
    finally:
        # never let the clean-up hide the real error: threads of a failed or interrupted
        # run may still be writing pieces; what is left is removed by the next run
        shutil.rmtree(scratch, ignore_errors=True)


def _tiling_details(
    cfg: DenoiseConfig, tile: tuple[int, int, int] | None, geom: Geometry, sides: HaloSides
) -> dict[str, Any]:
    """The tiling of a run, for its provenance."""
    return {
        "method": cfg.method,
        "chunks": cfg.chunks,
        "tile_voxels": list(tile) if tile else None,
        "stochastic": bool(geom.stochastic),
        "halo_voxels": list(sides.halo_lo),
        "margin_voxels": list(sides.margin_lo),
        "halo_hi_voxels": list(sides.halo_hi),
        "margin_hi_voxels": list(sides.margin_hi),
        "window": cfg.window,
        "post_sigma_voxels": geom.post_sigma,
        "batch_size": cfg.batch_size,
    }


def _check_output(target: Path, stats: dict[str, Any], vol: Volume) -> None:
    """Refuse an output that holds NaN/Inf or is constant where the input is not.

    Raised before the output is renamed into place, so nothing is left behind: a wrong result
    is an error, never an exit status 0.
    """
    bad = int(stats.get("n_nonfinite", 0) or 0)
    if bad:
        raise InputError(
            f"{target}: the denoised volume holds {bad} NaN/Inf voxels (a diverged or damaged "
            "model, or overflow in bfloat16: try --no-amp); not written"
        )
    if float(stats.get("std", 1.0)) == 0.0:
        step = sample_step(tuple(int(s) for s in vol.data.shape))
        sample = vol.data[::step, ::step, ::step]
        if float(da.nanstd(sample.astype(np.float64)).compute()) > 0:
            raise InputError(
                f"{target}: the denoised volume is constant ({float(stats.get('mean', 0)):.6g} "
                f"everywhere) although {vol.path} is not; the model is unusable: not written"
            )


#: Edge (voxels) of the central box in which a trained model's output is compared with its input.
CONTRAST_BOX = 96


def _check_contrast(cfg: DenoiseConfig, out: Any, vol: Volume) -> float | None:
    """Warn when a trained model's output anti-correlates with its input; the correlation.

    In a central box of at most :data:`CONTRAST_BOX`³ voxels, the output is correlated with
    the input smoothed by σ 1 voxel (more of its signal than the raw voxels): a denoiser's
    output correlates positively with it. A negative value means an inverted contrast (a loss
    that fixes no sign — NMSG's authors' form can end so); filters are not checked (``None``).
    """
    if cfg.method == "none" or not get(cfg.method).trains:
        return None
    shape = tuple(int(s) for s in vol.data.shape)
    box = central_box(shape, CONTRAST_BOX)
    x = ndimage.gaussian_filter(np.asarray(vol.data[box], dtype=np.float64), 1.0)
    y = np.asarray(out[box], dtype=np.float64)
    if x.std() == 0 or y.std() == 0:
        return None
    r = float(np.corrcoef(x.ravel(), y.ravel())[0, 1])
    if r < -0.05:
        log.warning(
            "%s: the denoised volume anti-correlates with its input (r = %.3f against %s "
            "smoothed by σ 1 voxel, central %s voxels; a denoiser's output correlates "
            "positively, > 0): the model may have learnt an inverted contrast; check it before "
            "use", cfg.output, r, cfg.input, "x".join(str(b.stop - b.start) for b in box),
        )  # fmt: skip
    return r


def _write(
    cfg: DenoiseConfig,
    res: ResumableOutput,
    vol: Volume,
    out: da.Array,
    plan: TilePlan,
    attrs: dict[str, Any],
    sig: dict[str, Any],
    annotations: dict[str, Any] | None,
    halo: tuple[int, int, int],
    margin: tuple[int, int, int],
    shape: tuple[int, ...],
    show_progress: bool = True,
) -> dict[str, Any]:
    src, target = Path(cfg.input), Path(cfg.output)
    is_zarr = str(target).lower().endswith(".zarr")
    desc = f"denoise {src.name}"
    tile = list(plan.tile) if plan.tile else None
    with res:
        arr = res.open_volume(shape, cfg.chunks, sig, record={"tile": tile})
        written, skipped = write_blocks(out, arr, res.done, show_progress, desc, res.scratch)
        if is_zarr:
            stats = finalise_store(res.finish(), vol.voxel_size_angstrom, attrs, 3)
            _check_output(target, stats, vol)
            r_in = _check_contrast(cfg, arr, vol)
            res.commit()
        else:  # the work store's progress stays until the file is written (resumable)
            group = zarr.open_group(str(res.store), mode="r+")
            stats = finalise_store(group, vol.voxel_size_angstrom, attrs, 1)
            _check_output(target, stats, vol)
            r_in = _check_contrast(cfg, arr, vol)
            with atomic_output(target, overwrite=cfg.overwrite) as tmp:
                fmt = "tiff" if target.suffix.lower() in (".tif", ".tiff") else "mrc"
                write_volume_file(
                    tmp, da.from_zarr(arr), vol.voxel_size_angstrom, attrs["source"],
                    show_progress, fmt,
                )  # fmt: skip
            res.discard()
    return {
        "output": str(target),
        "method": cfg.method,
        "shape": list(shape),
        "voxel_size_angstrom": list(vol.voxel_size_angstrom),
        "halo": list(halo),
        "margin": list(margin),
        "halo_hi": list(plan.halos_hi),
        "margin_hi": list(plan.margins_hi),
        "tile": tile,
        "chunks_written": written,
        "chunks_skipped": skipped,
        "halo_overhead": plan.tile_voxels() / float(np.prod(shape)),
        "annotations": annotations,
        "statistics": stats,
        "input_correlation": r_in,
    }
