"""Config of ``scnet-dask score``: candidates ranked by their error against the other half."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from scnet_dask.config.common import Device, StrictModel

__all__ = ["ScoreConfig"]


class ScoreConfig(StrictModel):
    """Options of ``scnet-dask score EVEN ODD --out DIR``."""

    even: Path = Field(description="The even half (OME-Zarr, MRC or TIFF).")
    odd: Path = Field(description="The odd half, on the even half's grid.")
    out: Path = Field(description="Folder for score.csv, score.md, slices.png and the work.")
    candidates: Path | None = Field(
        None,
        description="YAML list of candidates (name, method, its options; trained methods "
        "with checkpoint_even / checkpoint_odd: models trained on one half only); default: "
        "the identity, a Gaussian σ grid, two low-pass filters and Topaz-3D.",
    )
    chunks: int = Field(64, ge=16, description="Tile core (voxels) of every candidate's denoise.")
    fsc_edge: int = Field(
        128, ge=16, description="Edge (voxels) of the central box the FSC_e/o is computed in."
    )
    keep_volumes: bool = Field(
        False, description="Keep each candidate's denoised halves in DIR/.score/volumes."
    )
    top: int = Field(4, ge=1, le=12, description="Candidates shown in slices.png.")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    overwrite: bool = Field(False, description="Rescore every candidate (default: resume).")
