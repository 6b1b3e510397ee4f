"""Exact save, compare and restore of everything a probe could disturb.

The probes never write the model: they evaluate it with :func:`torch.func.functional_call` on
cloned parameters and cloned buffers, take gradients with :func:`torch.autograd.grad` (``.grad``
stays as it was) and run the optimizer's step on a deep copy. What they do change, the global
RNG (dropout) and the train/eval flags, :class:`ProbeGuard` puts back. :class:`StateSnapshot`
captures the whole state bitwise, for tests and for users who want to check a probe themselves.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["RngState", "StateSnapshot", "ProbeGuard", "module_modes", "restore_modes"]


@dataclass
class RngState:
    """The global CPU generator's state and, where CUDA is initialised, every device's state."""

    cpu: Tensor
    cuda: list[Tensor] | None

    @classmethod
    def capture(cls) -> RngState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)

    def equal(self, other: RngState) -> bool:
        if not torch.equal(self.cpu, other.cpu):
            return False
        if (self.cuda is None) != (other.cuda is None):
            return False
        return self.cuda is None or all(torch.equal(a, b) for a, b in zip(self.cuda, other.cuda or []))


def module_modes(model: nn.Module) -> dict[str, bool]:
    """``training`` flag of every submodule, by name."""
    return {name: m.training for name, m in model.named_modules()}


def restore_modes(model: nn.Module, modes: dict[str, bool]) -> None:
    """Set every submodule's ``training`` flag back to ``modes`` (from :func:`module_modes`)."""
    for name, m in model.named_modules():
        if name in modes:
            m.training = modes[name]


class ProbeGuard:
    """Context manager for a probe: saves the RNG state and the modes, optionally puts the model
    in train mode, and restores both on exit (also when an exception passes through).

    :meth:`rewind_rng` resets the RNG to its state on entry, so every forward pass of a probe
    draws the same dropout masks (the same batch seen the same way).
    """

    def __init__(self, model: nn.Module, *, train: bool | None = True) -> None:
        self.model = model
        self.train = train
        self.rng: RngState | None = None
        self.modes: dict[str, bool] = {}

    def __enter__(self) -> ProbeGuard:
        self.rng = RngState.capture()
        self.modes = module_modes(self.model)
        if self.train is not None:
            self.model.train(self.train)
        return self

    def rewind_rng(self) -> None:
        if self.rng is not None:
            self.rng.restore()

    def __exit__(self, *exc: object) -> None:
        restore_modes(self.model, self.modes)
        if self.rng is not None:
            self.rng.restore()


def _clone(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().clone()


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _equal(a: Any, b: Any) -> bool:
    """Bitwise equality of nested state: tensors compared bit for bit (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
            return False
        if a.is_floating_point() or a.is_complex():
            bits = _BITS.get(a.element_size())
            if bits is not None and not a.is_complex():
                return torch.equal(a.contiguous().view(bits), b.contiguous().view(bits))
        return torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


@dataclass
class StateSnapshot:
    """A bitwise copy of a model's (and optionally an optimizer's) state.

    Holds parameters, ``.grad`` (``None`` kept as ``None``), ``requires_grad`` flags, buffers,
    every submodule's train/eval flag, the global RNG state (CPU and initialised CUDA devices)
    and a deep copy of the optimizer's ``state_dict()``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> snap = StateSnapshot.take(model)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)
    >>> snap.differences(model)
    ['parameter weight']
    >>> snap.restore(model)
    >>> snap.differences(model)
    []
    """

    params: dict[str, Tensor]
    grads: dict[str, Tensor | None]
    requires_grad: dict[str, bool]
    buffers: dict[str, Tensor | None]
    modes: dict[str, bool]
    rng: RngState
    optimizer: dict[str, Any] | None = field(default=None)

    @classmethod
    def take(cls, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> StateSnapshot:
        params = dict(model.named_parameters())
        return cls(
            params={n: p.detach().clone() for n, p in params.items()},
            grads={n: _clone(p.grad) for n, p in params.items()},
            requires_grad={n: p.requires_grad for n, p in params.items()},
            buffers={n: _clone(b) for n, b in model.named_buffers()},
            modes=module_modes(model),
            rng=RngState.capture(),
            optimizer=None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
        )

    def differences(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
        """What differs bitwise between the snapshot and ``model`` (and ``optimizer``) now."""
        out: list[str] = []
        params = dict(model.named_parameters())
        if params.keys() != self.params.keys():
            out.append("parameter names")
        for n, p in params.items():
            if n not in self.params:
                continue
            if not _equal(p.detach(), self.params[n]):
                out.append(f"parameter {n}")
            g0 = self.grads[n]
            if (p.grad is None) != (g0 is None) or (g0 is not None and not _equal(p.grad, g0)):
                out.append(f"grad {n}")
            if p.requires_grad != self.requires_grad[n]:
                out.append(f"requires_grad {n}")
        buffers = dict(model.named_buffers())
        if buffers.keys() != self.buffers.keys():
            out.append("buffer names")
        for n, b in buffers.items():
            if n in self.buffers and not _equal(b, self.buffers[n]):
                out.append(f"buffer {n}")
        if module_modes(model) != self.modes:
            out.append("modes")
        if not self.rng.equal(RngState.capture()):
            out.append("rng")
        if optimizer is not None and (self.optimizer is None or not _equal(optimizer.state_dict(), self.optimizer)):
            out.append("optimizer state")
        return out

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Write the snapshot back into ``model`` (and ``optimizer``) in place."""
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in self.params:
                    p.copy_(self.params[n])
                    p.requires_grad_(self.requires_grad[n])
                    g = self.grads[n]
                    p.grad = None if g is None else g.clone()
            for n, b in model.named_buffers():
                saved = self.buffers.get(n)
                if saved is not None:
                    b.copy_(saved)
        restore_modes(model, self.modes)
        self.rng.restore()
        if optimizer is not None and self.optimizer is not None:
            optimizer.load_state_dict(copy.deepcopy(self.optimizer))

