"""The dataset mode of ``denoise`` and ``info`` (``--dataset SOURCE``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from scnet_dask.cli.options import build_config, given, on_cluster
from scnet_dask.commands.dataset import denoise_dataset
from scnet_dask.commands.dataset_job import Job
from scnet_dask.commands.dataset_live import follow
from scnet_dask.commands.info import dataset_info, format_dataset_info
from scnet_dask.config import DATASET_FIELDS, DatasetConfig, DenoiseConfig, format_validation_error
from scnet_dask.errors import InputError
from scnet_dask.io.dataset import find_dataset, select
from scnet_dask.methods.runtime import file_sha256

__all__ = ["split_dataset_options", "run_dataset_denoise", "run_dataset_info"]


def split_dataset_options(kwargs: dict[str, Any]) -> DatasetConfig:
    """Pop the dataset options from ``kwargs`` and validate them.

    Raises
    ------
    InputError
        An invalid value, or a dataset option given without ``--dataset``.

    """
    dkw = {k: kwargs.pop(k) for k in list(kwargs) if k in DATASET_FIELDS}
    try:
        cfg = DatasetConfig(**given(dkw))
    except ValidationError as e:
        raise InputError(format_validation_error(e)) from e
    if cfg.dataset is None:
        extra = sorted(k for k, v in given(dkw).items() if k != "dataset")
        if extra:
            raise InputError(f"--{extra[0].replace('_', '-')} applies to --dataset only")
    return cfg


def run_dataset_denoise(
    paths: tuple[Path, ...], dcfg: DatasetConfig, kwargs: dict[str, Any]
) -> None:
    """``denoise --dataset SOURCE [CHECKPOINT] --out-dir DIR``; exit 1 if a tomogram failed."""
    if len(paths) > 1:
        raise click.UsageError(
            f"with --dataset give at most a CHECKPOINT (no INPUT/OUTPUT), got {len(paths)} paths"
        )
    if dcfg.out_dir is None:
        raise InputError("--dataset needs --out-dir DIR for the denoised tomograms")
    if kwargs.get("method") == "auto":
        raise InputError(
            "--method auto scores one volume's halves; with --dataset run 'scnet-dask score "
            "--dataset SOURCE --out DIR' (every tomogram with halves, or --count K of them) and "
            "denoise the dataset with the winner"
        )
    ckpt = paths[0] if paths else None
    overwrite = bool(kwargs.pop("overwrite", None))
    kwargs.pop("resume", None)  # a dataset always continues half-done tomograms
    with on_cluster(kwargs) as client:
        base = {**given(kwargs), **({"checkpoint": ckpt} if ckpt else {})}
        out_dir = Path(dcfg.out_dir)
        cfg = build_config(DenoiseConfig, input=out_dir / "in.mrc", output=out_dir / "o.mrc",
                           **base)  # fmt: skip
        if ckpt is not None and not Path(ckpt).is_file():
            raise InputError(f"{ckpt}: no such checkpoint")
        job = Job(
            base=base, options_json=cfg.options.model_dump(mode="json") if cfg.options else {},
            checkpoint_sha256=file_sha256(Path(ckpt)) if ckpt else None, out_dir=out_dir,
            fmt=dcfg.format, apply=dcfg.apply, overwrite=overwrite, report_fsc=dcfg.report_fsc,
        )  # fmt: skip
        outcomes = denoise_dataset(dcfg, job, client, click.echo, follow if dcfg.live else None)
    failed = [o for o in outcomes if o.status == "failed"]
    done = sum(o.status == "done" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    click.echo(
        f"{done} denoised, {skipped} already done, {len(failed)} failed; "
        f"report: {out_dir / 'report.csv'}"
    )
    if failed:
        for o in failed:
            click.echo(f"  failed: {o.name}: {o.error}", err=True)
        raise InputError(
            f"{len(failed)} of {len(outcomes)} tomograms failed (the others are done): "
            f"{failed[0].error}"
        )


def run_dataset_info(source: str, tomograms: str | None, exclude: str | None,
                     json_output: bool) -> str:  # fmt: skip
    """``info --dataset SOURCE``: one line per tomogram (or one JSON object)."""
    ds = select(find_dataset(source), tomograms, exclude)
    rows = dataset_info(ds)
    if json_output:
        return json.dumps({"source": source, "layout": ds.layout, "tomograms": rows})
    return format_dataset_info(ds, rows)
