"""Optimization-landscape probes (Santurkar et al., NeurIPS 2018): loss range, gradient
predictiveness, effective beta-smoothness, internal covariate shift as G vs G', and the top
Hessian eigenvalue.

Every probe evaluates the model functionally on copies and leaves parameters, ``.grad``,
buffers (BN running statistics), modes, the RNG state and the optimizer's state bitwise as it
found them. Run them by hand, or on a schedule with
``repdiag.attach(model, loss_fn=criterion, landscape_every=100, optimizer=opt)`` and
``rec.step(labels=y, inputs=x)``.
"""

from ._covariate import covariate_shift
from ._hessian import hessian_top_eigenvalue
from ._predictiveness import DEFAULT_STEP_SIZES, gradient_predictiveness
from ._scheduled import attach_landscape
from ._state import StateSnapshot

__all__ = [
    "gradient_predictiveness",
    "covariate_shift",
    "hessian_top_eigenvalue",
    "attach_landscape",
    "StateSnapshot",
    "DEFAULT_STEP_SIZES",
]
