"""Safe checkpoint loading and saving.

A checkpoint from a stranger must not run code on the reader's machine. So:

- ``.pt`` / ``.pth`` files load with ``torch.load(..., weights_only=True)``, always; a pickled
  whole module (``torch.save(model)``) is refused unless the caller passes ``trust=True``;
- ``.safetensors`` files hold tensors only;
- TorchScript archives load with ``torch.jit.load`` (their code is TorchScript, not Python);
- a factory spec recorded *inside* a checkpoint is only called on its own when it names one of
  repdiag's built-in models (:data:`repdiag.models.FACTORIES`); any other recorded factory
  needs ``trust=True`` or the same spec passed by the caller.

The state dict may sit inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
``{"model_state_dict": ...}``, PyTorch Lightning's ``state_dict`` with its ``model.`` prefix,
DataParallel's ``module.`` prefix, ``torch.compile``'s ``_orig_mod.`` prefix).

>>> import repdiag, tempfile, os
>>> from repdiag.models import small_cnn
>>> path = os.path.join(tempfile.mkdtemp(), "bn.pt")
>>> _ = repdiag.save_checkpoint(small_cnn("bn"), path, factory="repdiag.models:small_cnn", norm="bn")
>>> model = repdiag.load_checkpoint(path)          # no architecture needed: it is recorded
>>> type(model).__name__
'Sequential'
"""

from __future__ import annotations

import inspect
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._errors import CheckpointError, ConfigError
from ._spec import resolve_callable
from ._state_keys import STRIP_PREFIXES, load_state_into

__all__ = ["save_checkpoint", "load_checkpoint", "resolve_factory", "build_model", "read_state_dict",
           "checkpoint_format", "WRAPPER_KEYS", "STRIP_PREFIXES"]

WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "net", "network", "module")
"""Keys under which training scripts commonly nest the state dict, tried in this order."""


_SCALARS = (str, int, float, bool, type(None))


