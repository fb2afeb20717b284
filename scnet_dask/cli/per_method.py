"""``train`` and ``denoise`` as per-method commands.

The chosen method, its options model, its ``--method`` choice, and the plain refusal of another
method's option.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import click
from pydantic import BaseModel, Field, create_model

from scnet_dask.config import load_yaml
from scnet_dask.errors import InputError
from scnet_dask.methods import get, names, trainable

__all__ = [
    "method_models",
    "foreign_options",
    "MethodCommand",
    "chosen_method",
    "method_help",
    "method_option",
    "without_fields",
]


def method_models(kind: str, method: str | None = None) -> list[tuple[str, type[BaseModel]]]:
    """``(name, options model)`` for ``train`` or ``denoise``: of ``method``, or of every method."""
    out: list[tuple[str, type[BaseModel]]] = []
    for n in names() if method is None else [method]:
        m = get(n)
        model = m.train_options if kind == "train" else m.denoise_options
        if model is not None:
            out.append((n, model))
    return out


def foreign_options(kind: str, method: str, keys: Iterable[str]) -> str | None:
    """The one-line refusal of ``keys`` that are other methods' options, or ``None``.

    ``train``/``denoise`` only have the options of the method they run; naming another method's
    option is a mistake worth saying plainly (``--sigma: not an option of denoise --method n2n``).
    """
    own = set().union(*(set(m.model_fields) for _, m in method_models(kind, method)))
    others = {k for _, m in method_models(kind) for k in m.model_fields}
    foreign = sorted(k for k in keys if k in others and k not in own)
    if not foreign:
        return None
    valid = ", ".join(sorted(own)) or "none"
    return (
        f"{', '.join(foreign)}: not an option of {kind} --method {method} "
        f"(its own options: {valid})"
    )


class MethodCommand(click.Command):
    """``train`` or ``denoise`` built for one method: another method's option is refused plainly.

    Click would say "No such option"; this says whose option it is not (exit status 1).
    """

    def __init__(self, *args: Any, kind: str, method: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.method = method

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as click does; an unknown option that belongs to another method → InputError."""
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            key = e.option_name.lstrip("-").replace("-", "_")
            msg = foreign_options(self.kind, self.method, [key])
            if msg:
                raise InputError(msg) from None
            raise


def chosen_method(args: Sequence[str], default: str) -> str:
    """The ``--method`` a command line asks for (or its ``--config`` file's ``method``).

    Read before the command is built, so that its options are the engine's and that method's
    only. An unknown name is returned as given (``--method``'s choices then refuse it); a
    missing or unreadable config file gives ``default`` (``--config`` then reports it).
    """
    config = None
    for i, a in enumerate(args):
        if a == "--method" and i + 1 < len(args):
            return str(args[i + 1])
        if a.startswith("--method="):
            return a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(args):
            config = args[i + 1]
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
    if config is not None:
        try:
            data = load_yaml(config)
        except (InputError, OSError, ValueError):
            return default
        if isinstance(data.get("method"), str):
            return str(data["method"])
    return default


def method_help(kind: str) -> str:
    """``--method`` help: each method's one-line summary."""
    ms = [get(n) for n in names()]
    return "; ".join(
        f"{m.name}: {m.summary.rstrip('.')}" for m in ms if kind != "train" or m.trains
    )


def method_option(kind: str) -> list[tuple[str, type[BaseModel]]]:
    """A one-field model for ``--method``, with the registry's names as choices."""
    choices = tuple(trainable() if kind == "train" else names())
    model = create_model(  # type: ignore[call-overload]
        f"{kind.title()}Method",
        method=(Literal[choices], Field("scnet", description=method_help(kind))),
    )
    return [("", model)]


def without_fields(model: type[BaseModel], *names: str) -> type[BaseModel]:
    """A copy of ``model`` without the fields ``names`` (for option generation only)."""
    fields = {k: (v.annotation, v) for k, v in model.model_fields.items() if k not in names}
    return create_model(model.__name__, **fields)  # type: ignore[call-overload,no-any-return]

