"""Config of ``denoise``: common options, plus the method's own in ``options``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from scnet_dask.config.common import (
    Device,
    StrictModel,
    _split_method_options,
)

__all__ = [
    "DenoiseConfig",
]


class DenoiseConfig(StrictModel):
    """Options of ``scnet-dask denoise``: common ones, plus the method's own in ``options``."""

    input: Path = Field(description="Volume to denoise (OME-Zarr, MRC or TIFF).")
    output: Path = Field(description="Output (.zarr, .mrc/.rec/.map or .tif/.tiff).")
    checkpoint: Path | None = Field(None, description="best.pt of 'scnet-dask train'.")
    method: str = Field("scnet", description="Denoising method.")
    chunks: int = Field(
        128, ge=16, le=1024, description="Output chunk edge in voxels (multiple of 16)."
    )
    tile: int | Literal["auto"] = Field(
        "auto",
        description="Tile core edge in voxels (a multiple of the network's 16), independent "
        "of --chunks; auto = of the cores up to 256 whose forward fits the device's free "
        "memory, the one with the least halo overhead (one tile per chunk for predictors "
        "without a memory model).",
    )
    halo: int | Literal["auto"] = Field(
        "auto",
        description="Voxels added on each side of a tile core; auto = the network's reach on "
        "that side + post-filter + blend.",
    )
    window: Literal["gaussian", "cosine"] = Field("gaussian", description="Blending window.")
    batch_size: int = Field(1, ge=1, le=64, description="Tiles per forward.")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    amp: bool = Field(True, description="bfloat16 autocast on GPU.")
    resume: bool = Field(False, description="Finish an interrupted run (only missing chunks).")
    overwrite: bool = Field(False, description="Replace an existing output.")
    options: Any = Field(None, description="The method's own options (validated by it).")

    @model_validator(mode="before")
    @classmethod
    def _options(cls, data: Any) -> Any:
        return _split_method_options(cls, data, "denoise")

    @field_validator("halo", "tile", mode="before")
    @classmethod
    def _auto_or_int(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"{info.field_name} must be 'auto' or voxels, got {v!r}") from None
        return v

    @field_validator("tile")
    @classmethod
    def _tile(cls, v: int | str) -> int | str:
        if isinstance(v, int) and (v < 16 or v % 16):
            raise ValueError(f"tile must be 'auto' or a multiple of 16 voxels (>= 16), got {v}")
        return v

    @field_validator("chunks")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(
                f"chunks (the tile core) must be a multiple of 16 so tiles align with the "
                f"network's four stride-2 levels, got {v}"
            )
        return v

    @field_validator("halo")
    @classmethod
    def _halo(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"halo must be 'auto' or >= 0 voxels, got {v}")
        return v

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        ok = (".zarr", ".mrc", ".rec", ".map", ".tif", ".tiff")
        if not str(v).lower().endswith(ok):
            raise ValueError(
                f"output must end in .zarr, .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}"
            )
        return v
