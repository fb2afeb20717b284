"""``demo``: the pipeline on the embedded sample volume, with a printed summary."""

from __future__ import annotations

import csv
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.export import export
from scnet_dask.commands.info import format_info, volume_info
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, DenoiseConfig, ExportConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io.plots import validation_slices

__all__ = ["sample_path", "run_demo", "DEMO_MARKER"]

#: File that marks a folder as the demo's own, so that a rerun may replace it.
DEMO_MARKER = ".scnet-demo"


def sample_path(name: str = "temsim_noisy_crop.mrc") -> Path:
    """Path of an embedded sample volume (see ``scnet_dask/data/README.md``)."""
    return Path(str(resources.files("scnet_dask") / "data" / name))


def _fit_scores(output: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    """Correlation with ``clean`` and PSNR (dB) after a least-squares scale + offset fit."""
    a = np.vstack([output.ravel(), np.ones(output.size)]).T.astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, clean.ravel().astype(np.float64), rcond=None)
    fitted = a @ coef
    mse = float(np.mean((fitted - clean.ravel()) ** 2))
    peak = float(clean.max() - clean.min())
    corr = float(np.corrcoef(output.ravel(), clean.ravel())[0, 1])
    return corr, 10 * np.log10(peak**2 / mse)


def _fresh_out_dir(out_dir: Path) -> Path:
    """``out_dir``, emptied if an earlier demo made it; another non-empty folder is refused."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(f"{out_dir}: exists and is not a folder; choose another --out")
        if any(out_dir.iterdir()) and not (out_dir / DEMO_MARKER).exists():
            raise InputError(
                f"{out_dir}: folder is not empty and was not made by 'scnet-dask demo'; "
                "choose another --out"
            )
        shutil.rmtree(out_dir)  # an earlier demo's outputs
    out_dir.mkdir(parents=True)
    (out_dir / DEMO_MARKER).write_text("made by scnet-dask demo; replaced by the next demo\n")
    return out_dir


def _score_and_show(
    out_dir: Path, noisy: Path, gaussian: Path, denoised: Path
) -> dict[str, tuple[float, float]]:
    """(r, PSNR) of each volume against the clean simulation; ``slices.png`` of all four."""
    zarr_path, base_path, den_path = noisy, gaussian, denoised
    clean = np.asarray(open_source(sample_path("temsim_clean_crop.mrc")).data, np.float32)
    shown = {  # the embedded crop is small (3 MiB): whole arrays are fine here
        name: np.asarray(open_source(p).data, np.float32)
        for name, p in (("noisy", zarr_path), ("gaussian σ1", base_path), ("SC-Net", den_path))
    }
    scores = {name: _fit_scores(vol, clean) for name, vol in shown.items()}
    validation_slices({**shown, "clean simulation": clean}, out_dir / "slices.png")
    return scores


def _summary(
    out_dir: Path,
    zarr_path: Path,
    run_dir: Path,
    same: bool,
    voxel_in: tuple[float, float, float],
    voxel_out: tuple[float, float, float],
    summary: dict[str, Any],
    den: dict[str, Any],
    scores: dict[str, tuple[float, float]],
    times: tuple[float, float, float, float, float, float],
) -> list[str]:
    """The demo's report, one line per step (times in s from ``times``' successive marks)."""
    t0, t1, t2, t3, t4, t5 = times
    with open(run_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first, last = rows[0], rows[-1]
    lines = [
        "scnet-dask demo: embedded TEM-Simulator tomogram crop",
        format_info(volume_info(zarr_path)),
        f"convert: {t1 - t0:.2f} s; export to MRC: {t2 - t1:.2f} s",
        f"round trip MRC -> OME-Zarr -> MRC value-exact: {same}; voxel size kept: "
        f"{voxel_in == voxel_out} ({voxel_out[0]:.3g} Å)",
        f"prior (gaussian σ 1 voxel): {t3 - t2:.2f} s",
        f"train (short: 32³ patches, 16 features, {summary['steps']} steps on CPU): "
        f"{t4 - t3:.1f} s, "
        f"{summary['mean_step_seconds']:.2f} s/step, "
        f"data wait {100 * summary['wait_fraction']:.1f} %",
        f"  loss total {float(first['total']):.4g} -> {float(last['total']):.4g}; "
        f"validation {summary['best_val']:.4g}; checkpoints and curves.png in {run_dir}/",
        f"denoise (tiled: tiles {den['tile'][0] if den['tile'] else 'per chunk'}, halo "
        f"{tuple(den['halo'])} below / {tuple(den['halo_hi'])} above, "
        f"{den['chunks_written']} chunks): "
        f"{t5 - t4:.1f} s",
        "vs the clean simulation (correlation r, PSNR after a least-squares scale + offset fit;",
        " a negative r means an inverted contrast, which a run this short can produce):",
        *(f"  {k:14s} r = {c:.3f}  PSNR {p:.2f} dB" for k, (c, p) in scores.items()),
        f"central z-slices (noisy | gaussian | SC-Net | clean): {out_dir / 'slices.png'}",
        f"outputs in {out_dir}/ (view with napari or export to MRC)",
    ]
    return lines


def run_demo(out_dir: Path) -> str:
    """Run convert, export, prior, a short training and denoising on the embedded sample.

    The MRC → OME-Zarr → MRC round trip is compared value by value; the training is 80 CPU
    steps of SC-Net's default recipe (about half a minute); the denoised volume and a Gaussian
    baseline (σ 1, the better of σ 1 and 1.5 on this crop) are scored against the embedded
    clean simulation, and their central z-slices saved side by side (``slices.png``).

    Returns
    -------
    str
        A multi-line summary.

    """
    out_dir = _fresh_out_dir(Path(out_dir))
    src = sample_path()
    t0 = time.perf_counter()
    zarr_path = out_dir / "sample.ome.zarr"
    convert(ConvertConfig(input=src, output=zarr_path), show_progress=False)
    t1 = time.perf_counter()
    mrc_path = out_dir / "sample_roundtrip.mrc"
    export(ExportConfig(input=zarr_path, output=mrc_path), show_progress=False)
    t2 = time.perf_counter()
    a = open_source(src)
    b = open_source(mrc_path)
    same = bool(np.array_equal(a.data.compute().astype(np.float32), b.data.compute()))
    prior_path = out_dir / "prior.ome.zarr"
    make_prior(PriorConfig(noisy=zarr_path, output=prior_path, sigma=1.0), show_progress=False)
    t3 = time.perf_counter()
    run_dir = out_dir / "run"
    summary = train(
        TrainConfig.model_validate(
            {
                "noisy": zarr_path,
                "prior": prior_path,
                "out": run_dir,
                "patch_size": 32,
                "features": 16,
                "epochs": 4,
                "steps_per_epoch": 20,
                "val_patches": 2,
                "device": "cpu",
            }
        ),
        show_progress=False,
    )
    t4 = time.perf_counter()
    den_path = out_dir / "denoised.ome.zarr"
    den = denoise(
        DenoiseConfig(
            input=zarr_path,
            checkpoint=run_dir / "best.pt",
            output=den_path,
            chunks=64,
            device="cpu",
            batch_size=2,
        ),
        show_progress=False,
    )
    t5 = time.perf_counter()
    base_path = out_dir / "gaussian.ome.zarr"
    denoise(
        DenoiseConfig.model_validate(
            {"input": zarr_path, "output": base_path, "method": "gaussian", "sigma": 1.0}
        ),
        show_progress=False,
    )
    scores = _score_and_show(out_dir, zarr_path, base_path, den_path)
    lines = _summary(
        out_dir, zarr_path, run_dir, same, a.voxel_size_angstrom, b.voxel_size_angstrom,
        summary, den, scores, (t0, t1, t2, t3, t4, t5),
    )  # fmt: skip
    return "\n".join(lines)
