"""The method registry: names → :class:`~scnet_dask.methods.base.Method` instances.

Filled by :mod:`scnet_dask.methods` (its ``__init__`` registers the built-in methods); a plugin
or a test calls :func:`register` itself.
"""

from __future__ import annotations

from scnet_dask.methods.base import Method

__all__ = ["register", "unregister", "get", "names", "trainable"]

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` under ``method.name`` (replacing one of the same name); returns it."""
    if not method.name:
        raise ValueError(f"a method needs a name, got {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove the method ``name`` (e.g. a test's toy method)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The registered method ``name``.

    Raises
    ------
    ValueError
        If no method of that name is registered (the message lists the known ones).

    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(names())}") from None


def names() -> list[str]:
    """Names of every registered method, in registration order."""
    return list(_REGISTRY)


def trainable() -> list[str]:
    """Names of the methods that train."""
    return [n for n, m in _REGISTRY.items() if m.trains]
