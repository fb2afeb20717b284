"""FSC_e/o on real data and on temsim, with one SC-Net model per half (an unbiased column).

The paper's Table 3 compares methods by FSC between the denoised even and odd half-tomograms.
For a trained method that column measures something only if each half is denoised by a model
that never saw it; this script trains SC-Net (the default recipe, a Gaussian σ 1 prior of each
half) once on the even and once on the odd half, then runs ``scnet-dask evaluate`` with rows
noisy, Gaussian σ 1 and 1.5, SC-Net with per-half models (``checkpoint_even/odd``) and SC-Net
with the even model applied to both halves (the biased column, for comparison).

Datasets (``--dataset``):
- ``haadf``: the real HAADF-STEM tilt series (``shared/data/real/haadf_tilt_series``, 77 tilts,
  -76..76°, 256 x 256): the even and odd *tilts* are reconstructed with our WBP (``--nz``
  sections; the tilt axis, x or y, is the one whose even/odd reconstructions agree best); the
  header's 1 Å voxel is a placeholder, so resolutions are in voxels (Å at 1 Å/voxel);
- ``temsim``: ``rec_even`` / ``rec_odd`` of the TEM-Simulator data (10 Å voxels) and their
  mean; reference ``rec_clean``.

    python benchmarks/fsc_eo.py --dataset haadf [--work DIR] [--steps 400] [--nz 128] \
        [--nmsg pair_form=paper,upsample=true,upsample_axes=yx]

``--nmsg OPTIONS`` adds a row of NMSG with those options, one model per half (``--steps``
noise-model steps, then ``--steps`` denoiser steps, as the quality benchmark's NMSG rows).

Writes ``WORK/DATASET/eval/`` (evaluate's table, FSC plot) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import mrcfile
import numpy as np
import yaml

from scnet_dask.commands.convert import convert
from scnet_dask.commands.evaluate import evaluate, load_config
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.science.recon import read_tilt_angles, wbp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
from quality_temsim import mean_mrc  # type: ignore[import-not-found]  # noqa: E402


def _write_mrc(path: Path, vol: np.ndarray, voxel: float) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(vol, dtype=np.float32))
        m.voxel_size = voxel
    return path


def haadf_halves(d: Path, nz: int) -> dict[str, Path]:
    """Even-tilt, odd-tilt and all-tilt WBP tomograms of the real HAADF series (MRC)."""
    if (d / "full.mrc").exists():
        return {k: d / f"{k}.mrc" for k in ("even", "odd", "full")}
    src = SHARED / "real" / "haadf_tilt_series"
    with warnings.catch_warnings():  # its header has no map ID: read it permissively
        warnings.simplefilter("ignore")
        with mrcfile.open(src / "HAADF_aligned.mrc", permissive=True) as m:
            ts = np.asarray(m.data, dtype=np.float32)
    ts = (ts - ts.mean()) / ts.std()
    angles = read_tilt_angles(str(src / "HAADF.rawtlt"))
    best = None
    for axis in ("x", "y"):
        e = wbp(da.from_array(ts[0::2]), angles[0::2], nz, tilt_axis=axis).compute()
        o = wbp(da.from_array(ts[1::2]), angles[1::2], nz, tilt_axis=axis).compute()
        r = float(np.corrcoef(e.ravel(), o.ravel())[0, 1])
        print(f"tilt axis {axis}: even/odd reconstructions correlate {r:.3f}", flush=True)
        if best is None or r > best[0]:
            best = (r, axis, e, o)
    assert best is not None
    _, axis, e, o = best
    full = wbp(da.from_array(ts), angles, nz, tilt_axis=axis).compute()
    return {
        "even": _write_mrc(d / "even.mrc", e, 1.0),
        "odd": _write_mrc(d / "odd.mrc", o, 1.0),
        "full": _write_mrc(d / "full.mrc", full, 1.0),
    }


def temsim_halves(d: Path) -> dict[str, Path]:
    t = SHARED / "temsim"
    if not (d / "full.mrc").exists():
        mean_mrc(t / "rec_even.mrc", t / "rec_odd.mrc", d / "full.mrc")
    return {"even": t / "rec_even.mrc", "odd": t / "rec_odd.mrc", "full": d / "full.mrc"}


def half_zarr(src: Path, d: Path, name: str) -> Path:
    """``d/NAME.zarr``: the half ``src`` converted once (reused by every model trained on it)."""
    z = d / f"{name}.zarr"
    if not z.exists():
        convert(ConvertConfig(input=src, output=z), show_progress=False)
    return z


def train_half(src: Path, d: Path, name: str, steps: int) -> Path:
    """SC-Net's default recipe on one half; returns its last checkpoint."""
    run = d / f"run_{name}"
    if (run / "done").exists():
        return run / "last.pt"
    z = half_zarr(src, d, name)
    prior = d / f"prior_{name}.zarr"
    if not prior.exists():
        make_prior(PriorConfig(noisy=z, output=prior, sigma=1.0), show_progress=False)
    cfg = {"noisy": z, "prior": prior, "out": run, "patch_size": 32, "features": 16,
           "batch_size": 2, "epochs": 4, "steps_per_epoch": max(1, steps // 4),
           "val_patches": 2, "seed": 0, "plots": False, **_resume(run)}  # fmt: skip
    train(TrainConfig.model_validate(cfg), show_progress=False)
    (run / "done").write_text("")
    return run / "last.pt"


def train_nmsg_half(src: Path, d: Path, name: str, steps: int, opts: dict[str, Any]) -> Path:
    """NMSG with ``opts`` on one half (``steps`` noise-model + ``steps`` denoiser steps)."""
    tag = "_".join(f"{k}-{v}" for k, v in sorted(opts.items())) or "default"
    run = d / f"run_nmsg_{tag}_{name}"
    if (run / "done").exists():
        return run / "last.pt"
    z = half_zarr(src, d, name)
    cfg = {"noisy": z, "method": "nmsg", "out": run, "patch_size": 32, "features": 16,
           "batch_size": 2, "epochs": 4, "steps_per_epoch": max(1, 2 * steps // 4),
           "lr_schedule": "constant", "val_patches": 2, "seed": 0, "plots": False,
           "gan": {"steps": steps}, **opts, **_resume(run)}  # fmt: skip
    train(TrainConfig.model_validate(cfg), show_progress=False)
    (run / "done").write_text("")
    return run / "last.pt"


def _resume(run: Path) -> dict[str, bool]:
    """A run cut short (a ``last.pt`` without ``done``) goes on; otherwise a fresh one."""
    going = (run / "last.pt").exists()
    return {"resume": going, "overwrite": not going}


def _options(text: str) -> dict[str, Any]:
    """``key=value,...`` -> options (numbers and true/false parsed)."""
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        k, _, v = item.partition("=")
        out[k.strip()] = yaml.safe_load(v.strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", choices=("haadf", "temsim"), default="haadf")
    ap.add_argument("--work", type=Path, default=Path("fsc_eo"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--nz", type=int, default=128, help="haadf: sections reconstructed")
    ap.add_argument("--nmsg", action="append", default=[], metavar="OPTIONS",
                    help="add an NMSG row, one model per half, with these options "
                    "(e.g. pair_form=paper,upsample=true,upsample_axes=yx); repeatable")
    a = ap.parse_args()
    d = a.work / a.dataset
    d.mkdir(parents=True, exist_ok=True)
    halves = haadf_halves(d, a.nz) if a.dataset == "haadf" else temsim_halves(d)
    ck_even = train_half(halves["even"], d, "even", a.steps)
    ck_odd = train_half(halves["odd"], d, "odd", a.steps)
    cfg = {
        "name": f"{a.dataset}: FSC_e/o",
        "noisy": str(halves["full"]),
        "even": str(halves["even"]),
        "odd": str(halves["odd"]),
        "out_dir": str(d / "eval"),
        "chunks": 64,
        "device": "cpu",
        "overwrite": True,
        "methods": [
            {"name": "noisy", "method": "none"},
            {"name": "gaussian σ 1", "method": "gaussian", "sigma": 1.0},
            {"name": "gaussian σ 1.5", "method": "gaussian", "sigma": 1.5},
            {
                "name": "SC-Net, one model per half",
                "method": "scnet",
                "checkpoint": str(ck_even),
                "checkpoint_even": str(ck_even),
                "checkpoint_odd": str(ck_odd),
            },  # fmt: skip
            {
                "name": "SC-Net, the even model for both halves (biased)",
                "method": "scnet",
                "checkpoint": str(ck_even),
            },  # fmt: skip
        ],
    }
    for text in a.nmsg:
        opts = _options(text)
        ev = train_nmsg_half(halves["even"], d, "even", a.steps, opts)
        od = train_nmsg_half(halves["odd"], d, "odd", a.steps, opts)
        label = ", ".join(f"{k} {v}" for k, v in opts.items()) or "default"
        cfg["methods"].append({"name": f"NMSG ({label}), one model per half", "method": "nmsg",
                               "checkpoint": str(ev), "checkpoint_even": str(ev),
                               "checkpoint_odd": str(od)})  # type: ignore[attr-defined]  # fmt: skip
    if a.dataset == "temsim":
        cfg["reference"] = str(SHARED / "temsim" / "rec_clean.mrc")
    path = d / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    evaluate(load_config(path), show_progress=False)
    for md in sorted((d / "eval").glob("*.md")):
        print(md.read_text())


if __name__ == "__main__":
    main()
