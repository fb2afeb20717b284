"""Pydantic configs for every command (unknown keys rejected), loadable from YAML.

A command's ``--config FILE.yaml`` takes the same keys as its command-line options, with dashes
written as underscores; options given on the command line win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scnet_dask.errors import InputError

__all__ = [
    "StrictModel",
    "ConvertConfig",
    "ExportConfig",
    "InfoConfig",
    "load_yaml",
    "format_validation_error",
]


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConvertConfig(StrictModel):
    """Options of ``scnet-dask convert``."""

    input: Path
    output: Path
    chunks: int = Field(128, ge=8, le=1024, description="chunk edge in voxels")
    voxel_size: float | None = Field(
        None, gt=0, description="voxel size in Å (overrides the header)"
    )
    dtype: Literal["float32", "source"] = "float32"
    swap_yz: bool = False
    nan_policy: Literal["error", "zero", "mean"] = "error"
    pyramid_levels: int = Field(3, ge=1, le=8, description="levels incl. level 0 (3 = 1x, 2x, 4x)")
    overwrite: bool = False
    resume: bool = False

    @field_validator("output")
    @classmethod
    def _zarr_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".zarr", ".ome.zarr") and not str(v).endswith(".zarr"):
            raise ValueError(f"output must end in .zarr, got {str(v)!r}")
        return v


class ExportConfig(StrictModel):
    """Options of ``scnet-dask export``."""

    input: Path
    output: Path
    dtype: Literal["float32", "float16", "source"] = "float32"
    overwrite: bool = False

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".mrc", ".rec", ".map", ".tif", ".tiff"):
            raise ValueError(f"output must end in .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}")
        return v


class InfoConfig(StrictModel):
    """Options of ``scnet-dask info``."""

    path: Path
    json_output: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names to values (dashes become underscores)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{p}: cannot read YAML config ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{p}: config must be a mapping of option names to values, got {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def format_validation_error(e: ValidationError, source: str = "options") -> str:
    """One line naming each bad key and what is wrong with it."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "?"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(parts)
