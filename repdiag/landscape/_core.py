"""What every landscape probe shares: reading the batch, and evaluating loss and gradients at
arbitrary parameter values without writing the model.

Each evaluation runs :func:`torch.func.functional_call` with the given parameter values and with
*clones* of the buffers, so BatchNorm in train mode normalises with batch statistics but its
running statistics (and ``num_batches_tracked``) never change; gradients come from
:func:`torch.autograd.grad`, so ``.grad`` is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .._errors import ConfigError, ShapeError
from .._validation import describe, first_tensor
from ._state import ProbeGuard

__all__ = ["Problem", "LossFn", "sq_norm", "diff_sq_norm", "dot"]

LossFn = Callable[[Any, Any], Tensor]


def split_batch(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """``(inputs, targets)`` -> positional args, keyword args, targets.

    ``inputs`` may be a tensor (``model(x)``), a tuple/list (``model(*inputs)``) or a dict
    (``model(**inputs)``).
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ConfigError(
            f"batch must be a pair (inputs, targets) such that loss_fn(model(inputs), targets) is the loss; "
            f"got {describe(batch) if not isinstance(batch, (tuple, list)) else f'a sequence of {len(batch)}'}. "
            "Pass batch=(x, y)."
        )
    inputs, targets = batch
    if isinstance(inputs, Mapping):
        return (), dict(inputs), targets
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}, targets
    return (inputs,), {}, targets


def sq_norm(ts: Sequence[Tensor]) -> Tensor:
    """Squared l2 norm of the concatenation of ``ts`` (per-tensor norms, summed in float64), 0-d."""
    norms = torch._foreach_norm([t.detach() for t in ts])
    return torch.stack([n.double() for n in norms]).pow(2).sum()


def diff_sq_norm(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """``sq_norm`` of the elementwise difference ``a - b``."""
    return sq_norm(torch._foreach_sub([t.detach() for t in a], [t.detach() for t in b]))


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """Inner product of two concatenations (float64 accumulation), a 0-d tensor."""
    return torch.stack([(x.detach().double() * y.detach().double()).sum() for x, y in zip(a, b)]).sum()


class Problem:
    """A model, a loss and one batch: evaluates ``L(w)`` and its gradient at any ``w``.

    Parameters that are trainable (``requires_grad``) are the probe's coordinates ``w``; frozen
    ones stay at their current value.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Any, guard: ProbeGuard) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        if not callable(loss_fn):
            raise ConfigError(f"loss_fn must be callable as loss_fn(model(inputs), targets); got {loss_fn!r}. "
                              "Pass e.g. torch.nn.CrossEntropyLoss().")
        self.model = model
        self.loss_fn = loss_fn
        self.args, self.kwargs, self.targets = split_batch(batch)
        first = first_tensor((self.args, self.kwargs))
        self.n = int(first.shape[0]) if first is not None and first.ndim > 0 else 0
        self.guard = guard
        self.params: dict[str, Tensor] = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if not self.params:
            raise ConfigError("the model has no trainable parameters (requires_grad=True); the landscape "
                              "probes differentiate the loss with respect to them. Unfreeze some first.")
        self.names = list(self.params)
        self.buffers: dict[str, Tensor] = dict(model.named_buffers())

    def base(self, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Leaf tensors sharing storage with the current parameters, requiring grad."""
        return {n: self.params[n].detach().requires_grad_(True) for n in (names or self.names)}

    def forward_loss(self, values: Mapping[str, Tensor]) -> Tensor:
        """The loss at ``values`` (a subset of parameters; the rest keep their value)."""
        self.guard.rewind_rng()
        state = {**{n: b.clone() for n, b in self.buffers.items()}, **values}
        with torch.enable_grad():
            out = functional_call(self.model, state, self.args, self.kwargs)
            loss = self.loss_fn(out, self.targets)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise ShapeError(
                f"loss_fn must return a scalar tensor; got {describe(loss)}. Use a loss with reduction='mean' "
                "(or 'sum'), e.g. torch.nn.CrossEntropyLoss()."
            )
        return loss

    def loss_and_grad(self, values: Mapping[str, Tensor], wrt: Sequence[str]) -> tuple[float, list[Tensor]]:
        """Loss at ``values`` and its gradient with respect to the entries named ``wrt`` (which
        must be leaf tensors in ``values`` that require grad); unused parameters get zeros."""
        loss = self.forward_loss(values)
        inputs = [values[n] for n in wrt]
        grads: Sequence[Tensor | None] = (
            torch.autograd.grad(loss, inputs, allow_unused=True) if loss.requires_grad else [None] * len(inputs))
        out = [torch.zeros_like(t) if g is None else g.detach() for t, g in zip(inputs, grads)]
        return float(loss.detach()), out

