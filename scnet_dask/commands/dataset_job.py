"""One tomogram of a dataset, denoised: the job ``denoise --dataset`` runs per tomogram.

A job runs in the driver or inside a Dask worker (then on the worker's own threads, one model
load per worker process thanks to the per-process checkpoint cache). It ends by writing the
tomogram's completion record, atomically, after its output is in place.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scnet_dask.commands.denoise import denoise
from scnet_dask.commands.export import write_volume_file
from scnet_dask.config import DenoiseConfig
from scnet_dask.distributed.jobs import local_compute
from scnet_dask.io import Volume, open_source
from scnet_dask.io._atomic import remove_path
from scnet_dask.io.dataset import Tomogram
from scnet_dask.io.output import atomic_output
from scnet_dask.io.provenance import volume_attrs
from scnet_dask.io.store import write_volume_zarr
from scnet_dask.io.tomogram import open_tomogram, tomogram_files, tomogram_signature
from scnet_dask.science.metrics import fsc, fsc_eo, resolution_angstrom

__all__ = [
    "Job", "denoise_tomogram", "output_identity", "output_path", "read_record", "record_path",
    "RECORDS", "WORK",
]  # fmt: skip

#: Folder of ``DIR`` holding the completion records (and the dataset run's lock).
RECORDS = ".scnet-dask"
#: Folder of ``DIR`` holding per-tomogram intermediate volumes (removed on success).
WORK = ".work"
#: Largest (z, y, x) central region the FSC of the denoised halves is computed on.
FSC_REGION = (128, 256, 256)


@dataclass(frozen=True)
class Job:
    """How every tomogram of a dataset run is denoised (one template, picklable).

    ``base`` holds the ``denoise`` options common to every tomogram (method, its options,
    checkpoint, tiling, device) without ``input``/``output``/``resume``/``overwrite``.
    """

    base: dict[str, Any]
    options_json: dict[str, Any]
    checkpoint_sha256: str | None
    out_dir: Path
    fmt: Literal["mrc", "zarr"] = "mrc"
    apply: Literal["full", "halves"] = "full"
    overwrite: bool = False
    report_fsc: bool = False
    local: bool = False
    identity: dict[str, Any] | None = None


def output_path(job: Job, name: str) -> Path:
    """``DIR/NAME.mrc`` or ``DIR/NAME.zarr``."""
    return job.out_dir / f"{name}.{job.fmt}"


def record_path(job: Job, name: str) -> Path:
    """``DIR/.scnet-dask/NAME.json``, the tomogram's completion record."""
    return job.out_dir / RECORDS / f"{name}.json"


#: The common denoise options that change the numbers besides the method's own (the tile size
#: and the batch only change rounding; the device and the cluster nothing).
_SETTINGS = ("window", "halo", "amp", "chunks")


def output_identity(t: Tomogram, job: Job) -> dict[str, Any]:
    """What an output is made from: compared with the completion record to skip or refuse."""
    return json.loads(
        json.dumps(
            {
                "inputs": tomogram_signature(t, job.apply),
                "method": job.base.get("method"),
                "options": job.options_json,
                "settings": {k: str(job.base[k]) for k in _SETTINGS if k in job.base},
                "checkpoint_sha256": job.checkpoint_sha256,
                "apply": job.apply,
            }
        )
    )


def _denoise(job: Job, src: Path, target: Path, vol: Volume, files: list[Path],
             overwrite: bool) -> dict[str, Any]:  # fmt: skip
    cfg = DenoiseConfig(input=src, output=target, resume=True, overwrite=overwrite, **job.base)
    return denoise(cfg, show_progress=False, vol=vol, inputs=files)


def _work_folder(job: Job, t: Tomogram, identity: dict[str, Any]) -> Path:
    """``DIR/.work/NAME``, emptied first when an interrupted run left it for another identity.

    A half denoised there is reused only by a run that would make the same output: the
    folder carries the identity it was made for (``identity.json``).
    """
    work = job.out_dir / WORK / t.name
    stamp = work / "identity.json"
    if work.exists() and read_record(stamp) != identity:
        remove_path(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(identity))
    return work


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object written by a run (a completion record), or ``None`` (absent, damaged)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _halves(job: Job, t: Tomogram, identity: dict[str, Any]) -> tuple[Path, Path]:
    """Denoise each half into the work folder (resumable); their OME-Zarr paths."""
    work = _work_folder(job, t, identity)
    halves: tuple[Literal["even", "odd"], ...] = ("even", "odd")
    out = []
    for which in halves:
        target = work / f"{which}.zarr"
        if not target.exists():  # a finished half of this identity is kept (_work_folder)
            vol = open_tomogram(t, which)
            _denoise(job, vol.path, target, vol, [vol.path], overwrite=False)
        out.append(target)
    return out[0], out[1]