# -- factories ----------------------------------------------------------------------------------
def resolve_factory(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """The model factory named by ``spec``: ``"package.module:factory"`` or ``"path/to/file.py:factory"``.

    A callable is returned as it is. Importing a file runs it, as ``python file.py`` would: pass
    only files you trust.
    """
    return resolve_callable(spec, "model")


def _spec_of(factory: str | Callable[..., Any]) -> str:
    if isinstance(factory, str):
        resolve_factory(factory)  # fail now, not when loading
        return factory
    mod, qual = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual or "." in qual:
        raise ConfigError(
            f"factory {factory!r} cannot be recorded: it must be a module-level function importable as "
            "'package.module:function'. Pass the spec as a string instead."
        )
    return f"{mod}:{qual}"


def build_model(spec: str | Callable[..., Any], kwargs: Mapping[str, Any] | None = None) -> Any:
    """Call the factory named by ``spec`` with ``kwargs`` and check it returns an ``nn.Module``."""
    from torch import nn

    fn = resolve_factory(spec)
    kw = dict(kwargs or {})
    try:
        inspect.signature(fn).bind(**kw)
    except TypeError as exc:
        raise ConfigError(f"model factory {spec!r} does not accept keyword arguments {kw}: {exc}.") from exc
    except ValueError:  # pragma: no cover - builtins without a signature
        pass
    try:
        model = fn(**kw)
    except Exception as exc:
        if isinstance(exc, CheckpointError | ConfigError):
            raise
        raise ConfigError(f"model factory {spec!r} failed with {kw}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {spec!r} must return a torch.nn.Module; got {type(model).__name__}.")
    return model


# -- saving -------------------------------------------------------------------------------------
def save_checkpoint(model: Any, path: str | Path, factory: str | Callable[..., Any] | None = None,
                    **kwargs: Any) -> Path:
    """Write ``model``'s state dict, plus how to rebuild the model, to ``path``.

    The file is ``{"state_dict": ..., "repdiag": {"factory": spec, "kwargs": {...}}}``, plain
    tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)`` and
    :func:`load_checkpoint` needs no architecture. ``factory`` is ``"package.module:function"``
    (or ``"file.py:function"``) or a module-level function; ``kwargs`` are its keyword
    arguments (strings, numbers, booleans, None, or lists of those).
    """
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    payload: dict[str, Any] = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if factory is not None:
        for k, v in kwargs.items():
            items = v if isinstance(v, (list, tuple)) else [v]
            if not all(isinstance(i, _SCALARS) for i in items):
                raise ConfigError(
                    f"factory keyword {k!r} must be a string, number, bool, None or a list of those (so the "
                    f"checkpoint loads with weights_only=True); got {type(v).__name__}."
                )
        payload["repdiag"] = {"factory": _spec_of(factory), "kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                                     for k, v in kwargs.items()}}
    elif kwargs:
        raise ConfigError(f"keyword arguments {sorted(kwargs)} need factory=...; they are the factory's arguments.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {"repdiag": json.dumps(payload["repdiag"])} if "repdiag" in payload else None
        save_file({k: v.contiguous() for k, v in payload["state_dict"].items()}, str(path), metadata=meta)
    else:
        torch.save(payload, path)
    return path


# -- reading ------------------------------------------------------------------------------------
def checkpoint_format(path: str | Path) -> str:
    """``"safetensors"``, ``"torchscript"``, ``"torch"`` (zip, from ``torch.save``) or ``"pickle"``
    (the legacy format), from the file's content."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{path} is a damaged zip archive ({exc}); re-save the checkpoint.") from exc
        _check_expansion(path, infos)
        names = [i.filename for i in infos]
        if any(n.split("/", 1)[-1] in ("constants.pkl",) or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    return "pickle"


MAX_EXPANSION = 4.0
"""A zip checkpoint whose members would decompress to more than this many times the file's size
(and past :data:`MAX_EXPANDED_BYTES`) is refused before anything is read: ``torch.save`` stores its
members uncompressed, so such a file is a decompression bomb, not a checkpoint."""
MAX_EXPANDED_BYTES = 64 * 2 ** 20


def _check_expansion(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse, from the zip's directory alone, an archive that decompresses far beyond its size."""
    total = sum(i.file_size for i in infos)
    size = path.stat().st_size
    if total > MAX_EXPANDED_BYTES and total > MAX_EXPANSION * size:
        raise CheckpointError(
            f"{path} is a {size / 1e3:.0f} kB zip whose members would decompress to {total / 1e6:.0f} MB "
            f"({total / max(size, 1):.0f}x); repdiag reads no checkpoint that expands more than {MAX_EXPANSION:g}x "
            f"past {MAX_EXPANDED_BYTES // 2 ** 20} MiB (torch.save stores tensors uncompressed). If the file is "
            "yours, re-save it with torch.save(model.state_dict(), path)."
        )


def _is_tensor_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(state dict, recorded factory) from whatever ``torch.load`` returned."""
    recorded = obj.get("repdiag") if isinstance(obj, Mapping) and isinstance(obj.get("repdiag"), Mapping) else None
    if _is_tensor_dict(obj):
        return dict(obj), recorded
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and _is_tensor_dict(inner):
                return dict(inner), recorded
        # a state dict with a few non-tensor entries (e.g. Lightning's extra keys)
        tensors = {k: v for k, v in obj.items() if _is_tensor_dict({k: v})}
        if tensors and len(tensors) >= len(obj) - 2:
            return tensors, recorded
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(
            f"{path} holds a dict without a state dict: keys {keys}. Expected tensors by parameter name, or one of "
            f"them under {', '.join(map(repr, WRAPPER_KEYS))}."
        )
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead.")


def read_state_dict(path: str | Path, *, trust: bool = False) -> tuple[Any, dict[str, Any] | None]:
    """Read ``path``: returns ``(state_dict_or_module, recorded_factory)``.

    The first item is a ``dict[str, Tensor]`` for state-dict files and safetensors, or an
    ``nn.Module`` for TorchScript archives and (with ``trust=True``) pickled whole modules.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; check the path.")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory; pass the checkpoint file inside it.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty (0 bytes); the save was interrupted?")
    fmt = checkpoint_format(path)
    if fmt == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        recorded = None
        if "repdiag" in meta:
            try:
                recorded = json.loads(meta["repdiag"])
            except json.JSONDecodeError:
                recorded = None
        return sd, recorded
    if fmt == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu"), None
        except RuntimeError as exc:
            raise CheckpointError(f"{path} looks like a TorchScript archive but cannot be loaded: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, ...
        msg = str(exc)
        refused = "weights_only" in msg or "Unsupported global" in msg or "WeightsUnpickler" in msg
        if not refused:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                                  f"{msg.splitlines()[0] if msg else ''}); is the file complete?") from exc
        if not trust:
            raise CheckpointError(
                f"{path} contains pickled Python objects (not just tensors), and unpickling them can run any code. "
                "repdiag refused to load it. If you trust its author, pass --trust-checkpoint (trust=True); "
                "better, re-save it with torch.save(model.state_dict(), path)."
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(f"{path} could not be unpickled even with trust: {type(exc2).__name__}: {exc2}") from exc2
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj, None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), nn.Module):
        return obj["model"], None
    return _unwrap_state_dict(obj, path)


def _recorded_allowed(spec: str) -> bool:
    """A factory recorded in a checkpoint runs without trust only when it is a built-in model."""
    from .models import FACTORIES

    where, _, name = spec.rpartition(":")
    return where == "repdiag.models" and name in FACTORIES


def load_checkpoint(
    path: str | Path,
    model: Any = None,
    *,
    factory: str | Callable[..., Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    trust: bool = False,
    strict: bool = True,
) -> Any:
    """Load a checkpoint into a model and return the model (on the CPU, in its saved mode).

    Parameters
    ----------
    path : str or Path
        A state dict file (``.pt``/``.pth``, wrappers and prefixes handled), ``.safetensors``,
        a TorchScript archive, or (``trust=True`` only) a pickled whole module.
    model : nn.Module, optional
        The architecture to load into. Otherwise it is built from ``factory`` or, failing
        that, from the factory recorded in the checkpoint by :func:`save_checkpoint`.
    factory, model_kwargs : spec or callable, mapping
        ``"package.module:function"`` / ``"file.py:function"`` and its keyword arguments.
    trust : bool
        Allow unpickling arbitrary objects (runs code from the file) and calling a factory
        recorded in the checkpoint that is not one of repdiag's built-in models.
    strict : bool
        Raise on missing or unexpected keys (``num_batches_tracked`` is never required).

    Raises
    ------
    CheckpointError
        Missing, empty, corrupt or untrusted files; keys or shapes that do not fit the model
        (listed, with a hint when only a prefix differs).
    ConfigError
        A bad factory spec or keyword arguments.
    """
    from torch import nn

    obj, recorded = read_state_dict(path, trust=trust)
    if isinstance(obj, nn.Module):
        if model is not None or factory is not None:
            state = obj.state_dict()
            target = model if model is not None else build_model(factory, model_kwargs)  # type: ignore[arg-type]
            return load_state_into(target, state, path=path, strict=strict)
        return obj
    if model is None:
        if factory is not None:
            model = build_model(factory, model_kwargs)
        elif recorded is not None and isinstance(recorded.get("factory"), str):
            spec = recorded["factory"]
            kwargs = recorded.get("kwargs") or {}
            if not isinstance(kwargs, Mapping):
                raise CheckpointError(f"{path} records factory keyword arguments that are not a dict: {kwargs!r}.")
            if not trust and not _recorded_allowed(spec):
                raise CheckpointError(
                    f"{path} asks to be rebuilt by {spec!r}, which is not one of repdiag's built-in models; calling "
                    "it would run code the checkpoint chose. Pass --model SPEC yourself, or --trust-checkpoint."
                )
            model = build_model(spec, {**kwargs, **dict(model_kwargs or {})})
        else:
            raise CheckpointError(
                f"{path} holds only weights, and no architecture was given. Pass --model package.module:factory "
                "(or file.py:factory) with --model-kwargs, or save it with repdiag.save_checkpoint(model, path, "
                "factory=...)."
            )
    elif not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    return load_state_into(model, obj, path=path, strict=strict)
