"""Helpers shared by the CLI commands: YAML configs mirrored on options, logging, errors."""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import click
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from scnet_dask.cli.per_method import (
    MethodCommand,
    foreign_options,
)
from scnet_dask.config import ClusterConfig, format_validation_error, load_yaml
from scnet_dask.distributed.cluster import cluster_client
from scnet_dask.errors import InputError

__all__ = [
    "command_from_models",
    "config_keys",
    "config_aliases",
    "params_of",
    "path_argument",
    "config_option",
    "build_config",
    "setup_logging",
    "cluster_options",
    "on_cluster",
    "model_options",
    "given",
    "sections_help",
    "is_section",
]

#: ``--config`` keys of the cluster options: field names and their flag names (aliases).
CLUSTER_KEYS = (
    *ClusterConfig.model_fields,
    *(f.alias for f in ClusterConfig.model_fields.values() if f.alias),
)

_CLUSTER_ALIAS = {f.alias: k for k, f in ClusterConfig.model_fields.items() if f.alias}

#: ``ctx.meta`` key of the ``--config`` values that are no option (nested YAML sections).
_SECTIONS = "scnet_dask.config_sections"

F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def config_option(keys: Iterable[str], aliases: dict[str, str] | None = None) -> Callable[[F], F]:
    """Add ``--config FILE.yaml`` whose keys are the command's option names (``keys``).

    Unknown keys are errors; the file's values become the defaults of the options, so the
    command line still wins. ``aliases`` maps a key to its parameter name (``json`` →
    ``json_output``).
    """
    key_set = set(keys) | set(aliases or {})
    rename = dict(aliases or {})

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if not value:
            return
        data = load_yaml(value)
        fields = key_set | set(CLUSTER_KEYS)
        unknown = sorted(set(data) - fields)
        if unknown and isinstance(ctx.command, MethodCommand):
            msg = foreign_options(ctx.command.kind, ctx.command.method, unknown)
            if msg:
                raise InputError(f"{value}: {msg}")
        if unknown:
            raise click.BadParameter(
                f"{value}: unknown key(s) {', '.join(unknown)}; "
                f"valid keys: {', '.join(sorted(fields))}",
                ctx=ctx,
                param=param,
            )
        data = {rename.get(k, _CLUSTER_ALIAS.get(k, k)): v for k, v in data.items()}
        params = {p.name: p for p in ctx.command.params if p.name}
        for key, val in data.items():
            par = params.get(key)
            if par is None or val is None:
                continue
            try:
                par.type_cast_value(ctx, val)
            except click.BadParameter as e:
                raise click.BadParameter(f"{value}: key {key!r}: {e.message}", ctx, param) from None
            except (TypeError, ValueError):  # e.g. a list where a number belongs
                raise click.BadParameter(
                    f"{value}: key {key!r}: {val!r} is not a valid {par.type.name}", ctx, param
                ) from None
        ctx.meta[_SECTIONS] = {k: v for k, v in data.items() if k not in params}
        ctx.default_map = {**(ctx.default_map or {}), **data}

    def decorator(f: F) -> F:
        return click.option(
            "--config",
            type=click.Path(exists=True, dir_okay=False),
            is_eager=True,
            expose_value=False,
            callback=callback,
            help="YAML file whose keys mirror these options (command-line options win).",
        )(f)

    return decorator


def is_section(annotation: Any) -> bool:
    """Whether a field is a nested options model: a YAML section of ``--config``, not a flag."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def build_config(config_cls: type[M], /, **kwargs: Any) -> M:
    """Validate command options into a config model, as one clear error line on failure.

    Options left unset (``None``) are not passed, so the model's (or the method's) defaults
    apply.
    """
    ctx = click.get_current_context(silent=True)
    sections = dict(ctx.meta.get(_SECTIONS, {})) if ctx is not None else {}
    try:
        return config_cls(**sections, **given(kwargs))
    except ValidationError as e:
        raise InputError(format_validation_error(e)) from e


def given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The options that were set (on the command line or in ``--config``): not ``None``."""
    return {k: v for k, v in kwargs.items() if v is not None}


