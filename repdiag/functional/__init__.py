"""Pure tensor kernels: ``Tensor -> Tensor``, no state, device and dtype kept.

Each kernel is checked against a trusted implementation (scikit-learn, POT, SciPy) in the tests.
"""

__all__: list[str] = []
