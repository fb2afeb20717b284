"""``evaluate``: run several methods on one dataset and tabulate the evidence.

For every method the noisy volume (and the even/odd halves, when given) go through
``denoise`` (the same tiled path for SC-Net and every baseline); then PSNR/SSIM against the
reference (after a scale-and-offset fit, see :mod:`scnet_dask.science.metrics`) and the FSC_e/o
resolution of the denoised halves at 0.5 and 0.143. Writes ``results.csv``, ``results.md`` (a
table like the paper's Tables 1-3), ``fsc.png`` and ``slices.png`` (noisy | each method |
reference, central z slice).
"""

from __future__ import annotations

import csv
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
from matplotlib.figure import Figure
from pydantic import ConfigDict, Field, ValidationError, model_validator
from tqdm import tqdm

from scnet_dask.commands.denoise import denoise
from scnet_dask.config import (
    DenoiseConfig,
    Device,
    StrictModel,
    format_validation_error,
    load_yaml,
    method_options,
)
from scnet_dask.errors import InputError
from scnet_dask.io import open_source
from scnet_dask.io._atomic import refuse_overlap
from scnet_dask.methods import get
from scnet_dask.science.metrics import fsc, fsc_eo, psnr, resolution_angstrom, ssim

__all__ = ["EvaluateConfig", "MethodSpec", "evaluate"]


class MethodSpec(StrictModel):
    """One row of the table: a name and the ``denoise`` options that produce it.

    Besides the keys below, a row takes its method's own denoise options (``sigma`` for
    ``gaussian``, ``cutoff_angstrom`` for ``lowpass``, ``noise_sigma`` for ``bm4d``, ...),
    validated by that method (see :mod:`scnet_dask.methods`); ``none`` is the input itself.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    name: str = Field(description="Row label.")
    method: str = Field(description="'none' or a registered method.")
    checkpoint: Path | None = Field(None, description="best.pt, for trained methods.")
    checkpoint_even: Path | None = Field(
        None,
        description="A model trained on the even half only, to denoise the odd half "
        "for FSC_e/o (with checkpoint_odd); default: checkpoint for both (biased).",
    )
    checkpoint_odd: Path | None = Field(
        None, description="A model trained on the odd half only, to denoise the even half."
    )
    halo: int | Literal["auto"] = Field("auto", description="Tile halo in voxels, or auto.")
    chunks: int | None = Field(None, description="this method's tile core; default: the config's")
    train: dict[str, Any] | None = Field(
        None,
        description="score / denoise --method auto only: train this method here, a short "
        "recipe (steps, patch_size, batch_size, lr, seed, the method's training options, "
        "prior: a candidate's name or best), scored by region-split models.",
    )

    @model_validator(mode="after")
    def _method_options(self) -> MethodSpec:
        extra = dict(self.model_extra or {})
        if self.method == "none":
            if extra:
                raise ValueError(f"method none takes no options, got {sorted(extra)}")
            return self
        method_options(self.method, "denoise", extra)
        return self

    def options(self) -> dict[str, Any]:
        """The method's own denoise options given in this row."""
        return dict(self.model_extra or {})


class EvaluateConfig(StrictModel):
    """The YAML file of ``scnet-dask evaluate``."""

    name: str = "dataset"
    noisy: Path
    reference: Path | None = None
    even: Path | None = None
    odd: Path | None = None
    fsc_region: list[tuple[int, int]] | None = Field(
        None, description="[[z0, z1], [y0, y1], [x0, x1]] sub-volume for the FSC"
    )
    methods: list[MethodSpec]
    out_dir: Path
    chunks: int = 64
    device: Device = "auto"
    overwrite: bool = False

    @model_validator(mode="after")
    def _no_training(self) -> EvaluateConfig:
        trained = [m.name for m in self.methods if m.train is not None]
        if trained:
            raise ValueError(f"method {trained[0]!r}: 'train:' applies to score candidates "
                             "only; evaluate takes checkpoints")  # fmt: skip
        return self


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "method"


def _run(
    m: MethodSpec, src: Path, out: Path, cfg: EvaluateConfig, checkpoint: Path | None = None
) -> Path:
    if m.method == "none":
        return src
    dc = DenoiseConfig(
        input=src, output=out, checkpoint=checkpoint or m.checkpoint, method=m.method,
        halo=m.halo,
        chunks=m.chunks or cfg.chunks, device=cfg.device, overwrite=True, **m.options(),
    )  # fmt: skip
    denoise(dc, show_progress=False)
    return out


def _lazy(path: Path) -> da.Array:
    """The volume as a lazy float32 dask array: metrics stream it, nothing is loaded whole."""
    return open_source(path).data.astype(np.float32)


