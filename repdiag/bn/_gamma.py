"""Statistics of the normalization layers' affine parameters: the gamma table (Frankle, Schwab,
Morcos, ICLR 2021: how many features BN disables with small gamma)."""

from __future__ import annotations

import math

import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .._errors import CheckpointError, ConfigError, RepdiagWarning, ShapeError
from ..metrics._registry import Row, settle_rows
from ..tables import make_table

__all__ = ["gamma_table", "gamma_rows", "norm_layers", "is_norm_layer", "is_norm_module", "plain_norm_layers", "DEFAULT_THRESHOLDS", "DEFAULT_QUANTILES"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (1e-3, 1e-2, 5e-2, 1e-1)
DEFAULT_QUANTILES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
                                             *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_NORM_NAME = re.compile(r"Norm([123]d)?$")
"""Class names of normalization layers outside torch: ``...Norm`` (``LlamaRMSNorm``, ``T5LayerNorm``,
``ConvNextLayerNorm``), optionally ``...Norm1d/2d/3d``."""


def _affine(module: nn.Module, name: str) -> bool:
    return isinstance(getattr(module, name, None), nn.Parameter) or _parametrized(module, name)


def is_norm_module(module: nn.Module) -> bool:
    """True for any normalization layer, with or without affine parameters: torch's BatchNorm*,
    SyncBatchNorm, InstanceNorm*, GroupNorm, LayerNorm and RMSNorm (and their subclasses), and any
    other module whose class name ends in ``Norm`` (or ``Norm1d/2d/3d``) and which owns a 1-D
    ``weight`` parameter (Hugging Face's ``LlamaRMSNorm``, ``T5LayerNorm``, ...). Such a module
    without a weight cannot be told from other modules by its name alone, so it does not count."""
    if isinstance(module, _NORM_TYPES):
        return True
    if not _NORM_NAME.search(type(module).__name__) or not _affine(module, "weight"):
        return False
    return getattr(module, "weight").ndim == 1


def is_norm_layer(module: nn.Module) -> bool:
    """True for a normalization layer with a learnable scale (see :func:`is_norm_module`):
    BatchNorm*, SyncBatchNorm and InstanceNorm* with ``affine=True``, GroupNorm with ``affine``,
    LayerNorm and RMSNorm with ``elementwise_affine``, other ``...Norm`` modules with a 1-D
    ``weight`` (repdiag's unitized BN, Hugging Face's RMSNorm and LayerNorm variants)."""
    return is_norm_module(module) and _affine(module, "weight")


def _parametrized(module: nn.Module, name: str) -> bool:
    p = getattr(module, "parametrizations", None)
    return p is not None and name in p


def norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every affine normalization layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if is_norm_layer(m)]


