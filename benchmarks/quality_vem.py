"""Volume EM "fast scan, AI restore": restoration of simulated fast scans of a real ssTEM stack.

Data: ``../shared/data/vem/isbi2012_train_volume.tif`` (30 x 512 x 512, uint8, 4 x 4 nm pixels,
50 nm sections) is the **slow** scan. Fast scans at 4x and 8x shorter dwell come from the
documented physical model :func:`scnet_dask.science.fastscan.fast_scan` (Poisson shot noise with
``--n-slow`` electrons at full scale for the slow dwell (256: fast scans of 21 / 18 dB PSNR at
4x / 8x), read noise 2 % of full scale, scan blur
σ 0.5 px along x, 8-bit quantisation; seed 0). Rows 0-383 (y) of every section are the
training part, rows 384-511 the held-back test part; every method is scored on the test part
against the slow scan: PSNR (data range 255, no fit: outputs are in the slow scan's units) and
SSIM (2-D per section, data range 255, mean).

Rows: noisy; best-σ 2-D Gaussian (σ picked against the slow scan on the test part: an oracle);
BM4D (``--method bm4d`` defaults); N2V and SC-Net (3-D U-Net, cubic 16³ patches: the stack is 30
sections deep; SC-Net with a σ 1 Gaussian prior); vem-n2n (2.5-D, sub-lattice pairs);
vem-n2n with lattice inference (``--scale lattice``: the network on each 2x2 sub-lattice, the
scale it was trained at); supervised 2.5-D (MSE and L1 + (1 − SSIM)) and 3-D (fast → slow).
Training budgets are in steps (``--steps``).

    python benchmarks/quality_vem.py [--work DIR] [--steps 1500] [--speedups 4,8]
        [--methods ...] [--device auto]

Writes ``WORK/results.md``, ``WORK/results.json`` and ``WORK/slices_<speedup>x.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from skimage.metrics import structural_similarity

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.prior import make_prior
from scnet_dask.config import ConvertConfig, DenoiseConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.io import open_source
from scnet_dask.science.fastscan import fast_scan

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLIT_Y = 384
VOXEL = (500.0, 40.0, 40.0)


def to_zarr(data: np.ndarray, out: Path) -> Path:
    if not out.exists():
        tif = out.with_suffix(".tif")
        tifffile.imwrite(tif, data, photometric="minisblack")
        convert(ConvertConfig(input=tif, output=out, chunks=64, dtype="source",
                              voxel_size=VOXEL), show_progress=False)  # fmt: skip
        tif.unlink()
    return out


def scores(out: Path, slow: np.ndarray) -> dict[str, float]:
    a = np.asarray(open_source(out).data, dtype=np.float64)
    ref = slow.astype(np.float64)
    mse = float(np.mean((a - ref) ** 2))
    ss = [structural_similarity(a[i], ref[i], data_range=255.0) for i in range(len(a))]
    return {"psnr": 10 * np.log10(255.0**2 / mse), "ssim": float(np.mean(ss))}


def oracle_gaussian(noisy: Path, slow: np.ndarray, d: Path) -> tuple[float, dict[str, Any]]:
    best: tuple[float, dict[str, Any]] | None = None
    for sigma in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0):
        out = d / f"gauss_{sigma:g}.zarr"
        t0 = time.perf_counter()
        denoise(DenoiseConfig.model_validate({"input": noisy, "output": out, "method": "gaussian",
                                              "sigma": sigma, "sigma_z": 0.0, "chunks": 64,
                                              "overwrite": True}), show_progress=False)  # fmt: skip
        row = {**scores(out, slow), "train_s": 0.0, "infer_s": time.perf_counter() - t0}
        if best is None or row["psnr"] > best[1]["psnr"]:
            best = (sigma, row)
    assert best is not None
    return best


def method_configs(name: str, data: dict[str, Path], a: argparse.Namespace) -> dict[str, Any]:
    f = a.features
    vem = {"lr": 1e-3, "beta1": 0.9, "loss": a.loss}
    if name == "supervised-2.5d":
        return {"method": "supervised", "noisy": data["fast_train"], "target": data["slow_train"],
                "network": "2.5d", "slices": 5, "features": f, "patch_size": 64, **vem}  # fmt: skip
    if name == "supervised-2.5d-l1ssim":
        return {**method_configs("supervised-2.5d", data, a), "loss": "l1+ssim"}
    if name == "supervised-3d":
        return {"method": "supervised", "noisy": data["fast_train"], "target": data["slow_train"],
                "network": "3d", "features": f, "patch_size": 64, "patch_depth": 16,
                **vem}  # fmt: skip
    if name == "vem-n2n":
        return {"method": "vem-n2n", "noisy": data["fast_train"], "network": "2.5d", "slices": 5,
                "features": f, "patch_size": 128, **vem}  # fmt: skip
    if name == "n2v":
        return {"method": "n2v", "noisy": data["fast_train"], "features": f, "upsample": False,
                "patch_size": 16}  # fmt: skip
    if name == "scnet":
        return {"method": "scnet", "noisy": data["fast_train"], "prior": data["prior_train"],
                "features": f, "upsample": False, "patch_size": 16}  # fmt: skip
    raise ValueError(f"unknown row {name}")


def run_method(name: str, data: dict[str, Path], slow: np.ndarray, d: Path,
               a: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    out = d / f"{name}.zarr"
    if name == "bm4d":
        t0 = time.perf_counter()
        denoise(DenoiseConfig.model_validate({"input": data["fast_test"], "output": out,
                                              "method": "bm4d", "chunks": 128,
                                              "overwrite": True}), show_progress=False)  # fmt: skip
        return {**scores(out, slow), "train_s": 0.0, "infer_s": time.perf_counter() - t0}
    if name == "vem-n2n-lattice":  # the vem-n2n network at its training scale
        t0 = time.perf_counter()
        denoise(DenoiseConfig.model_validate({"input": data["fast_test"], "output": out,
                                              "checkpoint": d / "run_vem-n2n" / "best.pt",
                                              "method": "vem-n2n", "scale": "lattice",
                                              "chunks": 128, "device": a.device,
                                              "overwrite": True}), show_progress=False)  # fmt: skip
        return {**scores(out, slow), "train_s": 0.0, "infer_s": time.perf_counter() - t0}
    cfg = method_configs(name, data, a)
    steps = a.steps
    common = {"batch_size": 4, "epochs": 5, "steps_per_epoch": max(1, steps // 5),
              "val_patches": 4, "device": a.device, "overwrite": True, "plots": False,
              "seed": 0}  # fmt: skip
    run = d / f"run_{name}"
    t0 = time.perf_counter()
    s = train(TrainConfig.model_validate({**common, **cfg, "out": run}), show_progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    denoise(DenoiseConfig.model_validate({"input": data["fast_test"], "output": out,
                                          "checkpoint": run / "best.pt", "method": cfg["method"],
                                          "chunks": 128, "device": a.device,
                                          "overwrite": True}), show_progress=False)  # fmt: skip
    t_inf = time.perf_counter() - t0
    settings = {k: (v if not isinstance(v, Path) else v.name) for k, v in cfg.items()}
    return {**scores(out, slow), "train_s": t_train, "infer_s": t_inf, "steps": s["steps"],
            "s_per_step": s["mean_step_seconds"], "settings": settings}  # fmt: skip


def slice_figure(paths: dict[str, Path], slow: np.ndarray, png: Path, z: int = 15) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * (len(paths) + 1), 4.4))
    axes = fig.subplots(1, len(paths) + 1)
    for ax, (label, p) in zip(axes, paths.items(), strict=False):
        ax.imshow(np.asarray(open_source(p).data[z]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(label)
        ax.axis("off")
    axes[-1].imshow(slow[z], cmap="gray", vmin=0, vmax=255)
    axes[-1].set_title("slow scan (reference)")
    axes[-1].axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality_vem"))
    ap.add_argument("--steps", type=int, default=1000, help="training steps per method")
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--speedups", default="4,8")
    ap.add_argument("--n-slow", type=float, default=256.0,
                    help="electrons at full scale at the slow dwell")
    ap.add_argument("--loss", default="mse", help="loss of the vEM methods (supervised, vem-n2n)")
    ap.add_argument("--methods", default="supervised-2.5d,supervised-2.5d-l1ssim,supervised-3d,"
                    "vem-n2n,vem-n2n-lattice,n2v,scnet,bm4d")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    slow = tifffile.imread(SHARED / "vem" / "isbi2012_train_volume.tif")
    slow_test = slow[:, SPLIT_Y:]
    results_path = a.work / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    for f in (float(s) for s in a.speedups.split(",")):
        tag = f"{f:g}x"
        d = a.work / tag
        d.mkdir(parents=True, exist_ok=True)
        fast = fast_scan(slow, f, n_slow=a.n_slow, seed=0)
        data = {
            "fast_train": to_zarr(fast[:, :SPLIT_Y], d / "fast_train.zarr"),
            "fast_test": to_zarr(fast[:, SPLIT_Y:], d / "fast_test.zarr"),
            "slow_train": to_zarr(slow[:, :SPLIT_Y], d / "slow_train.zarr"),
        }
        if "scnet" in a.methods:
            prior = d / "prior_train.zarr"
            if not prior.exists():
                make_prior(PriorConfig(noisy=data["fast_train"], output=prior, sigma=1.0))
            data["prior_train"] = prior
        rows = results.setdefault(tag, {})
        rows["noisy"] = {**scores(data["fast_test"], slow_test), "train_s": 0.0, "infer_s": 0.0}
        sigma, row = oracle_gaussian(data["fast_test"], slow_test, d)
        rows[f"best-σ 2-D Gaussian (σ {sigma:g} px)"] = row
        for m in a.methods.split(","):
            print(f"{tag}: {m} ...", flush=True)
            rows[m] = run_method(m, data, slow_test, d, a)
            results_path.write_text(json.dumps(results, indent=1, default=str))
        trained = [m for m in a.methods.split(",") if m not in ("bm4d", "vem-n2n-lattice")]
        best = max(trained, key=lambda m: rows[m]["psnr"]) if trained else None
        panels = {f"fast scan {tag}": data["fast_test"]}
        if best:
            panels[best] = d / f"{best}.zarr"
        slice_figure(panels, slow_test, a.work / f"slices_{tag}.png")
    lines = [f"Fast-scan model: n_slow {a.n_slow:g} e at full scale, read noise 2 %, blur 0.5 px; "
             f"train rows 0-{SPLIT_Y - 1}, test rows {SPLIT_Y}-511; {a.steps} training steps "
             f"(batch 4), features {a.features}; vEM methods: loss {a.loss} (unless named), "
             "Adam lr 1e-3, β1 0.9; n2v and scnet: their defaults.", ""]  # fmt: skip
    for tag, rows in results.items():
        lines += [f"### {tag} faster scan", "",
                  "| method | PSNR (dB) | SSIM | train (s) | denoise (s) | slices/s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in rows.items():
            rate = 30 / r["infer_s"] if r["infer_s"] else float("nan")
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['train_s']:.0f} | "
                         f"{r['infer_s']:.1f} | {rate:.2f} |")  # fmt: skip
        lines.append("")
    (a.work / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
