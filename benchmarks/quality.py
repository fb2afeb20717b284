"""The quality benchmark every method plugs into: PSNR, SSIM and r against a known reference.

Datasets (``--datasets``, default ``rec15``):
- ``temsim``: noisy = mean of ``rec_even`` and ``rec_odd`` (80 x 256 x 256, 10 Å), reference
  ``rec_clean``; tilt series = mean of the two dose halves;
- ``rec10``, ``rec15``, ``rec20``: ``scnet-dask simulate`` (the paper's §5.2: σ 2 ground truth,
  re-projection at -60:60:2, noise σ on projections scaled to [0, 255], WBP; seed 0) of
  ``temsim/rec_clean.mrc``; reference ``ground_truth``;
- ``mt10``, ``mt15``, ``mt20``: the same simulation of ``real/14pf_MT.tif``.

Rows (``--rows``, comma-separated; ``;`` separates rows that hold commas):
- ``noisy``; ``gaussian`` (the best σ of 0.5-3 voxels, picked against the reference: the oracle
  a method must beat); ``lowpass``; ``bm4d``; ``topaz-3d``;
- ``prior:KIND`` — a prior volume itself (``gaussian`` σ 1, ``topaz-3d``, ``tilt-series``);
- a trained method with options: ``scnet:prior=topaz-3d,prior_normalisation=affine,steps=800``.
  Keys ``steps``, ``patch``, ``features``, ``lr``, ``batch``, ``epochs`` and ``ckpt`` (``last`` or
  ``best``) set the run; ``post_sigma`` and ``passes`` the denoising; ``apply=halves`` (n2n)
  denoises each half with the model and averages them, instead of denoising the full volume;
  ``prior`` (scnet; optional for nmsg) picks the prior kind; ``label`` names the row; every
  other key is a method option.
  Defaults: 400 steps of 2 x 32³ patches, 16 features, lr 4e-4 (the CLI's) held constant
  (``lr_schedule=cosine`` for the decay that ``--lr-schedule auto`` gives SC-Net), the last
  checkpoint.
- ``--budget M`` (CPU minutes per training run) replaces ``steps`` by what fits: a 10-step probe
  measures the step time first.

Results are cached in ``WORK/results.json`` by dataset and row text, so a later call adds rows
(``--redo`` re-runs them); ``WORK/results.md`` holds one table per dataset, each row with its
settings, and ``WORK/slices_DATASET.png`` the central z-slice of every row.

    python benchmarks/quality.py --datasets rec15,temsim \
        --rows "noisy;gaussian;prior:topaz-3d;scnet:prior=topaz-3d"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from scnet_dask.commands.convert import convert
from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.prior import make_prior
from scnet_dask.commands.simulate import simulate
from scnet_dask.config import ConvertConfig, DenoiseConfig, PriorConfig, TrainConfig
from scnet_dask.engine.train import train
from scnet_dask.io import open_source
from scnet_dask.science.metrics import psnr, ssim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).parent))
from quality_temsim import mean_mrc  # type: ignore[import-not-found]  # noqa: E402

RUN_KEYS = {"steps", "patch", "features", "lr", "batch", "epochs", "ckpt", "label", "prior",
            "post_sigma", "passes", "apply"}  # fmt: skip


def _to_zarr(src: Path, out: Path) -> Path:
    if not out.exists():
        convert(ConvertConfig(input=src, output=out, chunks=64), show_progress=False)
    return out


def dataset(work: Path, name: str) -> dict[str, Path]:
    """Paths of one dataset: noisy, even, odd, reference, tilt series, tilt angles."""
    if name == "temsim":
        t, d = SHARED / "temsim", work / "temsim"
        d.mkdir(parents=True, exist_ok=True)
        if not (d / "noisy.mrc").exists():
            mean_mrc(t / "rec_even.mrc", t / "rec_odd.mrc", d / "noisy.mrc")
            mean_mrc(t / "tilt_even.mrc", t / "tilt_odd.mrc", d / "tilt.mrc")
        return {"noisy": _to_zarr(d / "noisy.mrc", d / "noisy.zarr"),
                "even": _to_zarr(t / "rec_even.mrc", d / "even.zarr"),
                "odd": _to_zarr(t / "rec_odd.mrc", d / "odd.zarr"),
                "reference": _to_zarr(t / "rec_clean.mrc", d / "reference.zarr"),
                "tilt_series": d / "tilt.mrc", "tlt": t / "tilt.tlt"}  # fmt: skip
    kind, sigma = name[:-2], name[-2:]
    src = {"rec": SHARED / "temsim" / "rec_clean.mrc", "mt": SHARED / "real" / "14pf_MT.tif"}
    if kind not in src or not sigma.isdigit():
        raise SystemExit(f"unknown dataset {name!r}: temsim, rec10/15/20 or mt10/15/20")
    sim = work / f"sim_{kind}"
    if not (sim / "manifest.json").exists():
        simulate(src[kind], sim, (10.0, 15.0, 20.0), "-60:60:2", 0, "zarr", True)
    return {"noisy": sim / f"rec_all_sigma{sigma}.ome.zarr",
            "even": sim / f"rec_even_sigma{sigma}.ome.zarr",
            "odd": sim / f"rec_odd_sigma{sigma}.ome.zarr",
            "reference": sim / "ground_truth.ome.zarr",
            "tilt_series": sim / f"tilt_sigma{sigma}.ome.zarr",
            "tlt": sim / "tilt.tlt"}  # fmt: skip


def scores(vol: Path, ref: Path) -> dict[str, float]:
    """PSNR and SSIM after the affine fit (``scnet_dask.science.metrics``), Pearson r."""
    a = np.asarray(open_source(vol).data, dtype=np.float32)
    b = np.asarray(open_source(ref).data, dtype=np.float32)
    r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {"psnr": psnr(a, b), "ssim": ssim(a, b), "corr": r}


def _denoise(inp: Path, out: Path, method: str, device: str, **kw: Any) -> float:
    t0 = time.perf_counter()
    denoise(DenoiseConfig.model_validate({"input": inp, "output": out, "method": method,
                                          "chunks": 128, "device": device, "overwrite": True,
                                          **kw}), show_progress=False)  # fmt: skip
    return time.perf_counter() - t0


def prior(kind: str, data: dict[str, Path], d: Path, device: str) -> tuple[Path, float]:
    """The prior volume of ``kind`` (made once per dataset) and the seconds it took."""
    out = d / f"prior_{kind}.zarr"
    if out.exists():
        return out, float(json.loads((d / f"prior_{kind}.json").read_text())["seconds"])
    cfg: dict[str, Any] = {"noisy": data["noisy"], "output": out, "method": kind, "device": device}
    if kind == "tilt-series":
        cfg.update(tilt_series=data["tilt_series"], tlt=data["tlt"])
    t0 = time.perf_counter()
    make_prior(PriorConfig.model_validate(cfg), show_progress=False)
    dt = time.perf_counter() - t0
    (d / f"prior_{kind}.json").write_text(json.dumps({"seconds": dt}))
    return out, dt


def oracle_gaussian(data: dict[str, Path], d: Path, device: str) -> dict[str, Any]:
    """The best σ Gaussian against the reference (σ 0.5 to 3 voxels)."""
    best: dict[str, Any] | None = None
    for sigma in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0):
        out = d / f"gauss_{sigma:g}.zarr"
        dt = _denoise(data["noisy"], out, "gaussian", device, sigma=sigma)
        sc = scores(out, data["reference"])
        if best is None or sc["psnr"] > best["psnr"]:
            best = {**sc, "infer_s": dt, "settings": f"σ {sigma:g}", "volume": str(out)}
    assert best is not None
    return best


def parse_row(row: str) -> tuple[str, dict[str, str]]:
    """``method:key=value,...`` -> (method, options as text)."""
    method, _, rest = row.partition(":")
    kv: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        k, eq, v = item.partition("=")
        if not eq:
            kv[k.strip()] = ""  # e.g. prior:topaz-3d
        else:
            kv[k.strip()] = v.strip()
    return method.strip(), kv


def _value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def steps_for_budget(cfg: dict[str, Any], minutes: float, d: Path) -> int:
    """Training steps that fit ``minutes`` of this machine, from a 10-step probe run."""
    probe = {**cfg, "out": d / "probe", "epochs": 1, "steps_per_epoch": 10, "val_patches": 0}
    s = train(TrainConfig.model_validate(probe), show_progress=False)
    return max(10, int(minutes * 60 / s["mean_step_seconds"]))


def trained_row(method: str, kv: dict[str, str], data: dict[str, Path], d: Path,
                a: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Train ``method`` with ``kv`` and denoise the noisy volume with its checkpoint."""
    run_kv = {k: _value(v) for k, v in kv.items() if k in RUN_KEYS}
    opts = {k: _value(v) for k, v in kv.items() if k not in RUN_KEYS}
    tag = "_".join(f"{k}-{v}" for k, v in sorted(kv.items()) if k != "label") or "default"
    # a run differing only in these is reused
    den_only = ("label", "post_sigma", "passes", "ckpt", "apply")
    run_tag = "_".join(f"{k}-{v}" for k, v in sorted(kv.items()) if k not in den_only)
    run = d / f"run_{method}_{run_tag or 'default'}"
    steps = int(run_kv.get("steps", a.steps))
    epochs = int(run_kv.get("epochs", 4))
    cfg: dict[str, Any] = {"noisy": data["even"] if method == "n2n" else data["noisy"],
                           "method": method, "patch_size": int(run_kv.get("patch", 32)),
                           "features": int(run_kv.get("features", 16)),
                           "batch_size": int(run_kv.get("batch", 2)),
                           "lr": float(run_kv.get("lr", 4e-4)), "lr_schedule": "constant",
                           "val_patches": 2,
                           "device": a.device, "overwrite": True, "plots": False, "seed": 0,
                           **opts}  # fmt: skip
    t_prior = 0.0
    if method == "scnet" or (method == "nmsg" and "prior" in run_kv):  # optional for nmsg
        cfg["prior"], t_prior = prior(str(run_kv.get("prior", "gaussian")), data, d, a.device)
    if method == "n2n":
        cfg["odd"] = data["odd"]
    if a.budget:
        steps = steps_for_budget(cfg, a.budget, d)
    cfg.update(epochs=epochs, steps_per_epoch=max(1, steps // epochs), out=run)
    done = run / "benchmark_train.json"
    if done.exists():
        s = json.loads(done.read_text())
        t_train = float(s["seconds"])
    else:
        t0 = time.perf_counter()
        s = train(TrainConfig.model_validate(cfg), show_progress=False)
        t_train = time.perf_counter() - t0
        done.write_text(json.dumps({"seconds": t_train, "steps": s["steps"],
                                    "mean_step_seconds": s["mean_step_seconds"]}))  # fmt: skip
    den: dict[str, Any] = {}
    if "post_sigma" in run_kv:
        den["post_sigma"] = float(run_kv["post_sigma"])
    if "passes" in run_kv:
        den["passes"] = int(run_kv["passes"])
    out = d / f"{method}_{tag}.zarr"
    ckpt = run / f"{run_kv.get('ckpt', 'last')}.pt"
    if run_kv.get("apply") == "halves":  # n2n: denoise each half, then average them
        if method != "n2n":
            raise SystemExit(f"apply=halves is for n2n rows, got {method}")
        t_inf, halves = 0.0, []
        for half in ("even", "odd"):
            p = d / f"{method}_{tag}_{half}.zarr"
            t_inf += _denoise(data[half], p, method, a.device, checkpoint=ckpt, **den)
            halves.append(open_source(p).data.astype(np.float32))
        t0 = time.perf_counter()
        da.to_zarr((halves[0] + halves[1]) / 2, str(out), overwrite=True)
        t_inf += time.perf_counter() - t0
    else:  # the full volume (for n2n: the mean of the halves)
        t_inf = _denoise(data["noisy"], out, method, a.device, checkpoint=ckpt, **den)
    skip = ("noisy", "odd", "out", "device", "overwrite", "plots", "prior")
    settings = {k: v for k, v in cfg.items() if k not in skip}
    settings.update(steps=s["steps"], **den)
    if "prior" in cfg:
        settings["prior"] = str(run_kv.get("prior", "gaussian"))
    return {**scores(out, data["reference"]), "train_s": t_train, "prior_s": t_prior,
            "infer_s": t_inf, "s_per_step": s["mean_step_seconds"], "volume": str(out),
            "settings": json.dumps(settings)}  # fmt: skip


def run_row(row: str, data: dict[str, Path], d: Path, a: argparse.Namespace) -> dict[str, Any]:
    """One row of the table."""
    method, kv = parse_row(row)
    if method == "noisy":
        return {**scores(data["noisy"], data["reference"]), "volume": str(data["noisy"])}
    if method == "gaussian" and not kv:
        return oracle_gaussian(data, d, a.device)
    if method == "prior":
        kind = next(iter(kv))
        p, dt = prior(kind, data, d, a.device)
        return {**scores(p, data["reference"]), "prior_s": dt, "volume": str(p)}
    if method in ("lowpass", "bm4d", "topaz-3d"):
        out = d / f"{method}.zarr"
        dt = _denoise(data["noisy"], out, method, a.device, **{k: _value(v) for k, v in kv.items()})
        return {**scores(out, data["reference"]), "infer_s": dt, "volume": str(out),
                "settings": json.dumps(kv) if kv else ""}  # fmt: skip
    return trained_row(method, kv, data, d, a)


def table(results: dict[str, Any]) -> str:
    """Markdown: one table per dataset."""
    lines: list[str] = []
    for ds, rows in results.items():
        lines += [f"### {ds}", "", "| row | PSNR (dB) | SSIM | r | prior (s) | train (s) | "
                  "denoise (s) | settings |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in rows.items():
            label = r.get("label") or name
            lines.append(f"| {label} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['corr']:.3f} | "
                         f"{r.get('prior_s', 0):.0f} | {r.get('train_s', 0):.0f} | "
                         f"{r.get('infer_s', 0):.1f} | {r.get('settings', '')} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def figure(ds: str, rows: dict[str, Any], path: Path) -> None:
    """Central z-slice of every row (same grey scale after the affine fit to the reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = [(r.get("label") or n, r["volume"]) for n, r in rows.items() if "volume" in r]
    if not vols:
        return
    ref = np.asarray(open_source(vols[0][1]).data, dtype=np.float32)
    fig, axes = plt.subplots(1, len(vols), figsize=(2.2 * len(vols), 2.6), squeeze=False)
    for ax, (name, v) in zip(axes[0], vols, strict=True):
        x = np.asarray(open_source(v).data[ref.shape[0] // 2], dtype=np.float32)
        lo, hi = np.percentile(x, [1, 99])
        ax.imshow(x, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name[:28], fontsize=6)
        ax.axis("off")
    fig.suptitle(ds, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("quality"))
    ap.add_argument("--datasets", default="rec15")
    ap.add_argument("--rows", default="noisy;gaussian;prior:gaussian;scnet",
                    help="';'-separated rows (see above)")
    ap.add_argument("--steps", type=int, default=400, help="training steps of a trained row")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="CPU minutes per training run (replaces --steps)")
    ap.add_argument("--redo", action="store_true", help="re-run rows already in results.json")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    path = a.work / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    rows = [r.strip() for r in a.rows.split(";") if r.strip()]
    for ds in a.datasets.split(","):
        data = dataset(a.work, ds)
        d = a.work / ds
        d.mkdir(parents=True, exist_ok=True)
        res = results.setdefault(ds, {})
        for row in rows:
            if row in res and not a.redo:
                continue
            print(f"{ds}: {row} ...", flush=True)
            res[row] = run_row(row, data, d, a)
            label = parse_row(row)[1].get("label")
            if label:
                res[row]["label"] = label
            r = res[row]
            print(f"  PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} r {r['corr']:.3f}", flush=True)
            path.write_text(json.dumps(results, indent=1))
        figure(ds, {k: v for k, v in res.items() if k in rows}, a.work / f"slices_{ds}.png")
    (a.work / "results.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
