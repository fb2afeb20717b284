"""Configs of the volume commands: convert, export, info, simulate and demo."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import (
    ConfigDict,
    Field,
    field_validator,
)

from scnet_dask.config.common import (
    StrictModel,
    VoxelSize,
)
from scnet_dask.errors import InputError

__all__ = [
    "ConvertConfig",
    "ExportConfig",
    "InfoConfig",
    "SimulateConfig",
    "DemoConfig",
]


class ConvertConfig(StrictModel):
    """Options of ``scnet-dask convert``."""

    input: Path = Field(description="MRC/REC/ST, TIFF stack, folder of TIFF slices or Zarr.")
    output: Path = Field(description="OME-Zarr to write (.zarr).")
    chunks: int = Field(128, ge=8, le=1024, description="Chunk edge in voxels.")
    voxel_size: VoxelSize | None = Field(
        None,
        description="Voxel size in Å (overrides the header): one value, or Z,Y,X for "
        "anisotropic voxels (vEM: section thickness first, e.g. 500,40,40).",
    )
    dtype: Literal["float32", "source"] = Field(
        "float32", description="Stored data type: float32, or the source's."
    )
    swap_yz: bool = Field(
        False, description="Swap Y and Z (thickness along Y, IMOD's un-rotated output)."
    )
    nan_policy: Literal["error", "zero", "mean"] = Field(
        "error", description="What to do with NaN/Inf voxels."
    )
    pyramid_levels: int = Field(
        3, ge=1, le=8, description="Pyramid levels incl. full resolution (3 = 1x, 2x, 4x)."
    )
    overwrite: bool = Field(False, description="Replace an existing output.")
    resume: bool = Field(False, description="Continue an interrupted conversion.")

    @field_validator("output")
    @classmethod
    def _zarr_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".zarr", ".ome.zarr") and not str(v).endswith(".zarr"):
            raise ValueError(f"output must end in .zarr, got {str(v)!r}")
        return v


class ExportConfig(StrictModel):
    """Options of ``scnet-dask export``."""

    input: Path = Field(description="OME-Zarr to export.")
    output: Path = Field(description="MRC (.mrc/.rec/.map) or TIFF (.tif/.tiff) to write.")
    dtype: Literal["float32", "float16", "source"] = Field(
        "float32", description="Output data type; 'source' restores the converted file's."
    )
    overwrite: bool = Field(False, description="Replace an existing output.")

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".mrc", ".rec", ".map", ".tif", ".tiff"):
            raise ValueError(f"output must end in .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}")
        return v


class InfoConfig(StrictModel):
    """Options of ``scnet-dask info``."""

    path: Path | None = Field(None, description="Volume (OME-Zarr, MRC or TIFF).")
    dataset: str | None = Field(
        None,
        description="Describe every tomogram of a dataset instead (see denoise --dataset): "
        "one line each.",
    )
    tomograms: str | None = Field(None, description="--dataset: only these tomograms (a,b,c).")
    exclude: str | None = Field(None, description="--dataset: leave out these (a,b,c).")
    json_output: bool = Field(False, alias="json", description="Print one JSON object.")
    scan: bool = Field(
        False,
        description="Read the volume once (Dask) to compute its statistics and count NaN/Inf "
        "voxels when none are stored (MRC, TIFF, foreign Zarr).",
    )

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class SimulateConfig(StrictModel):
    """Options of ``scnet-dask simulate``."""

    volume: Path = Field(description="Ground-truth potential (MRC, TIFF or OME-Zarr).")
    out_dir: Path = Field(description="Folder for the simulated volumes and manifest.json.")
    noise_sigma: str = Field(
        "10,15,20",
        description="Noise levels (comma-separated), in units of projections scaled to [0, 255].",
    )
    tilts: str = Field("-60:60:2", description="Tilt angles START:STOP:STEP in degrees.")
    seed: int = Field(0, description="Seed of the noise.")
    format: Literal["zarr", "mrc"] = Field("zarr", description="Output format.")
    overwrite: bool = Field(False, description="Write into a non-empty OUT_DIR.")

    def sigmas(self) -> tuple[float, ...]:
        """The noise levels as numbers (distinct, finite)."""
        try:
            values = tuple(float(v) for v in self.noise_sigma.split(",") if v.strip())
        except ValueError:
            raise InputError(f"--noise-sigma must be numbers, got {self.noise_sigma!r}") from None
        if len(set(values)) != len(values) or not all(np.isfinite(values)):
            raise InputError(
                f"--noise-sigma must be distinct finite numbers, got {self.noise_sigma!r}"
            )
        return values


class DemoConfig(StrictModel):
    """Options of ``scnet-dask demo``."""

    out: Path = Field(Path("scnet-demo"), description="Folder for the demo's outputs (replaced).")