class _LiteralChoice(click.Choice):  # type: ignore[type-arg]
    """``click.Choice`` over a ``Literal``'s values that returns the value itself (e.g. ``-1``)."""

    def __init__(self, values: Sequence[Any]):
        self.values = {str(v): v for v in values}
        super().__init__(list(self.values))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return self.values[str(super().convert(str(value), param, ctx))]


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """The click type for a field annotation and whether it is a boolean flag."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _click_type(args[0])
        return click.STRING, False  # e.g. int | "auto": pydantic parses the text
    if origin is Literal:
        return _LiteralChoice(get_args(annotation)), False
    if origin is tuple:
        return click.STRING, False  # e.g. "Z,Y,X": pydantic parses the text
    if get_origin(annotation) is not None and get_args(annotation):
        return _click_type(get_args(annotation)[0])  # Annotated[...]
    if annotation is bool:
        return None, True
    if annotation is Path:
        return click.Path(path_type=Path), False
    if annotation in (int, float, str):
        return annotation, False
    return click.STRING, False


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def model_options(
    models: Sequence[tuple[str, type[BaseModel]]],
    skip: Iterable[str] = (),
    required: bool = True,
) -> list[Callable[[F], F]]:
    """Click options for the fields of pydantic ``models``, one per field name.

    ``models`` are ``(label, model)`` pairs; a field that several models share becomes one
    option whose help lists each model's default (``[scnet: 3; n2v: 1]``), and whose value is
    left ``None`` when not given so that each model applies its own default. Help text is the
    field's ``description``; booleans become ``--x/--no-x`` switches (or ``--x`` when off by
    default); ``Literal`` fields become choices. Every option defaults to ``None`` on the
    command line: the model's default applies, and a value from ``--config`` is passed on.
    """
    skip = set(skip)
    seen: dict[str, tuple[Any, list[tuple[str, Any]]]] = {}
    order: list[str] = []
    for label, model in models:
        for name, info in model.model_fields.items():
            if name in skip or is_section(info.annotation):
                continue
            if info.description is None:
                raise ValueError(f"{model.__name__}.{name} has no description (its --help text)")
            if name not in seen:
                seen[name] = (info, [])
                order.append(name)
            seen[name][1].append((label, info.default))
    options = []
    for name in order:
        info, defaults = seen[name]
        flag = (info.alias or name).replace("_", "-")
        ctype, is_bool = _click_type(info.annotation)
        shown = [(lab, d) for lab, d in defaults if d is not PydanticUndefined and d is not None]
        help_text = str(info.description)
        if len(defaults) > 1:
            if shown:
                per = "; ".join(f"{lab}: {_default_text(d)}" for lab, d in shown)
                help_text += f" [{per}]"
        elif shown:
            help_text += f" [default: {_default_text(shown[0][1])}]"
        own = len(defaults) == 1 and not defaults[0][0]
        must = required and own and info.is_required()
        if is_bool:
            on = any(d is True for _, d in defaults)
            decl = f"--{flag}/--no-{flag}" if on else f"--{flag}"
            opt = click.option(decl, name, default=None, is_flag=True, help=help_text)
        else:
            opt = click.option(
                f"--{flag}", name, type=ctype, default=None, required=must, help=help_text
            )
        options.append(opt)
    return options


def apply_options(f: F, options: Sequence[Callable[[F], F]]) -> F:
    """Decorate ``f`` with ``options`` so that ``--help`` lists them in order."""
    for opt in reversed(options):
        f = opt(f)
    return f


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"scnet-dask: {record.levelname.lower()}: {record.getMessage()}"


def setup_logging(verbosity: int) -> None:
    """Log to stderr: warnings by default, info with -v, debug with -vv."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("scnet_dask")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def cluster_options(f: F) -> F:
    """The ``--cluster`` option family, generated from :class:`~scnet_dask.config.ClusterConfig`."""
    return apply_options(f, model_options([("", ClusterConfig)], required=False))


@contextmanager
def on_cluster(kwargs: dict[str, Any]) -> Iterator[Any]:
    """Pop the cluster options from ``kwargs``, run the body on that cluster; yield its client.

    The client is ``None`` for ``--cluster threads``.
    """
    given_ = {k: kwargs.pop(k) for k in ClusterConfig.model_fields if k in kwargs}
    spec = ClusterConfig(**{k: v for k, v in given_.items() if v is not None})
    with cluster_client(spec) as client:
        if client is not None:
            click.echo(f"scnet-dask: Dask dashboard: {client.dashboard_link}", err=True)
        yield client


def config_keys(*models: type[BaseModel]) -> set[str]:
    """Field names of ``models`` (the keys a ``--config`` file may hold)."""
    out: set[str] = set()
    for m in models:
        out |= set(m.model_fields)
    return out - {"options"}


def config_aliases(*models: type[BaseModel]) -> dict[str, str]:
    """Alias -> field name of ``models`` (``json`` -> ``json_output``)."""
    return {info.alias: name for m in models for name, info in m.model_fields.items() if info.alias}


def command_from_models(
    name: str,
    models: list[tuple[str, type[BaseModel]]],
    positional: list[click.Argument],
    body: Callable[..., None],
    doc: str,
    cluster: bool = False,
    method: tuple[str, str] | None = None,
) -> click.Command:
    """A command whose options are generated from ``models`` (see ``model_options``).

    ``method``: ``(kind, name)`` for ``train``/``denoise`` built for one method
    (a :class:`MethodCommand`).
    """
    skip = {p.name for p in positional if p.name} | {"options"}
    ms = [m for _, m in models]
    decorators: list[Callable[[Any], Any]] = [
        config_option(config_keys(*ms), config_aliases(*ms)),
        *model_options(models, skip=skip),
    ]
    if cluster:
        decorators.append(cluster_options)
    params: list[click.Parameter] = list(positional)
    for deco in decorators:
        params += params_of(deco)
    if method is not None:
        kind, name_ = method
        return MethodCommand(
            name, callback=body, params=params, help=doc, kind=kind, method=name_
        )
    return click.Command(name, callback=body, params=params, help=doc)


def params_of(decorator: Callable[[Any], Any]) -> list[click.Parameter]:
    """The click parameters that an option decorator adds, in ``--help`` order."""

    def f() -> None:  # pragma: no cover - never called
        pass

    decorator(f)
    return list(reversed(getattr(f, "__click_params__", [])))


def path_argument(name: str, **kw: Any) -> click.Argument:
    """A positional path argument."""
    return click.Argument([name], type=click.Path(path_type=Path), **kw)


def sections_help(models: list[tuple[str, type[BaseModel]]]) -> str:
    """The help sentence naming a method's nested option groups: YAML sections, not flags."""
    found = [
        f"{name} ({info.description})"
        for _, model in models
        for name, info in model.model_fields.items()
        if is_section(info.annotation)
    ]
    if not found:
        return ""
    return (
        " Expert option groups are sections of the --config YAML file, not flags (e.g. "
        "'gan: {steps: 300}'; docs/methods.md lists their fields): " + "; ".join(found) + "."
    )
