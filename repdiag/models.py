"""Small reference models for the bundled digits data (and a CIFAR-shaped CNN for benchmarks).

Plain torch, no torchvision. Activations are ``nn.ReLU`` modules so ``layers="auto"`` finds the
post-activation representations. Each factory is importable as a ``--model`` spec, e.g.
``repdiag.models:small_cnn``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from ._errors import ConfigError

__all__ = ["small_cnn", "mlp", "cifar_cnn", "he_init", "Norm", "FACTORIES"]

Norm = Literal["none", "bn", "unitized"]


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind == "bn":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if kind == "unitized":
        from .nn import UnitizedBatchNorm1d, UnitizedBatchNorm2d

        return UnitizedBatchNorm2d(channels) if dims == 2 else UnitizedBatchNorm1d(channels)
    raise ConfigError(f"norm must be 'none', 'bn' or 'unitized'; got {kind!r}.")


def _check_norm(norm: str | bool) -> str:
    if isinstance(norm, bool):
        return "bn" if norm else "none"
    if norm not in ("none", "bn", "unitized"):
        raise ConfigError(f"norm must be 'none', 'bn' or 'unitized'; got {norm!r}.")
    return norm


def small_cnn(norm: str | bool = "bn", width: int = 16, num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """The SmallCNN of RESEARCH.md for 8x8 digits: conv16-conv32-pool-conv32-pool-fc64-fc10.

    With ``norm="bn"`` a BatchNorm follows every conv and the hidden fc layer, before its ReLU.
    Input ``(N, in_channels, 8, 8)``.
    """
    k = _check_norm(norm)
    bias = k == "none"
    w1, w2 = width, 2 * width
    return nn.Sequential(
        nn.Conv2d(in_channels, w1, 3, padding=1, bias=bias), _norm(k, w1, 2), nn.ReLU(),
        nn.Conv2d(w1, w2, 3, padding=1, bias=bias), _norm(k, w2, 2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w2, w2, 3, padding=1, bias=bias), _norm(k, w2, 2), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(w2 * 2 * 2, 64, bias=bias), _norm(k, 64, 1), nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def mlp(norm: str | bool = "bn", depth: int = 4, width: int = 128, in_features: int = 64,
        num_classes: int = 10) -> nn.Sequential:
    """An MLP: ``depth`` hidden layers of ``width`` units, each Linear -> norm -> ReLU.

    Input ``(N, in_features)`` or anything that flattens to it (8x8 digits give 64).
    """
    k = _check_norm(norm)
    layers: list[nn.Module] = [nn.Flatten()]
    d = in_features
    for _ in range(depth):
        layers += [nn.Linear(d, width, bias=k == "none"), _norm(k, width, 1), nn.ReLU()]
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def cifar_cnn(norm: str | bool = "bn", width: int = 32, num_classes: int = 10) -> nn.Sequential:
    """A small CIFAR-shaped CNN (3x32x32 input, 4 conv layers), for the capture benchmark."""
    k = _check_norm(norm)
    bias = k == "none"
    c = [3, width, 2 * width, 4 * width, 4 * width]
    layers: list[nn.Module] = []
    for i in range(4):
        layers += [nn.Conv2d(c[i], c[i + 1], 3, padding=1, bias=bias), _norm(k, c[i + 1], 2), nn.ReLU()]
        if i > 0:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[-1], num_classes)]
    return nn.Sequential(*layers)


def he_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU gain) weights and zero biases for every conv and linear layer."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
    return model


FACTORIES = {"small_cnn": small_cnn, "mlp": mlp, "cifar_cnn": cifar_cnn}
