"""The Noise2Noise family against the noisy input and the oracle Gaussian, on two datasets.

Datasets:
- ``temsim``: noisy = mean of ``rec_even`` and ``rec_odd`` (80 x 256 x 256, 10 Å), reference
  ``rec_clean``; n2n trains on the two halves;
- ``mt15`` (and ``mt10``, ``mt20`` with ``--sigmas``): ``scnet-dask simulate`` of
  ``real/14pf_MT.tif`` at noise σ 15 (seed 0): noisy ``rec_all``, reference ``ground_truth``,
  n2n on ``rec_even``/``rec_odd``.

Rows: noisy; the best-σ Gaussian (σ picked against the reference from 0.5-3 voxels: the oracle a
method must beat); n2n (even/odd); s2s; fourier-n2n. Columns: PSNR and SSIM after the affine fit
(``scnet_dask.science.metrics``), Pearson correlation with the reference, training and inference
wall
time. Training budgets are steps (CPU-sized by default); ``--steps`` scales all of them.

    python benchmarks/quality_n2n.py [--work DIR] [--steps 400] [--sigmas 15] [--device auto]

Writes ``WORK/results.md`` (one table per dataset) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.simulate import simulate
from scnet_dask.config import ConvertConfig, DenoiseConfig, SimulateConfig, TrainConfig
from scnet_dask.engine.train import train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
from quality import scores  # type: ignore[import-not-found]  # noqa: E402
from quality_temsim import mean_mrc  # type: ignore[import-not-found]  # noqa: E402


def to_zarr(src: Path, out: Path) -> Path:
    if not out.exists():
        convert(ConvertConfig(input=src, output=out, chunks=64), show_progress=False)
    return out


def datasets(work: Path, sigmas: list[float]) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    t = SHARED / "temsim"
    d = work / "temsim"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "noisy.mrc").exists():
        mean_mrc(t / "rec_even.mrc", t / "rec_odd.mrc", d / "noisy.mrc")
    out["temsim"] = {
        "noisy": to_zarr(d / "noisy.mrc", d / "noisy.zarr"),
        "even": to_zarr(t / "rec_even.mrc", d / "even.zarr"),
        "odd": to_zarr(t / "rec_odd.mrc", d / "odd.zarr"),
        "reference": t / "rec_clean.mrc",
    }
    sim = work / "mt_sim"
    if not (sim / "manifest.json").exists():
        levels = ",".join(f"{s:g}" for s in sigmas)
        cfg = SimulateConfig(volume=SHARED / "real" / "14pf_MT.tif", out_dir=sim,
                             noise_sigma=levels, overwrite=True)  # fmt: skip
        simulate(cfg.volume, cfg.out_dir, cfg.sigmas(), cfg.tilts, cfg.seed, "zarr", True)
    for s in sigmas:
        tag = f"{s:g}"
        out[f"mt{tag}"] = {
            "noisy": sim / f"rec_all_sigma{tag}.ome.zarr",
            "even": sim / f"rec_even_sigma{tag}.ome.zarr",
            "odd": sim / f"rec_odd_sigma{tag}.ome.zarr",
            "reference": sim / "ground_truth.ome.zarr",
        }
    return out


def oracle_gaussian(noisy: Path, ref: Path, d: Path) -> tuple[float, dict[str, float], float]:
    best: tuple[float, dict[str, float], float] | None = None
    for sigma in (0.5, 0.75, 1.0, 1.5, 2.0, 3.0):
        out = d / f"gauss_{sigma:g}.zarr"
        t0 = time.perf_counter()
        denoise(DenoiseConfig.model_validate({"input": noisy, "output": out, "method": "gaussian",
                                              "sigma": sigma, "chunks": 64, "overwrite": True}),
                show_progress=False)  # fmt: skip
        dt = time.perf_counter() - t0
        sc = scores(out, ref)
        if best is None or sc["psnr"] > best[1]["psnr"]:
            best = (sigma, sc, dt)
    assert best is not None
    return best


def run_method(name: str, data: dict[str, Path], d: Path, a: argparse.Namespace) -> dict[str, Any]:
    steps = a.steps
    common = {"patch_size": a.patch, "batch_size": 2, "epochs": 4, "steps_per_epoch": steps // 4,
              "val_patches": 2, "device": a.device, "overwrite": True, "plots": False,
              "lr": 1e-3, "seed": 0}  # fmt: skip
    if name == "n2n":
        cfg = {"noisy": data["even"], "odd": data["odd"], "method": "n2n",
               "features": a.features}  # fmt: skip
        den_opts: dict[str, Any] = {}
    elif name == "s2s":
        cfg = {"noisy": data["noisy"], "method": "s2s", "features": a.features, "depth": 3,
               "dropout": 0.5, "mask_p": 0.5, "masks_per_patch": 3}  # fmt: skip
        den_opts = {"passes": a.passes, "pass_batch": 8}
    else:
        cfg = {"noisy": data["noisy"], "method": "fourier-n2n", "features": a.features,
               "depth": 3, "dropout": 0.8, "pool_size": 12, "pairs": 3}  # fmt: skip
        den_opts = {"versions": 4, "passes": max(1, a.passes // 4)}
    run = d / f"run_{name}"
    t0 = time.perf_counter()
    s = train(TrainConfig.model_validate({**common, **cfg, "out": run}), show_progress=False)
    t_train = time.perf_counter() - t0
    out = d / f"{name}.zarr"
    t0 = time.perf_counter()
    denoise(DenoiseConfig.model_validate({"input": data["noisy"], "output": out,
                                          "checkpoint": run / "best.pt", "method": cfg["method"],
                                          "chunks": a.chunks, "device": a.device, "overwrite": True,
                                          **den_opts}), show_progress=False)  # fmt: skip
    t_inf = time.perf_counter() - t0
    return {"train_s": t_train, "infer_s": t_inf, "steps": s["steps"],
            "s_per_step": s["mean_step_seconds"], **scores(out, data["reference"]),
            "settings": {**cfg, **den_opts, "patch": a.patch}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality_n2n"))
    ap.add_argument("--steps", type=int, default=400, help="training steps per method")
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--passes", type=int, default=8, help="s2s passes (fourier: passes/4 x 4)")
    ap.add_argument("--chunks", type=int, default=128, help="denoise tile core (voxels)")
    ap.add_argument("--sigmas", default="15", help="noise levels of the 14pf_MT simulation")
    ap.add_argument("--datasets", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--methods", default="n2n,s2s,fourier-n2n")
    ap.add_argument("--label-steps", action="store_true",
                    help="name rows 'method (N steps)', to add budget points to a table")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    sets = datasets(a.work, [float(s) for s in a.sigmas.split(",")])
    if a.datasets:
        sets = {k: v for k, v in sets.items() if k in a.datasets.split(",")}
    results_path = a.work / "results.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    for ds, data in sets.items():
        d = a.work / ds
        d.mkdir(parents=True, exist_ok=True)
        rows = results.setdefault(ds, {})
        rows["noisy"] = {**scores(data["noisy"], data["reference"]), "train_s": 0, "infer_s": 0}
        sigma, sc, dt = oracle_gaussian(data["noisy"], data["reference"], d)
        rows[f"best-σ Gaussian (σ {sigma:g})"] = {**sc, "train_s": 0, "infer_s": dt}
        for m in a.methods.split(","):
            print(f"{ds}: {m} ...", flush=True)
            key = f"{m} ({a.steps} steps)" if a.label_steps else m
            rows[key] = run_method(m, data, d, a)
            results_path.write_text(json.dumps(results, indent=1, default=str))
        results_path.write_text(json.dumps(results, indent=1, default=str))
    lines = []
    for ds, rows in results.items():
        lines += [f"### {ds}", "", "| method | PSNR (dB) | SSIM | r | train (s) | denoise (s) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in rows.items():
            lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['corr']:.3f} | "
                         f"{r['train_s']:.0f} | {r['infer_s']:.1f} |")  # fmt: skip
        lines.append("")
    (a.work / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
