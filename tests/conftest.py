"""Shared fixtures: devices to parametrize over, and small models of every supported shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=["native", "eager"])
def conv_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a conv-statistics test through the C kernel and through the eager reductions."""
    from repdiag.capture import _native

    if request.param == "native" and not _native.available():
        # one failure says so (tests/test_native.py::test_kernel_is_built), not one per test
        pytest.skip("the C kernel is not built: see tests/test_native.py::test_kernel_is_built")
    with _native.use_native(request.param == "native"):
        yield request.param
