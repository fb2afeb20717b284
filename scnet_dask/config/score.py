"""Config of ``scnet-dask score``: candidates ranked by their error against the other half."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from scnet_dask.config.common import Device, StrictModel

__all__ = ["ScoreConfig"]


class ScoreConfig(StrictModel):
    """Options of ``scnet-dask score EVEN ODD --out DIR``."""

    even: Path | None = Field(None, description="The even half (OME-Zarr, MRC or TIFF).")
    odd: Path | None = Field(None, description="The odd half, on the even half's grid.")
    dataset: str | None = Field(
        None,
        description="Score every tomogram with halves of this dataset (an AreTomo3 or Warp "
        "folder, a RELION-5 tomograms.star, a folder, glob or list) instead of EVEN ODD.",
    )
    tomograms: str | None = Field(None, description="--dataset: only these tomograms (a,b,c).")
    exclude: str | None = Field(None, description="--dataset: leave out these tomograms.")
    count: int | None = Field(
        None,
        ge=1,
        description="--dataset: score at most this many tomograms with halves, evenly spaced "
        "in name order (default: all).",
    )
    out: Path = Field(description="Folder for score.csv, score.md, slices.png and the work.")
    candidates: Path | None = Field(
        None,
        description="YAML list of candidates (name, method, its options; trained methods "
        "with checkpoint_even / checkpoint_odd: models trained on one half only, or with "
        "train: a short recipe trained here by region split); default: the identity, a "
        "Gaussian σ grid, two low-pass filters and Topaz-3D.",
    )
    chunks: int = Field(
        128, ge=16, description="Tile core (voxels) of every candidate's denoise (as denoise's)."
    )
    fsc_edge: int = Field(
        128, ge=16, description="Edge (voxels) of the central box the FSC_e/o is computed in."
    )
    keep_volumes: bool = Field(
        False, description="Keep each candidate's denoised halves in DIR/.score/volumes."
    )
    top: int = Field(4, ge=1, le=12, description="Candidates shown in slices.png.")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    overwrite: bool = Field(False, description="Rescore every candidate (default: resume).")

    @model_validator(mode="after")
    def _one_source(self) -> ScoreConfig:
        """EVEN and ODD, or --dataset; the dataset options only with --dataset."""
        pair = self.even is not None and self.odd is not None
        if self.dataset is None:
            if not pair:
                raise ValueError("give the EVEN and ODD halves, or --dataset SOURCE")
            extra = [k for k in ("tomograms", "exclude", "count") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"--{extra[0]} applies to --dataset only")
        elif self.even is not None or self.odd is not None:
            raise ValueError(
                f"give EVEN ODD or --dataset, not both, got --dataset {self.dataset} and "
                f"{self.even or self.odd}"
            )
        return self
