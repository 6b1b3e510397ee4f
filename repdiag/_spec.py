"""Resolving ``"package.module:function"`` / ``"path/to/file.py:function"`` specs to callables
(model factories of ``--model``, data functions of ``--data``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["resolve_callable"]


def resolve_callable(spec: str | Callable[..., Any], what: str = "model",
                     example: str = "--model repdiag.models:small_cnn") -> Callable[..., Any]:
    """The callable named by ``spec``: ``"package.module:function"`` or ``"path/to/file.py:function"``.

    A callable is returned as it is. Importing a file runs it, as ``python file.py`` would: pass
    only files you trust. ``what`` and ``example`` word the error messages.
    """
    if callable(spec):
        return spec
    noun = "factory" if what == "model" else "function"
    if not isinstance(spec, str) or spec.count(":") < 1 or not spec.rsplit(":", 1)[1]:
        raise ConfigError(
            f"a {what} spec must look like 'package.module:{noun}' or 'path/to/file.py:{noun}'; got {spec!r}. "
            f"Example: {example}"
        )
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise ConfigError(f"{what} file {where!r} of spec {spec!r} does not exist; check the path.")
        modname = f"_repdiag_user_{abs(hash(str(path.resolve())))}"
        file_spec = importlib.util.spec_from_file_location(modname, path)
        if file_spec is None or file_spec.loader is None:  # pragma: no cover - .py files always have one
            raise ConfigError(f"cannot import {where!r} as a Python file.")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[modname] = module
        try:
            file_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(modname, None)
            raise ConfigError(f"importing {what} file {where!r} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import module {where!r} of {what} spec {spec!r}: {exc}. Is the package installed, or "
                "did you mean a file path ending in .py?"
            ) from exc
        except Exception as exc:  # the module itself raised while importing (not a missing package)
            raise ConfigError(f"importing module {where!r} of {what} spec {spec!r} failed: {type(exc).__name__}: "
                              f"{exc}. Fix the module, or check the spec.") from exc
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))[:12]
        raise ConfigError(f"{where!r} has no callable {name!r}; it has: {', '.join(public) or 'nothing callable'}.")
    return fn
