"""BatchNorm's affine parameters (Frankle, Schwab, Morcos, ICLR 2021): the gamma table, and the
BN-only training set-ups with their controls.

>>> import repdiag
>>> summary = repdiag.bn.freeze_all_but_bn(model)          # doctest: +SKIP
>>> repdiag.bn.gamma_table(model, reference=init_state)    # doctest: +SKIP
"""

from ._gamma import DEFAULT_QUANTILES, DEFAULT_THRESHOLDS, gamma_table, is_norm_layer, norm_layers
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