def _write_mean(job: Job, t: Tomogram, even: Path, odd: Path, target: Path) -> None:
    """``target`` = the mean of the two denoised halves (MRC or OME-Zarr), atomically."""
    a, b = open_source(even), open_source(odd)
    data = (a.data.astype(np.float32) + b.data.astype(np.float32)) * np.float32(0.5)
    attrs = volume_attrs(
        target, "denoise", a, input=[str(t.even), str(t.odd)], apply="halves",
        method=job.base.get("method"), checkpoint_sha256=job.checkpoint_sha256,
    )  # fmt: skip
    with atomic_output(target, overwrite=job.overwrite) as tmp:
        if job.fmt == "mrc":
            write_volume_file(tmp, data, a.voxel_size_angstrom, attrs["source"], False, "mrc")
        else:
            write_volume_zarr(data, tmp, a.voxel_size_angstrom, attrs, int(job.base.get(
                "chunks", 128)), 3, show_progress=False)  # fmt: skip


def _fsc(even: Path, odd: Path) -> tuple[float, float]:
    """FSC_e/o 0.143 and 0.5 crossings (Å) of two denoised halves, on a central region."""
    a, b = open_source(even), open_source(odd)
    shape = a.data.shape
    region = tuple(
        slice((n - min(n, m)) // 2, (n - min(n, m)) // 2 + min(n, m))
        for n, m in zip(shape, FSC_REGION, strict=True)
    )
    x = a.data[region].astype(np.float32).compute()
    y = b.data[region].astype(np.float32).compute()
    f, c = fsc(x, y, a.voxel_size_angstrom)
    ceo = fsc_eo(c)
    return resolution_angstrom(f, ceo, 0.143), resolution_angstrom(f, ceo, 0.5)


def _peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def denoise_tomogram(t: Tomogram, job: Job) -> dict[str, Any]:
    """Denoise ``t`` into ``DIR/NAME.{fmt}``; write and return its completion record.

    Returns
    -------
    dict
        ``tomogram``, ``identity`` (what the output is made from), ``input``, ``output``,
        ``method``, ``checkpoint``, ``seconds``, ``voxels_per_s``, ``peak_rss_mib`` (of the
        process that ran it), ``fsc_0143_angstrom``/``fsc_05_angstrom`` (NaN unless
        ``report_fsc`` and the tomogram has halves), ``chunks_computed``/``chunks_resumed``
        (``apply: full``: chunks computed now / kept from an interrupted run), ``finished``
        (Unix time).

    """
    t0 = time.perf_counter()
    target = output_path(job, t.name)
    identity = job.identity or output_identity(t, job)
    files = tomogram_files(t, job.apply)
    res = (float("nan"), float("nan"))
    chunks: dict[str, Any] = {}
    with local_compute() if job.local else nullcontext():
        if job.apply == "full":
            vol = open_tomogram(t, "full")
            s = _denoise(job, files[0], target, vol, files, job.overwrite)
            chunks = {"chunks_computed": s["chunks_written"], "chunks_resumed": s["chunks_skipped"]}
            shape = vol.data.shape
        else:
            even, odd = _halves(job, t, identity)
            _write_mean(job, t, even, odd, target)
            shape = open_source(even).data.shape
        if job.report_fsc and t.has_halves:
            res = _fsc(*_halves(job, t, identity))
    remove_path(job.out_dir / WORK / t.name)
    seconds = time.perf_counter() - t0
    rec = {
        "tomogram": t.name,
        "identity": identity,
        "input": ";".join(str(p) for p in files),
        "output": str(target),
        "method": job.base.get("method"),
        "checkpoint": str(job.base.get("checkpoint") or ""),
        "seconds": round(seconds, 3),
        "voxels_per_s": round(float(np.prod(shape)) / max(seconds, 1e-9), 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "fsc_0143_angstrom": res[0],
        "fsc_05_angstrom": res[1],
        **chunks,
        "finished": time.time(),
    }
    path = record_path(job, t.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(rec, indent=1))
    os.replace(tmp, path)
    return rec
