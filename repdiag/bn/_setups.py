"""The training set-ups of the BN-only paper: only BN's affine parameters train, the output layer
too, the output layer alone, or a matched number of random weights (the control).

Each function sets ``requires_grad`` in place and returns a :class:`TrainableSummary`. Build
the optimizer afterwards from ``[p for p in model.parameters() if p.requires_grad]`` (or from
all parameters: frozen ones get no gradient, so SGD skips them, weight decay included).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .._errors import ConfigError, LayerNotFoundError
from .._validation import check_positive_int
from ._gamma import is_norm_layer, norm_layers

__all__ = [
    "TrainableSummary",
    "trainable_summary",
    "freeze_all_but_bn",
    "freeze_all_but_output",
    "freeze_all_but_random",
    "gamma_uniform_init",
    "output_layer",
    "SparseTrainable",
]


@dataclass
class TrainableSummary:
    """What trains: tensor names with ``requires_grad``, and scalar counts.

    ``partial`` maps a weight whose entries train only in part (the random control) to the
    number of its entries that train.
    """

    setup: str
    trainable: list[str]
    n_trainable: int
    n_total: int
    partial: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Trainable scalars over all scalars."""
        return self.n_trainable / self.n_total if self.n_total else 0.0

    def __str__(self) -> str:
        head = (f"{self.setup}: {self.n_trainable:,} of {self.n_total:,} parameters trainable "
                f"({100 * self.fraction:.2f}%) in {len(self.trainable)} tensor(s)")
        names = ", ".join(self.trainable[:8]) + (", ..." if len(self.trainable) > 8 else "")
        return f"{head}: {names}" if names else head


def _owned(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, nn.Parameter]]:
    """(module name, module, full parameter name, parameter) for every parameter, once."""
    seen: set[int] = set()
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            yield mname, mod, f"{mname}.{pname}" if mname else pname, p


def _host(mname: str) -> str:
    """The layer a parameter belongs to: ``conv.parametrizations.weight.0`` -> ``conv``."""
    return mname.split(".parametrizations.")[0] if ".parametrizations." in f"{mname}." else mname


def trainable_summary(model: nn.Module, setup: str = "current") -> TrainableSummary:
    """Summary of what has ``requires_grad`` now."""
    names, n_train, n_total = [], 0, 0
    partial: dict[str, int] = {}
    for mname, mod, full, p in _owned(model):
        if isinstance(mod, SparseTrainable):  # its entries are counted in the weight it replaces
            if p.requires_grad:
                partial[f"{_host(mname)}.weight"] = p.numel()
        else:
            n_total += p.numel()
        if p.requires_grad:
            names.append(full)
            n_train += p.numel()
    return TrainableSummary(setup, names, n_train, n_total, partial)


def output_layer(model: nn.Module, name: str | None = None) -> str:
    """The output layer's module name: ``name`` if given (checked), else the last module in module
    order that owns parameters and is not a normalization layer."""
    modules = dict(model.named_modules())
    if name is not None:
        if name not in modules:
            raise LayerNotFoundError(f"output_layer {name!r} is not a module of the model; modules owning parameters: "
                                     f"{[n for n, m in modules.items() if any(True for _ in m.parameters(False))]}.")
        return name
    candidates = [_host(n) for n, m in modules.items()
                  if any(True for _ in m.parameters(recurse=False)) and not is_norm_layer(modules[_host(n)])
                  and not isinstance(m, SparseTrainable)]
    if not candidates:
        raise ConfigError("the model has no parameter-owning module besides normalization layers; there is no "
                          "output layer to train. Pass output_layer='name' if it is one of those.")
    return candidates[-1]


def _in_layer(mname: str, layer: str) -> bool:
    return mname == layer or mname.startswith(f"{layer}.")


def _set(model: nn.Module, keep: set[str]) -> None:
    """requires_grad True exactly for the modules named in ``keep`` (and their submodules)."""
    for mname, _, _, p in _owned(model):
        p.requires_grad_(any(_in_layer(mname, k) for k in keep))


def freeze_all_but_bn(model: nn.Module, train_output: bool = False, *,
                      output_layer_name: str | None = None) -> TrainableSummary:
    """Freeze every parameter except the affine ones (gamma, beta) of normalization layers.

    The BN-only set-up of Frankle et al.: conv and linear weights stay at their random
    initialisation, only BN's scale and shift train (running statistics still update: they are
    buffers). With ``train_output`` the output layer (see :func:`output_layer`) trains too.

    Raises :class:`repdiag.ConfigError` when the model has no affine normalization layer.

    Examples
    --------
    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
    ...                         torch.nn.Linear(8, 3))
    >>> freeze_all_but_bn(m).trainable
    ['1.weight', '1.bias']
    >>> freeze_all_but_bn(m, train_output=True).n_trainable
    43
    """
    norms = {n for n, _ in norm_layers(model)}
    if not norms:
        raise ConfigError("the model has no normalization layer with affine parameters (BatchNorm, GroupNorm, "
                          "LayerNorm with affine=True); BN-only training would train nothing.")
    keep = set(norms)
    if train_output:
        keep.add(output_layer(model, output_layer_name))
    _set(model, keep)
    return trainable_summary(model, "bn+output" if train_output else "bn-only")


