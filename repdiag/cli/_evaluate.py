"""Run loaded models over a data source through ``attach`` and gather what a report shows.

Shared by ``repdiag report`` and ``repdiag demo``. The report package never sees a model: this
module turns models into tidy tables, sampled activations and gamma arrays.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._errors import ConfigError, DataError, RepdiagError, RepdiagWarning
from ._data import DataSource
from ._progress import Progress, progress_bar  # the bars live in _progress; re-exported for old imports

__all__ = ["Progress", "RunResult", "check_device", "check_inputs", "evaluate", "bn_gammas", "progress_bar"]


@dataclass
class RunResult:
    """One model's evaluation: its tidy table, hooked layers, kept samples and BN gammas."""

    name: str
    table: pd.DataFrame
    layers: list[str]
    modules: list[str]
    samples: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    gammas: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def check_device(device: str) -> torch.device:
    """``device`` as a torch.device that exists here, else :class:`ConfigError`."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"--device must be a torch device such as 'cpu' or 'cuda:0'; got {device!r}.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device!r} asks for CUDA, which this machine lacks; use --device cpu.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device!r} asks for MPS, which this machine lacks; use --device cpu.")
    return dev


def bn_gammas(model: nn.Module) -> dict[str, np.ndarray]:
    """``{module path: gamma (C,)}`` of every affine normalization layer (BatchNorm, LayerNorm,
    GroupNorm, RMSNorm, ...: :func:`repdiag.bn.is_norm_layer`), flattened, for the histograms."""
    from ..bn import norm_layers

    out: dict[str, np.ndarray] = {}
    for name, m in norm_layers(model):
        weight: torch.Tensor = getattr(m, "weight")
        out[name] = weight.detach().float().flatten().cpu().numpy().copy()
    return out


def _float_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating parameter (the inputs' dtype), None without one."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def check_inputs(model: nn.Module, data: DataSource, name: str) -> None:
    """Refuse, before any forward, named inputs that ``model.forward`` has no argument for."""
    import inspect

    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # builtins and C extensions: let the forward say
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    names = [p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                  inspect.Parameter.KEYWORD_ONLY)]
    given = ([data.x_name] if data.x_name else []) + list(data.kwargs)
    bad = [k for k in given if k not in names]
    if bad:
        raise DataError(f"--data holds input(s) {', '.join(map(repr, bad))}, but model {name!r} takes "
                        f"forward({', '.join(names)}); name the arrays after its arguments ('x' for the positional "
                        "input, 'y' or 'labels' for the labels).")


def evaluate(model: nn.Module, data: DataSource, *, name: str, layers: Any = "auto",
             metrics: str | Sequence[str] | None = "default", batch_size: int = 256, device: torch.device | None = None,
             keep: Sequence[str] | str = "all", quiet: bool = True, seed: int = 0,
             metric_options: dict[str, dict[str, Any]] | None = None,
             capture_options: dict[str, Any] | None = None) -> RunResult:
    """Forward ``data`` through ``model`` in eval mode without gradients, with ``attach``;
    returns the table (``step`` empty: these are not training steps) and the samples of ``keep``.

    Each batch goes in as ``model(x)`` or, for named inputs, ``model(input_ids=..., ...)``
    (:meth:`DataSource.forward_batches`); floating inputs take the model's dtype.
    ``capture_options`` (``reduce``, ``capture``, ``feature_dim``) go to ``attach``.
    """
    from ..capture import attach

    if isinstance(model, torch.jit.ScriptModule):
        raise ConfigError(
            f"run {name!r} is a TorchScript module, which cannot take forward hooks. Pass --model SPEC (and "
            "--model-kwargs) to load its weights into the eager architecture."
        )
    check_inputs(model, data, name)
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    rec = attach(model, layers, max_samples=data.x.shape[0], metrics=metrics, run=name, seed=seed,
                 metric_options=metric_options, **dict(capture_options or {}))
    caught: list[str] = []
    labelled = data.has_labels
    try:
        n_batches = (data.x.shape[0] + batch_size - 1) // batch_size
        with torch.no_grad(), progress_bar(n_batches, f"forward {name}", quiet, "batch") as bar:
            for b in data.forward_batches(batch_size, device, _float_dtype(model)):
                try:
                    model(*b.args, **b.kwargs)
                except RepdiagError:
                    raise
                except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    hint = ("the example models take x of shape (N, 1, 8, 8) digits" if data.x_name is None else
                            "a Hugging Face model takes input_ids (N, T) and attention_mask (N, T)")
                    raise DataError(
                        f"data {data.shapes()} ({data.description}) does not fit model {name!r}: {first}. Pass "
                        f"--data that matches the model's input ({hint})."
                    ) from exc
                # the attention_mask among b.kwargs reaches the recorder's root hook: padded tokens
                # are left out of the rows; -1 fills a source without labels
                rec.step(labels=b.y if labelled else None)
                bar.update(1)
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always", RepdiagWarning)
            table = rec.table()
        caught = list(dict.fromkeys(f"{name}: {w.message}" for w in ws if issubclass(w.category, RepdiagWarning)))
        hooked = rec.layers
        if keep == "all":
            keep = hooked
        samples = {lay: rec.samples(lay) for lay in keep if lay in hooked}
    finally:
        rec.detach()
    table["step"] = pd.array([pd.NA] * len(table), dtype="Int64")
    modules = [n for n, _ in model.named_modules() if n]
    return RunResult(name, table, hooked, modules, {k: (x.cpu(), y.cpu()) for k, (x, y) in samples.items()},
                     bn_gammas(model), caught)
