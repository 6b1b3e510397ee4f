"""Normalisation layers studied by repdiag (drop-ins for their ``torch.nn`` counterparts)."""

from ._unitized import UnitizedBatchNorm1d, UnitizedBatchNorm2d

__all__ = ["UnitizedBatchNorm1d", "UnitizedBatchNorm2d"]
