"""``simulate``: the SC-Net paper's §5.2 procedure for test data with a known answer.

1. ground truth = the input volume filtered with a Gaussian of σ = 2 voxels;
2. re-project it along the tilt angles (single axis, parallel beam, :func:`recon.project`);
3. normalise the tilt series to [0, 255] (min-max over the whole series);
4. for each noise level σ add white Gaussian noise of σ (in those 0-255 units) to the
   projections — not to the volume;
5. reconstruct by WBP from all, the even-indexed and the odd-indexed tilts.

Everything is lazy and written slab by slab; the noise is reproducible from ``--seed``. Output:
OME-Zarr volumes (or MRC with ``fmt="mrc"``) and ``manifest.json`` listing every file with its
role, noise level and the settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from dask_image.ndfilters import gaussian_filter

from scnet_dask.commands.export import write_volume_file
from scnet_dask.errors import InputError, nonfinite_input
from scnet_dask.io import Volume, open_source
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.io.output import atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.science.recon import project, wbp

__all__ = ["parse_tilts", "simulate"]

log = logging.getLogger(__name__)
GT_SIGMA = 2.0


def parse_tilts(spec: str) -> np.ndarray:
    """``"-60:60:2"`` → angles -60, -58, ..., 60 (degrees, end included)."""
    try:
        start, stop, step = (float(v) for v in spec.split(":"))
    except ValueError as e:
        raise InputError(f"--tilts must be START:STOP:STEP in degrees, got {spec!r}") from e
    finite = all(np.isfinite(v) for v in (start, stop, step))
    if not finite or step <= 0 or stop < start or max(abs(start), abs(stop)) >= 90:
        raise InputError(f"--tilts needs STEP > 0, START <= STOP, |angles| < 90, got {spec!r}")
    angles = np.arange(start, stop + step / 2, step)
    if len(angles) < 3:
        raise InputError(
            f"--tilts {spec!r} gives {len(angles)} tilt(s); a reconstruction (and its even and "
            "odd halves) needs at least 3"
        )
    return angles


def _write(data: da.Array, path: Path, voxel: tuple[float, float, float], attrs: dict[str, Any],
           fmt: str) -> None:  # fmt: skip
    with atomic_output(path, overwrite=True) as tmp:
        if fmt == "zarr":
            write_volume_zarr(data, tmp, voxel, attrs, 64, 3, None, False)
        else:
            write_volume_file(tmp, data, voxel, None, False, "mrc")


def _checked_inputs(
    volume: str | Path, out: Path, noise_sigmas: tuple[float, ...], tilts: str, fmt: str,
    overwrite: bool,
) -> tuple[np.ndarray, Volume]:  # fmt: skip
    """The tilt angles (degrees) and the opened volume, after every check (nothing written)."""
    refuse_overlap(out, volume)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: output folder is not empty; pass --overwrite")
    if fmt not in ("zarr", "mrc"):
        raise InputError(f"format must be zarr or mrc, got {fmt!r}")
    if not noise_sigmas or min(noise_sigmas) < 0:
        raise InputError(f"noise sigmas must be >= 0, got {noise_sigmas}")
    angles = parse_tilts(tilts)
    vol = open_source(volume)
    bad = int((~da.isfinite(vol.data)).sum().compute())  # one Dask pass
    if bad:
        raise nonfinite_input(volume, f" ({bad} voxels)")
    if not vol.voxel_size_found:
        log.warning(
            "%s: voxel size %s Å looks like a placeholder; the simulated volumes carry it "
            "(convert the volume with --voxel-size first for outputs in Å)",
            volume, vol.voxel_size_angstrom,
        )  # fmt: skip
    return angles, vol


def simulate(
    volume: str | Path,
    out_dir: str | Path,
    noise_sigmas: tuple[float, ...] = (10.0, 15.0, 20.0),
    tilts: str = "-60:60:2",
    seed: int = 0,
    fmt: str = "zarr",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate noisy tilt series and their reconstructions from a clean ``volume``.

    Returns
    -------
    dict
        The manifest (also written to ``out_dir/manifest.json``).

    """
    out = Path(out_dir)
    angles, vol = _checked_inputs(volume, out, noise_sigmas, tilts, fmt, overwrite)
    nz = int(vol.data.shape[0])
    voxel = vol.voxel_size_angstrom
    out.mkdir(parents=True, exist_ok=True)
    ext = ".ome.zarr" if fmt == "zarr" else ".mrc"
    files: list[dict[str, Any]] = []

    def emit(data: da.Array, name: str, role: str, **info: Any) -> None:
        path = out / f"{name}{ext}"
        attrs = volume_attrs(
            path, "simulate", None, voxel, {"voxel_size_found": vol.voxel_size_found},
            source=str(Path(volume).resolve()), role=role, tilts=tilts, seed=seed, **info,
        )  # fmt: skip
        _write(data.astype(np.float32), path, voxel, attrs, fmt)
        files.append({"path": path.name, "role": role, **info})
        log.info("wrote %s", path)

    gt = gaussian_filter(vol.data.astype(np.float32), GT_SIGMA, mode="reflect")
    emit(gt, "ground_truth", "reference", gt_sigma_voxels=GT_SIGMA)
    gt_zarr = open_source(out / f"ground_truth{ext}").data  # project from the stored volume
    ts = project(gt_zarr, angles, slab=32)
    lo, hi = da.compute(ts.min(), ts.max())
    scale = 255.0 / float(hi - lo) if hi > lo else 1.0
    ts = ((ts - lo) * scale).astype(np.float32)
    even, odd = np.arange(0, len(angles), 2), np.arange(1, len(angles), 2)
    for s in noise_sigmas:
        # the noise of a level depends only on (seed, sigma), not on the other levels asked for
        state = int(np.random.SeedSequence([seed, round(s * 1000)]).generate_state(1)[0])
        rng = da.random.default_rng(state)
        noise = rng.normal(0.0, s, size=ts.shape, chunks=ts.chunks).astype(np.float32)
        emit(ts + noise, f"tilt_sigma{s:g}", "tilt_series", noise_sigma=s)
        noisy = open_source(out / f"tilt_sigma{s:g}{ext}").data  # read back, not recomputed
        for role, idx in (("all", slice(None)), ("even", even), ("odd", odd)):
            rec = wbp(noisy[idx], angles[idx], nz, slab=32)
            emit(rec, f"rec_{role}_sigma{s:g}", f"reconstruction_{role}", noise_sigma=s)
    manifest = {
        "source": str(Path(volume).resolve()),
        "voxel_size_angstrom": list(voxel),
        "tilt_angles_deg": angles.tolist(),
        "noise_sigmas": list(noise_sigmas),
        "noise_units": "projections min-max normalised to [0, 255]",
        "ground_truth_sigma_voxels": GT_SIGMA,
        "seed": seed,
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (out / "tilt.tlt").write_text("\n".join(f"{a:g}" for a in angles) + "\n")
    return manifest