def _mid_slice(vol: da.Array) -> np.ndarray:
    return np.asarray(vol[vol.shape[0] // 2].compute())


_MARKER = ".scnet-evaluate"


def _validate(cfg: EvaluateConfig) -> tuple[float, float, float]:
    """Open every volume and check grids, methods and checkpoints; the noisy voxel size (Å).

    Raises
    ------
    InputError
        Naming the file: a volume that cannot be opened, one on another grid than the noisy
        volume, a missing checkpoint.

    """
    noisy = open_source(cfg.noisy)
    shape = tuple(noisy.data.shape)
    for path in (cfg.reference, cfg.even, cfg.odd):
        if path is None:
            continue
        refuse_overlap(cfg.out_dir, path)
        other = tuple(open_source(path).data.shape)
        if other != shape:
            raise InputError(
                f"{path}: grid {other} differs from the noisy volume's {shape} ({cfg.noisy})"
            )
    refuse_overlap(cfg.out_dir, cfg.noisy)
    slugs: dict[str, str] = {}
    for m in cfg.methods:
        slug = _slug(m.name)
        if slug in slugs:
            raise InputError(
                f"method rows {slugs[slug]!r} and {m.name!r} would write the same files "
                f"({slug}*); rename one"
            )
        slugs[slug] = m.name
    for m in cfg.methods:
        if m.method == "none":
            continue
        if get(m.method).trains and (m.checkpoint is None or not Path(m.checkpoint).is_file()):
            raise InputError(f"{m.checkpoint}: no such checkpoint for method row {m.name!r}")
        halves = (m.checkpoint_even, m.checkpoint_odd)
        if (halves[0] is None) != (halves[1] is None):
            raise InputError(
                f"method row {m.name!r}: give both checkpoint_even and checkpoint_odd, or neither"
            )
        for ck in halves:
            if ck is not None and not Path(ck).is_file():
                raise InputError(f"{ck}: no such checkpoint for method row {m.name!r}")
    return noisy.voxel_size_angstrom


def evaluate(cfg: EvaluateConfig, show_progress: bool = True) -> list[dict[str, Any]]:
    """Run every method of ``cfg`` and write the tables and figures into ``cfg.out_dir``.

    Returns
    -------
    list of dict
        One row per method: name, method, seconds, psnr_db, ssim, res_05_angstrom,
        res_0143_angstrom (NaN where the dataset lacks a reference or halves).

    """
    if not cfg.methods:
        raise InputError("evaluate: the config lists no methods")
    if (cfg.even is None) != (cfg.odd is None):
        raise InputError("evaluate: give both even and odd halves, or neither")
    out = Path(cfg.out_dir)
    vox = _validate(cfg)  # every input, before anything runs or is written
    ours = out / _MARKER
    if out.exists() and any(out.iterdir()) and not cfg.overwrite and not ours.exists():
        raise InputError(
            f"{out}: output folder is not empty and was not made by evaluate; set overwrite: true"
        )
    (out / "volumes").mkdir(parents=True, exist_ok=True)
    ours.write_text("made by scnet-dask evaluate; a rerun replaces its results\n")
    region = tuple(slice(a, b) for a, b in cfg.fsc_region) if cfg.fsc_region else None
    ref = _lazy(cfg.reference) if cfg.reference else None
    rows: list[dict[str, Any]] = []
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    mids: dict[str, np.ndarray] = {}
    jobs = len(cfg.methods) * (3 if cfg.even else 1)
    bar = tqdm(total=jobs, desc=f"evaluate {cfg.name}", file=sys.stderr, disable=not show_progress)
    for m in cfg.methods:
        slug = _slug(m.name)
        t0 = time.perf_counter()
        den = _run(m, Path(cfg.noisy), out / "volumes" / f"{slug}.zarr", cfg)
        seconds = time.perf_counter() - t0 if m.method != "none" else 0.0
        bar.update(1)
        vol = _lazy(den)
        mids[m.name] = _mid_slice(vol)
        row: dict[str, Any] = {"name": m.name, "method": m.method, "seconds": seconds}
        row["fsc_note"] = _fsc_note(m)
        row["psnr_db"] = psnr(vol, ref) if ref is not None else float("nan")
        row["ssim"] = ssim(vol, ref) if ref is not None else float("nan")
        row["res_05_angstrom"] = row["res_0143_angstrom"] = float("nan")
        if cfg.even is not None and cfg.odd is not None:
            # per-half models: each half is denoised by the model that never saw it
            e = _run(m, Path(cfg.even), out / "volumes" / f"{slug}_even.zarr", cfg,
                     m.checkpoint_odd)  # fmt: skip
            bar.update(1)
            o = _run(m, Path(cfg.odd), out / "volumes" / f"{slug}_odd.zarr", cfg,
                     m.checkpoint_even)  # fmt: skip
            bar.update(1)
            f, c = fsc(_lazy(e), _lazy(o), vox, region=region)
            ceo = fsc_eo(c)
            curves[m.name] = (f, ceo)
            row["res_05_angstrom"] = resolution_angstrom(f, ceo, 0.5)
            row["res_0143_angstrom"] = resolution_angstrom(f, ceo, 0.143)
        rows.append(row)
    bar.close()
    _write_tables(rows, out, cfg)
    _plots(curves, mids, _mid_slice(ref) if ref is not None else None, out)
    return rows


def _fsc_note(m: MethodSpec) -> str:
    """What the row's FSC_e/o can mean: ``""``, ``"linear"`` or ``"biased"``."""
    if m.method in ("gaussian", "lowpass"):
        return "linear"
    if m.method != "none" and get(m.method).trains and m.checkpoint_even is None:
        return "biased"
    return ""


_FSC_NOTES = {
    "linear": "¹ a linear, isotropic filter multiplies both halves' spectra by the same "
    "factor in each shell, so it cannot change FSC_e/o (differences come from the mask and "
    "the borders).",
    "biased": "² one model denoised both halves after training on data that holds both: "
    "its FSC_e/o is biased upwards (shared noise can be learnt). Give checkpoint_even and "
    "checkpoint_odd (one model per half) for an unbiased column.",
}


def _write_tables(rows: list[dict[str, Any]], out: Path, cfg: EvaluateConfig) -> None:
    keys = ["name", "method", "seconds", "psnr_db", "ssim", "res_05_angstrom", "res_0143_angstrom",
            "fsc_note"]  # fmt: skip
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)

    def fmt(v: float, d: int) -> str:
        if v != v:  # NaN: not measured (no reference, no halves)
            return "–"
        if v == float("inf"):  # the FSC is below the threshold from its first shell
            return "none"
        return f"{v:.{d}f}"

    lines = [
        f"### {cfg.name}",
        "",
        "| method | PSNR (dB) | SSIM | FSC_e/o 0.5 (Å) | FSC_e/o 0.143 (Å) | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    marks = {"linear": " ¹", "biased": " ²", "": ""}
    for r in rows:
        mark = marks[r.get("fsc_note", "")] if r["res_05_angstrom"] == r["res_05_angstrom"] else ""
        lines.append(
            f"| {r['name']}{mark} | {fmt(r['psnr_db'], 2)} | {fmt(r['ssim'], 4)} | "
            f"{fmt(r['res_05_angstrom'], 1)} | {fmt(r['res_0143_angstrom'], 1)} | "
            f"{fmt(r['seconds'], 1)} |"
        )
    if any(r["res_05_angstrom"] == float("inf") or r["res_0143_angstrom"] == float("inf")
           for r in rows):  # fmt: skip
        lines += ["", 'FSC_e/o "none": the curve is below the threshold from its first shell.']
    used = {r.get("fsc_note", "") for r in rows if r["res_05_angstrom"] == r["res_05_angstrom"]}
    notes = [_FSC_NOTES[k] for k in ("linear", "biased") if k in used]
    if notes:
        lines += ["", *notes]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def _plots(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    mids: dict[str, np.ndarray],
    ref_mid: np.ndarray | None,
    out: Path,
) -> None:

    if curves:
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for name, (f, c) in curves.items():
            ax.plot(f, c, label=name, lw=1.2)
        for t in (0.5, 0.143):
            ax.axhline(t, color="grey", lw=0.6, ls="--")
        ax.set_xlabel("spatial frequency (1/Å)")
        ax.set_ylabel("FSC_e/o")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "fsc.png", dpi=110)
    panels = list(mids.items()) + ([("reference", ref_mid)] if ref_mid is not None else [])
    fig = Figure(figsize=(2.6 * len(panels), 2.8))
    axes = fig.subplots(1, len(panels))
    for ax, (name, img) in zip(np.atleast_1d(axes), panels, strict=True):
        lo, hi = np.percentile(img, (1, 99))
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "slices.png", dpi=110)


def load_config(path: str | Path) -> EvaluateConfig:
    """Read and validate an evaluate YAML file (paths relative to the file's folder)."""
    p = Path(path)
    data = load_yaml(p)
    for key in ("noisy", "reference", "even", "odd", "out_dir"):
        if data.get(key) and not Path(str(data[key])).is_absolute():
            data[key] = str(p.parent / str(data[key]))
    for m in data.get("methods", []) or []:
        for key in ("checkpoint", "checkpoint_even", "checkpoint_odd"):
            if isinstance(m, dict) and m.get(key) and not Path(m[key]).is_absolute():
                m[key] = str(p.parent / m[key])
    try:
        return EvaluateConfig(**data)
    except ValidationError as e:
        raise InputError(format_validation_error(e, str(p))) from e
