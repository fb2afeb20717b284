"""SC-Net vs baselines on the shared TEM-Simulator data (PSNR/SSIM vs rec_clean, FSC_e/o).

1. noisy = mean of ``rec_even`` and ``rec_odd``; tilt series = mean of ``tilt_even`` and
   ``tilt_odd`` (the two dose halves);
2. prior = the paper's: Topaz 2-D on every projection, then WBP (``prior --method tilt-series``);
3. SC-Net and Noise2Void (the same network and loop, single-voxel blind spots, no prior)
   trained on the noisy volume with CPU-sized settings (defaults: 64³ patches, 16 features,
   6 epochs x 50 steps each; the paper's settings are 128³, 32 features, 15 epochs, on a GPU:
   ``--patch 128 --features 32 --epochs 15 --steps 0``);
4. ``evaluate``: noisy, Gaussian, low-pass, BM4D (σ estimated per volume), Topaz 3-D,
   Noise2Void and SC-Net, each on the full volume and on both halves; prints the table and
   each method's wall time.

    python benchmarks/quality_temsim.py [--work DIR] [--epochs 10] [--steps 50] [--device auto]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mrcfile
import numpy as np

from scnet_dask.commands.convert import convert
from scnet_dask.commands.evaluate import EvaluateConfig, MethodSpec, evaluate
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "temsim"


def mean_mrc(a: Path, b: Path, out: Path) -> None:
    with mrcfile.open(a, permissive=True) as ma, mrcfile.open(b, permissive=True) as mb:
        data = (ma.data.astype(np.float32) + mb.data.astype(np.float32)) / 2
        voxel = float(ma.voxel_size.x)
    with mrcfile.new(out, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality_temsim"))
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=50, help="per epoch; 0 = the default rule")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    w = a.work
    w.mkdir(parents=True, exist_ok=True)
    t = {}
    t0 = time.perf_counter()
    mean_mrc(DATA / "rec_even.mrc", DATA / "rec_odd.mrc", w / "full.mrc")
    mean_mrc(DATA / "tilt_even.mrc", DATA / "tilt_odd.mrc", w / "tilt_full.mrc")
    convert(ConvertConfig(input=w / "full.mrc", output=w / "noisy.zarr", chunks=64, overwrite=True),
            show_progress=False)  # fmt: skip
    make_prior(
        PriorConfig(noisy=w / "noisy.zarr", output=w / "prior.zarr", method="tilt-series",
                    tilt_series=w / "tilt_full.mrc", tlt=DATA / "tilt.tlt", device=a.device,
                    overwrite=True),
        show_progress=False,
    )  # fmt: skip
    t["data + prior"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for method in ("scnet", "n2v"):
        t0 = time.perf_counter()
        prior = w / "prior.zarr" if method == "scnet" else None
        s = train(
            TrainConfig(noisy=w / "noisy.zarr", prior=prior,
                        out=w / f"run_{method}", method=method, patch_size=a.patch,
                        features=a.features, epochs=a.epochs, steps_per_epoch=a.steps or None,
                        device=a.device, overwrite=True),
        )  # fmt: skip
        t[f"train {method}"] = time.perf_counter() - t0
        print(f"{method}: trained {s['steps']} steps, {s['mean_step_seconds']:.2f} s/step, best "
              f"val {s['best_val']:.4g}", flush=True)  # fmt: skip
    cfg = EvaluateConfig(
        name=f"temsim: SC-Net {a.patch}³ x {a.features} features, {s['steps']} steps",
        noisy=w / "full.mrc", reference=DATA / "rec_clean.mrc", even=DATA / "rec_even.mrc",
        odd=DATA / "rec_odd.mrc", out_dir=w / "eval", chunks=64, device=a.device, overwrite=True,
        methods=[
            MethodSpec(name="noisy", method="none"),
            MethodSpec(name="gaussian σ 1.5", method="gaussian", sigma=1.5),
            MethodSpec(name="low-pass 40 Å", method="lowpass", cutoff_angstrom=40.0),
            MethodSpec(name="BM4D", method="bm4d", chunks=128),
            MethodSpec(name="Topaz 3-D", method="topaz-3d"),
            MethodSpec(name="Noise2Void", method="n2v", checkpoint=w / "run_n2v" / "best.pt"),
            MethodSpec(name="SC-Net", method="scnet", checkpoint=w / "run_scnet" / "best.pt"),
        ],
    )  # fmt: skip
    evaluate(cfg)
    print((w / "eval" / "results.md").read_text())
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items()))


if __name__ == "__main__":
    main()
