"""What a recipe's `model._target_` may build: an `nn.Module` class, or a callable the user trusts.

A recipe is often someone else's file, so naming a target must not let it call a function of its
choosing. The target is looked up without calling anything: its module is imported (which runs that
module's top-level code, as any `import` does) and the attribute path is walked. A subclass of
`nn.Module` is accepted; anything else (a factory function, a callable object) only when it matches a
pattern the user trusts outside the recipe: `--trust-target PATTERN` or `MPCLI_TRUST_TARGET`
(comma-separated fnmatch patterns such as `myteam.models.*`). The standard library holds no
`nn.Module`, so a target there is refused before anything is imported.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mpcli.errors import ConfigError

TRUST_ENV = "MPCLI_TRUST_TARGET"
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def trusted_patterns() -> list[str]:
    """The patterns the user trusts (the environment of this process, set by the CLI or the user)."""
    return [p.strip() for p in os.environ.get(TRUST_ENV, "").split(",") if p.strip()]


@contextmanager
def trusting(patterns: list[str] | None) -> Iterator[None]:
    """Add `--trust-target` patterns to the environment for one command: its workers inherit them."""
    if not patterns:
        yield
        return
    before = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = ",".join([*trusted_patterns(), *patterns])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def is_trusted(target: str) -> bool:
    return any(fnmatch.fnmatchcase(target, pattern) for pattern in trusted_patterns())


def resolve_target(target: str) -> Callable[..., Any]:
    """The class (or trusted callable) that `model._target_` names; `ConfigError` when refused."""
    key = f"model._target_={target}"
    if not _DOTTED.fullmatch(target):
        raise ConfigError(f"{key}: expected a dotted name such as mypkg.models.MyNet")
    parts = target.split(".")
    if any(part.startswith("__") for part in parts):
        raise ConfigError(f"{key}: names a dunder attribute; give a class such as mypkg.models.MyNet")
    trusted = is_trusted(target)
    if not trusted and parts[0] in sys.stdlib_module_names:
        raise ConfigError(
            f"{key}: names the standard library, which holds no nn.Module; give an nn.Module class"
        )
    obj = _lookup(parts, key)
    if _is_module_class(obj) or (trusted and callable(obj)):
        return obj
    kind = "not callable" if not callable(obj) else f"a {type(obj).__name__}, not an nn.Module class"
    raise ConfigError(
        f"{key}: {kind}; a recipe may name only nn.Module classes. If you trust this factory, run "
        f"with --trust-target '{target}' or set {TRUST_ENV}"
    )


def _is_module_class(obj: object) -> bool:
    from torch import nn

    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _lookup(parts: list[str], key: str) -> Any:
    """Import the longest importable module prefix, then walk the remaining attributes."""
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
                continue  # this prefix is not a module; try a shorter one
            raise ConfigError(f"{key}: importing {module_name} failed: {exc}") from None
        except Exception as exc:  # the module's own top-level code failed
            raise ConfigError(f"{key}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                raise ConfigError(f"{key}: {getattr(obj, '__name__', module_name)} has no attribute {attr}")
            obj = getattr(obj, attr)
        return obj
    raise ConfigError(f"{key}: no module {parts[0]} is importable; is its package installed?")
