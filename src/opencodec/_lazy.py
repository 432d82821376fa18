"""Names of a package loaded on first use (PEP 562), so that importing the package does not
import what only some of its users need (torch, for the command-line's light paths)."""

from __future__ import annotations

import importlib
import typing as tp


def lazy_names(package: str, names: dict[str, str], namespace: dict[str, tp.Any],
               public: tp.Sequence[str]) -> tuple[tp.Callable[[str], tp.Any], tp.Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` (its ``__name__``): ``names`` maps a public
    name to the submodule defining it, imported on first use and then kept in ``namespace``
    (the package's ``globals()``) as a plain attribute; those submodules themselves are
    attributes too, as importing the package eagerly made them. Any other name is an
    ``AttributeError``. ``__dir__`` lists ``namespace`` and ``public`` (``__all__``)."""
    submodules = frozenset(names.values())

    def __getattr__(name: str) -> tp.Any:
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))
    return __getattr__, __dir__
