"""What every command's config shares.

The strict base model, devices, voxel sizes, YAML loading, one-line validation errors, and the
split of a method's own options from the engine's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
)

from scnet_dask.errors import InputError
from scnet_dask.methods import get

__all__ = [
    "Device",
    "parse_voxel_size",
    "VoxelSize",
    "StrictModel",
    "load_yaml",
    "format_validation_error",
    "method_options",
]


def _check_device(v: str) -> str:
    if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


#: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked.
Device = Annotated[str, AfterValidator(_check_device)]


def parse_voxel_size(v: Any) -> Any:
    """One voxel size or ``Z,Y,X`` (text, number or sequence) as a (z, y, x) tuple in Å.

    Raises
    ------
    ValueError
        Not one or three positive finite numbers.

    """
    if v is None or isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, float) for x in v):
        return v
    items: list[Any]
    if isinstance(v, str):
        items = [x for x in re.split(r"[,\s\[\]()]+", v.strip()) if x]
    elif isinstance(v, (int, float)):
        items = [v]
    else:
        items = list(v)
    try:
        vals = [float(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"voxel size must be one number or Z,Y,X in Å, got {v!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(np.isfinite(x) and x > 0 for x in vals):
        raise ValueError(f"voxel size must be one or three positive numbers (Å), got {v!r}")
    return (vals[0], vals[1], vals[2])


#: A (z, y, x) voxel size in Å, given as one number or ``Z,Y,X``.
VoxelSize = Annotated[tuple[float, float, float], BeforeValidator(parse_voxel_size)]


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names to values (dashes become underscores)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InputError(f"{p}: cannot read YAML config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{p}: invalid YAML{where}: {problem}") from e
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
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
            continue
        parts.append(f"{loc or '?'}: {msg} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def _split_method_options(
    cls: type[BaseModel], data: Any, kind: Literal["train", "denoise"]
) -> Any:
    """Move the keys that are not ``cls``'s own fields into ``options``, validated by the method.

    So that users (CLI, YAML, Python) see one flat namespace while the run keeps the method's
    options apart: ``TrainConfig(noisy=..., method="scnet", lambda_smooth=0.0)``.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    name = str(data.get("method") or "scnet")
    given = data.pop("options", None)
    if isinstance(given, BaseModel):
        given = given.model_dump()
    opts = dict(given or {})
    for key in list(data):
        if key not in cls.model_fields:
            opts[key] = data.pop(key)
    data["options"] = method_options(name, kind, opts)
    return data


def method_options(name: str, kind: Literal["train", "denoise"], opts: dict[str, Any]) -> Any:
    """Validate ``opts`` as method ``name``'s ``train`` or ``denoise`` options.

    Raises
    ------
    ValueError
        One line: an option of another method (listing the method's own), a missing required
        option (as its flag), or the method's own validation errors.

    """
    method = get(name)
    model = method.train_options if kind == "train" else method.denoise_options
    if model is None:
        raise ValueError(f"method {method.name} is not trained; use 'scnet-dask denoise' with it")
    own = set(model.model_fields)
    foreign = sorted(k for k in opts if k not in own)
    if foreign:
        valid = ", ".join(sorted(own)) or "none"
        raise ValueError(
            f"{', '.join(foreign)}: not an option of {kind} --method {method.name} "
            f"(its own options: {valid})"
        )
    try:
        return model(**opts)
    except ValidationError as e:
        missing = [str(err["loc"][0]) for err in e.errors() if err["type"] == "missing"]
        if missing:
            flags = ", ".join(f"--{m.replace('_', '-')}" for m in missing)
            raise ValueError(f"--method {method.name} needs {flags}") from None
        raise ValueError(format_validation_error(e, f"--method {method.name}")) from None
