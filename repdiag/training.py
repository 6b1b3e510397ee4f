"""A plain SGD training loop for the examples and the demo (optionally with a recorder)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .data import batches

__all__ = ["fit", "accuracy"]


def fit(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 10,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    seed: int = 0,
    recorder: Any = None,
    optimizer: torch.optim.Optimizer | None = None,
    on_step: Callable[[int, Tensor, Tensor, Tensor], None] | None = None,
    progress: Any = None,
) -> list[float]:
    """Train ``model`` with cross-entropy and SGD; return the mean loss of each epoch.

    ``recorder`` (from :func:`repdiag.attach`) gets ``step(labels=y, inputs=x)`` after each
    batch. ``on_step(step, x, y, loss)`` runs after each optimizer step. ``progress`` is a tqdm
    bar updated per batch, or None.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer or torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(seed)
    history: list[float] = []
    step = 0
    model.train()
    for _ in range(epochs):
        total, count = 0.0, 0
        for xb, yb in batches(x, y, batch_size, generator=g):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            if recorder is not None:
                recorder.step(labels=yb, inputs=xb)
            if on_step is not None:
                on_step(step, xb, yb, loss.detach())
            step += 1
            total += float(loss.detach()) * len(yb)
            count += len(yb)
            if progress is not None:
                progress.update(1)
        history.append(total / max(count, 1))
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (the model's mode is restored afterwards)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    model.train(was)
    return correct / max(x.shape[0], 1)
