"""``score``'s candidates: the default set, a candidate file, the half-model check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scnet_dask.commands.evaluate import MethodSpec
from scnet_dask.commands.score_report import candidate_slug
from scnet_dask.errors import InputError
from scnet_dask.methods.loading import load_trained

__all__ = ["DEFAULT_CANDIDATES", "checked_half_model", "load_candidates"]

#: The default candidate set: the identity, a Gaussian σ grid, two low-pass filters, Topaz-3D.
DEFAULT_CANDIDATES: list[dict[str, Any]] = [
    {"name": "identity", "method": "none"},
    *({"name": f"gaussian σ {s:g}", "method": "gaussian", "sigma": s}
      for s in (0.5, 1.0, 1.5, 2.0, 3.0)),
    *({"name": f"lowpass {c:g} Å", "method": "lowpass", "cutoff_angstrom": c}
      for c in (30.0, 60.0)),
    {"name": "topaz-3d", "method": "topaz-3d"},
]  # fmt: skip


def load_candidates(path: Path | None) -> list[MethodSpec]:
    """The candidates of a YAML file, or the default set without one.

    The file holds a list, or a mapping with ``candidates:``; paths are relative to its folder.

    Raises
    ------
    InputError
        A candidate that is not valid (naming the file), two that would write the same files.

    """
    if path is None:
        items: list[Any] = [dict(c) for c in DEFAULT_CANDIDATES]
    else:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            first = str(e).splitlines()[0]
            raise InputError(f"{path}: cannot read the candidates ({first})") from e
        items = data.get("candidates", []) if isinstance(data, dict) else data
        if not isinstance(items, list) or not items:
            raise InputError(f"{path}: expected a list of candidates, got {type(items).__name__}")
        for m in items:
            for key in ("checkpoint", "checkpoint_even", "checkpoint_odd"):
                if isinstance(m, dict) and m.get(key) and not Path(m[key]).is_absolute():
                    m[key] = str(Path(path).parent / m[key])
    out: list[MethodSpec] = []
    seen: dict[str, str] = {}
    for m in items:
        try:
            spec = MethodSpec(**m)
        except (ValueError, TypeError) as e:
            raise InputError(f"{path}: candidate {m!r}: {str(e).splitlines()[0]}") from None
        slug = candidate_slug(spec.name)
        if slug in seen:
            raise InputError(f"{path}: candidates {seen[slug]!r} and {spec.name!r} share a name")
        seen[slug] = spec.name
        out.append(spec)
    return out


def checked_half_model(ck: Path, half: Path, other: Path, name: str) -> None:
    """Refuse a checkpoint unless its training inputs are ``half`` alone (its prior aside)."""
    tr = load_trained(str(Path(ck).resolve()), "", "cpu")
    inputs = {k: v for k, v in tr.inputs.items() if k != "prior"}
    want = Path(half).resolve()
    if not inputs or any(Path(v).resolve() != want for v in inputs.values()):
        seen = ", ".join(f"{k}={v}" for k, v in inputs.items()) or "unknown inputs"
        raise InputError(
            f"{ck}: candidate {name!r}: trained on {seen}, not on {half} alone; scoring it "
            f"against {other} would reward what it learnt of that half's noise: give models "
            "trained on one half only (checkpoint_even, checkpoint_odd)"
        )