def plain_norm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every normalization layer without a learnable scale
    (``affine=False``, ``elementwise_affine=False``), in module order: they have no gamma."""
    return [(n, m) for n, m in model.named_modules() if is_norm_module(m) and not is_norm_layer(m)]


def _check_levels(values: Any, name: str, *, closed: bool) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers; got {values!r}.") from exc
    ok = all((0.0 <= v <= 1.0) if closed else (v > 0 and v == v and v != float("inf")) for v in out)
    if not out or not ok:
        rule = "numbers in [0, 1]" if closed else "finite numbers > 0"
        raise ConfigError(f"{name} must be a non-empty sequence of {rule}; got {values!r}.")
    return out


def _reference_tensor(reference: Mapping[str, Any], key: str, like: Tensor) -> Tensor:
    for k in (key, f"module.{key}"):
        if k in reference:
            t = torch.as_tensor(reference[k]).detach()
            if t.shape != like.shape:
                raise ShapeError(f"reference[{k!r}] must have shape {tuple(like.shape)} like the model's; got "
                                 f"{tuple(t.shape)}. Pass a state dict of the same architecture.")
            return t.to(like.device)
    raise CheckpointError(f"reference lacks {key!r}; pass a state dict of the same model, e.g. "
                          "copy.deepcopy(model.state_dict()) taken at initialisation.")


def _quantiles(t: Tensor, qs: Sequence[float]) -> Tensor:
    """``torch.quantile(t, qs)`` (linear interpolation) without its host check of ``qs`` (a sync on
    CUDA): the positions come from the length, known on the host."""
    s = t.sort().values
    pos = [q * (t.numel() - 1) for q in qs]
    lo = [math.floor(p) for p in pos]
    hi = [min(i + 1, t.numel() - 1) for i in lo]
    frac = torch.tensor([p - i for p, i in zip(pos, lo)], dtype=t.dtype).to(t.device)
    return torch.lerp(s[torch.tensor(lo).to(t.device)], s[torch.tensor(hi).to(t.device)], frac)


def gamma_rows(
    model: nn.Module,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    reference: Mapping[str, Any] | nn.Module | None = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> Iterator[Row]:
    """Row dicts of :func:`gamma_table` (for the metric plugin); values are 0-d tensors, to be
    brought to the host together (:func:`repdiag.metrics._registry.settle_rows`)."""
    taus = _check_levels(thresholds, "thresholds", closed=False)
    qs = _check_levels(quantiles, "quantiles", closed=True)
    if isinstance(reference, nn.Module):
        reference = reference.state_dict()
    if reference is not None and not isinstance(reference, Mapping):
        raise ConfigError(f"reference must be a state dict (mapping of names to tensors) or a module; got "
                          f"{type(reference).__name__}.")
    plain = plain_norm_layers(model)
    if plain:
        shown = ", ".join(f"{n or '(model)'!r} ({type(m).__name__})" for n, m in plain[:6])
        more = f" and {len(plain) - 6} more" if len(plain) > 6 else ""
        warnings.warn(f"{len(plain)} normalization layer(s) without affine parameters (affine=False or "
                      f"elementwise_affine=False) have no gamma or beta, so the gamma table has no rows for them: "
                      f"{shown}{more}.", RepdiagWarning, stacklevel=3)
    for depth, (name, mod) in enumerate(norm_layers(model)):
        common = {"layer": name, "module": type(mod).__name__, "depth": depth}
        weight: Tensor = getattr(mod, "weight")
        with torch.no_grad():
            gamma = weight.detach().flatten().double()
            beta_p = getattr(mod, "bias", None)
            beta = beta_p.detach().flatten().double() if isinstance(beta_p, Tensor) else None
            ref = None
            if reference is not None:
                ref = _reference_tensor(reference, f"{name}.weight" if name else "weight", weight).flatten().double()
        # values stay 0-d tensors on the parameters' device: the caller brings every row's value to
        # the host in one transfer (settle_rows), not one sync per value and layer
        c = int(gamma.numel())
        for tau in taus:
            yield {**common, "metric": "gamma_below", "value": (gamma.abs() < tau).double().mean(), "n": c,
                   "threshold": tau}
            if ref is not None:
                yield {**common, "metric": "gamma_below_ref", "value": (ref.abs() < tau).double().mean(),
                       "n": c, "threshold": tau}
        for label, t in (("gamma", gamma), ("beta", beta)):
            if t is None:
                continue
            yield {**common, "metric": f"{label}_mean", "value": t.mean(), "n": c}
            yield {**common, "metric": f"{label}_std", "value": t.std(correction=0), "n": c}
            qv = _quantiles(t, qs)
            for i, q in enumerate(qs):
                yield {**common, "metric": f"{label}_quantile", "value": qv[i], "n": c, "quantile": q}


def gamma_table(
    model: nn.Module,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    reference: Mapping[str, Any] | nn.Module | None = None,
    *,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> pd.DataFrame:
    """Per normalization layer: how many channels have a near-zero scale, and the distribution of
    scale (gamma) and shift (beta).

    For each affine normalization layer (see :func:`is_norm_layer`) with ``C`` scale entries:

    - ``gamma_below`` (column ``threshold`` = tau): ``#{c : |gamma_c| < tau} / C``, the fraction
      of features the layer (nearly) switches off;
    - ``gamma_below_ref``: the same fraction at ``reference`` (e.g. at initialisation; with
      gamma ~ U[0, 1] it is about tau itself), so the change from training shows beside it;
    - ``gamma_mean``, ``gamma_std`` (population, ``correction=0``), ``gamma_quantile`` (column
      ``quantile``; 0 and 1 are min and max), and the same for beta where the layer has one.

    Parameters
    ----------
    model : nn.Module
    thresholds : sequence of float > 0
        The sweep of tau; default ``(1e-3, 1e-2, 5e-2, 1e-1)`` as in RESEARCH.md section 3.
    reference : state dict or nn.Module, optional
        Parameters to compare with, keyed like ``model.state_dict()``.
    quantiles : sequence of float in [0, 1]

    Returns
    -------
    DataFrame
        Tidy rows; ``depth`` is the position among normalization layers in module order, ``n``
        the number of channels (scale entries), ``step`` empty. A model without affine
        normalization layers gives an empty table.

    References
    ----------
    Frankle, Schwab, Morcos, *Training BatchNorm and Only BatchNorm: On the Expressive Power of
    Random Features in CNNs*, ICLR 2021 (arXiv 2003.00152), Sec. 5.

    Examples
    --------
    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(4)
    >>> with torch.no_grad():
    ...     _ = bn.weight.copy_(torch.tensor([0.0, 0.005, 0.5, -2.0]))
    >>> t = gamma_table(torch.nn.Sequential(bn), thresholds=(0.001, 0.01))
    >>> t[t.metric == "gamma_below"][["threshold", "value"]].values.tolist()
    [[0.001, 0.25], [0.01, 0.5]]
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    return make_table(settle_rows(list(gamma_rows(model, thresholds, reference, quantiles))))
