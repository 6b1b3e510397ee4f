"""Unitized batch normalisation (Huang & Yu, CVPR 2020, arXiv 2001.02814).

Batch normalisation whose normalised output is pulled towards a fixed per-sample norm:

    x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps)                 (plain BN, no affine)
    s     = ||x_hat||^2 / P                                     (per sample; P = spatial positions)
    y     = gamma * x_hat * (alpha / sqrt(s + eps) + (1 - alpha)) + beta

with ``alpha`` a trainable per-channel vector initialised at 0, so the layer starts as plain BN.
``||x_hat||^2`` is taken over channels and positions and divided by the number of positions P
(1 for ``(N, C)`` inputs), so with ``alpha = 1`` every sample's normalised output has norm
``sqrt(P)`` (norm 1 for ``(N, C)``) whatever its input scale.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._errors import ConfigError

__all__ = ["UnitizedBatchNorm1d", "UnitizedBatchNorm2d"]


class _UnitizedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Shared implementation; use :class:`UnitizedBatchNorm1d` or :class:`UnitizedBatchNorm2d`."""

    alpha: nn.Parameter

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        alpha_init: float = 0.0,
        learn_alpha: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        if isinstance(alpha_init, bool) or not isinstance(alpha_init, (int, float)) or not math.isfinite(alpha_init):
            raise ConfigError(f"alpha_init must be a finite number (0 = plain BN, 1 = unitized); got {alpha_init!r}.")
        self.alpha = nn.Parameter(torch.full((num_features,), float(alpha_init), device=device, dtype=dtype),
                                  requires_grad=bool(learn_alpha))

    def forward(self, input: Tensor) -> Tensor:
        # plain BN through nn.BatchNorm's own path (running statistics update there, once), plus
        # gamma * x_hat * alpha * (r - 1): exactly BN when alpha = 0 (the extra term is +-0).
        out = super().forward(input)
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        x_hat = F.batch_norm(
            input,
            None if use_batch else self.running_mean,
            None if use_batch else self.running_var,
            None, None, use_batch, 0.0, self.eps,
        )
        positions = x_hat[0, 0].numel() if x_hat.ndim > 2 else 1
        reduce_dims = tuple(range(1, x_hat.ndim))
        s = x_hat.pow(2).sum(dim=reduce_dims, keepdim=True) / positions
        shape = (1, -1) + (1,) * (x_hat.ndim - 2)
        scale = self.alpha.view(shape) * (torch.rsqrt(s + self.eps) - 1)
        if self.weight is not None:
            scale = scale * self.weight.view(shape)
        return out + x_hat * scale

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # a plain BatchNorm checkpoint has no alpha: keep the current one (0 = the same function)
        if prefix + "alpha" not in state_dict and isinstance(state_dict, dict):
            state_dict[prefix + "alpha"] = self.alpha.detach().clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", learn_alpha={self.alpha.requires_grad}"


class UnitizedBatchNorm1d(_UnitizedBatchNorm, nn.BatchNorm1d):
    """Unitized BatchNorm over ``(N, C)`` or ``(N, C, L)`` inputs; a drop-in for ``nn.BatchNorm1d``.

        y = gamma * x_hat * (alpha / sqrt(||x_hat||^2 / P + eps) + 1 - alpha) + beta

    per sample, with ``x_hat`` the batch-normalised input (batch statistics in training,
    running statistics in eval mode, as ``nn.BatchNorm1d``), the norm over channels and the L
    positions, P = L (1 for 2-D input) and ``alpha`` a per-channel parameter.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, device, dtype
        As ``nn.BatchNorm1d``; ``state_dict`` names are BN's plus ``alpha``. A plain BN
        ``state_dict`` loads too (``alpha`` keeps its value).
    alpha_init : float, default 0
        Initial alpha; 0 is plain BN (bitwise), 1 fully unitized.
    learn_alpha : bool, default True
        False freezes alpha (``requires_grad=False``), e.g. alpha fixed at 1.

    References
    ----------
    Huang & Yu, *An Internal Covariate Shift Bounding Algorithm for Deep Neural Networks by
    Unitizing Layers' Outputs*, CVPR 2020.

    Examples
    --------
    >>> import torch
    >>> m = UnitizedBatchNorm1d(4, alpha_init=1.0)
    >>> y = m(torch.randn(8, 4) * 10)
    >>> torch.linalg.vector_norm(y, dim=1).round(decimals=3)
    tensor([1., 1., 1., 1., 1., 1., 1., 1.], grad_fn=<RoundBackward1>)
    """


class UnitizedBatchNorm2d(_UnitizedBatchNorm, nn.BatchNorm2d):
    """Unitized BatchNorm over ``(N, C, H, W)`` inputs; a drop-in for ``nn.BatchNorm2d``.

    Same formula as :class:`UnitizedBatchNorm1d`, with ``||x_hat||^2`` summed over channels
    and the ``P = H * W`` positions and divided by P: with ``alpha = 1`` (and gamma 1, beta 0)
    each sample's map has norm ``sqrt(H * W)``, i.e. root-mean-square channel-vector norm 1.

    Examples
    --------
    >>> import torch
    >>> m = UnitizedBatchNorm2d(3)
    >>> torch.equal(m(torch.ones(2, 3, 4, 4)), torch.nn.BatchNorm2d(3)(torch.ones(2, 3, 4, 4)))
    True
    """
