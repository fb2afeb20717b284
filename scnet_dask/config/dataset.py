"""Config of the dataset mode of ``denoise`` and ``info`` (``--dataset SOURCE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from scnet_dask.config.common import StrictModel

__all__ = ["DatasetConfig", "DATASET_FIELDS"]


class DatasetConfig(StrictModel):
    """Options of ``denoise --dataset``: which tomograms, where the outputs go, how it runs."""

    dataset: str | None = Field(
        None,
        description="Denoise every tomogram of a dataset: an AreTomo3 or Warp reconstruction "
        "folder, a RELION-5 tomograms.star, a folder or glob of volumes, or a YAML/CSV list "
        "of name,full,even,odd (then give no INPUT/OUTPUT; a CHECKPOINT may follow).",
    )
    out_dir: Path | None = Field(None, description="Dataset outputs: DIR/NAME.mrc (or .zarr).")
    format: Literal["mrc", "zarr"] = Field(
        "mrc", description="Dataset output format: MRC (header and voxel size kept) or OME-Zarr."
    )
    tomograms: str | None = Field(None, description="Only these tomograms (names, a,b,c).")
    exclude: str | None = Field(None, description="Leave out these tomograms (names, a,b,c).")
    apply: Literal["full", "halves"] = Field(
        "full",
        description="Denoise the full tomogram (the mean of its halves when there is none), "
        "or each half and average the two.",
    )
    skip_existing: bool = Field(
        True,
        description="Skip tomograms whose output and completion record match this run "
        "(inputs, method, options, checkpoint).",
    )
    in_flight: int = Field(
        0, ge=0, le=1024, description="Tomograms scheduled at once on a cluster; 0 = 2 per worker."
    )
    live: bool = Field(
        False, description="Keep watching the dataset; denoise each new tomogram once complete."
    )
    poll_s: float = Field(60.0, gt=0, description="--live: seconds between looks at the dataset.")
    live_timeout_s: float | None = Field(
        None, gt=0, description="--live: stop after this many seconds (default: Ctrl-C)."
    )
    report_fsc: bool = Field(
        False,
        description="Also denoise both halves and put their FSC_e/o 0.143 and 0.5 crossings "
        "in report.csv (about doubles the work).",
    )


#: The option names of the dataset mode (split from ``denoise``'s own).
DATASET_FIELDS = frozenset(DatasetConfig.model_fields)
