"""Normalization layers' affine parameters (Frankle, Schwab, Morcos, ICLR 2021): the gamma table
of BatchNorm, LayerNorm, GroupNorm and RMSNorm layers, and the BN-only training set-ups with
their controls.

>>> import repdiag
>>> summary = repdiag.bn.freeze_all_but_bn(model)          # doctest: +SKIP
>>> repdiag.bn.gamma_table(model, reference=init_state)    # doctest: +SKIP
"""

from ._gamma import (
    DEFAULT_QUANTILES,
    DEFAULT_THRESHOLDS,
    gamma_table,
    is_norm_layer,
    is_norm_module,
    norm_layers,
    plain_norm_layers,
)
from ._setups import (
    SparseTrainable,
    TrainableSummary,
    freeze_all_but_bn,
    freeze_all_but_output,
    freeze_all_but_random,
    gamma_uniform_init,
    output_layer,
    trainable_summary,
)

__all__ = [
    "gamma_table",
    "norm_layers",
    "is_norm_layer",
    "is_norm_module",
    "plain_norm_layers",
    "freeze_all_but_bn",
    "freeze_all_but_output",
    "freeze_all_but_random",
    "gamma_uniform_init",
    "trainable_summary",
    "output_layer",
    "TrainableSummary",
    "SparseTrainable",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_QUANTILES",
]