def freeze_all_but_output(model: nn.Module, *, output_layer_name: str | None = None) -> TrainableSummary:
    """Freeze everything except the output layer (the "output layer only" control)."""
    _set(model, {output_layer(model, output_layer_name)})
    return trainable_summary(model, "output-only")


class SparseTrainable(nn.Module):
    """Parametrization ``W = W0`` with the entries at ``index`` (flat) replaced by the trainable
    vector ``values``: exactly those entries train, every other entry stays ``W0`` bitwise (the
    frozen original), whatever the optimizer does (momentum, weight decay)."""

    def __init__(self, weight: Tensor, index: Tensor) -> None:
        super().__init__()
        self.index: Tensor
        self.register_buffer("index", index.to(weight.device, torch.int64))
        self.values = nn.Parameter(weight.detach().flatten()[index.to(weight.device, torch.int64)].clone())

    def forward(self, original: Tensor) -> Tensor:
        return original.flatten().index_put((self.index,), self.values).view_as(original)


def freeze_all_but_random(model: nn.Module, per_channel: int = 2, *, generator: torch.Generator | None = None,
                          train_output: bool = False, output_layer_name: str | None = None) -> TrainableSummary:
    """The random-parameter control: ``per_channel`` randomly chosen weights per output channel
    of every conv/linear layer train, everything else (BN included) is frozen.

    With two per channel this matches BN-only's count for a conv followed by BN (gamma and beta
    per channel). ``requires_grad`` is per tensor, so the chosen entries become their own
    parameter through a :class:`SparseTrainable` parametrization
    (:mod:`torch.nn.utils.parametrize`): ``layer.weight`` is computed from the frozen original
    and the trainable ``layer.parametrizations.weight[0].values``; the other entries cannot move.
    The output layer is excluded from the draw (frozen), or fully trainable with
    ``train_output``. Undo with ``torch.nn.utils.parametrize.remove_parametrizations(layer,
    "weight")``.

    Raises :class:`repdiag.ConfigError` when a weight is already parametrized (call it on a fresh
    model) or no conv/linear weight exists.
    """
    check_positive_int(per_channel, "per_channel")
    out_name = output_layer(model, output_layer_name)
    targets = [(n, m) for n, m in model.named_modules()
               if isinstance(getattr(m, "weight", None), Tensor) and not is_norm_layer(m) and n != out_name
               and not isinstance(m, SparseTrainable) and getattr(m, "weight").ndim >= 2]
    if not targets:
        raise ConfigError("the model has no conv or linear weight besides the output layer to draw random "
                          "trainable parameters from.")
    for n, m in targets:
        if parametrize.is_parametrized(m, "weight"):
            raise ConfigError(f"layer {n!r} already has a parametrized weight; call freeze_all_but_random on a "
                              "fresh model.")
    for _, _, _, p in _owned(model):
        p.requires_grad_(False)
    for _, m in targets:
        w = m.weight
        rows, per_row = w.shape[0], w[0].numel()
        k = min(per_channel, per_row)
        keys = torch.rand(rows, per_row, generator=generator)
        cols = keys.topk(k, dim=1).indices
        index = (torch.arange(rows)[:, None] * per_row + cols).flatten().sort().values
        parametrize.register_parametrization(m, "weight", SparseTrainable(w, index))
        m.parametrizations.weight.original.requires_grad_(False)
    if train_output:
        for mname, _, _, p in _owned(model):
            if _in_layer(mname, out_name):
                p.requires_grad_(True)
    return trainable_summary(model, "random+output" if train_output else "random")


def gamma_uniform_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """gamma ~ U[0, 1] and beta = 0 in every affine normalization layer, as in the BN-only
    paper's code (PyTorch's default is gamma = 1). Returns ``model``."""
    with torch.no_grad():
        for _, m in norm_layers(model):
            weight: Tensor = getattr(m, "weight")
            weight.uniform_(0.0, 1.0, generator=generator)
            bias = getattr(m, "bias", None)
            if isinstance(bias, Tensor):
                bias.zero_()
    return model
