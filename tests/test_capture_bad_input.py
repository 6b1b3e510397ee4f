"""Bad input and faults at capture time (issue 14): each case one clear error, a warning, or the
right rows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import repdiag
from repdiag import RepdiagError, RepdiagWarning
from repdiag._errors import ConfigError, ShapeError


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool])
def test_labels_of_every_integer_dtype(dtype: torch.dtype) -> None:
    model = _mlp()
    with repdiag.attach(model, "1", metrics=None) as rec:
        model(torch.randn(4, 4))
        rec.step(labels=torch.tensor([1, 0, 1, 1]).to(dtype))
        _, y = rec.samples("1")
        assert y.dtype == torch.int64 and y.tolist() == [1, 0, 1, 1]


def test_string_labels_clear_error() -> None:
    model = _mlp()
    with repdiag.attach(model, "1", metrics=None) as rec:
        model(torch.randn(2, 4))
        with pytest.raises(ShapeError, match=r"labels must be a 1-D integer tensor.*Map class names to indices"):
            rec.step(labels=["cat", "dog"])


def test_negative_labels_say_what_arrived() -> None:
    model = _mlp()
    with repdiag.attach(model, "1", metrics=None) as rec:
        model(torch.randn(3, 4))
        with pytest.raises(ShapeError, match=r"class indices >= 0; got torch.int64 labels of shape \(3,\) with minimum -100"):
            rec.step(labels=torch.tensor([0, -100, 1]))


def test_first_forward_under_inference_mode_keeps_recording() -> None:
    model = _mlp()
    with repdiag.attach(model, "1", metrics=None) as rec:
        with torch.inference_mode():
            model(torch.randn(3, 4))
        rec.step(labels=torch.tensor([0, 1, 0]))
        model(torch.randn(3, 4))  # outside inference mode, the buffers made inside still work
        rec.step(labels=torch.tensor([1, 1, 1]))
        assert rec.attached and rec.stats("1").samples == 6
        assert sorted(rec.samples("1")[1].tolist()) == [0, 0, 1, 1, 1, 1]


def test_aborted_forward_rows_do_not_get_next_labels() -> None:
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)
            self.fail = False

        def forward(self, x):
            h = self.act(self.fc(x))
            if self.fail:
                raise RuntimeError("CUDA out of memory (simulated)")
            return self.out(h)

    model = Flaky()
    with repdiag.attach(model, "act", metrics=None) as rec:
        model.fail = True
        with pytest.raises(RuntimeError, match="out of memory"):
            model(torch.randn(5, 4))  # skipped batch: the user catches and goes on
        model.fail = False
        x = torch.randn(3, 4)
        model(x)
        rec.step(labels=torch.tensor([7, 8, 9]))
        rows, y = rec.samples("act")
        assert y.tolist() == [7, 8, 9]  # the aborted batch's 5 rows are gone
        with rec.paused():
            torch.testing.assert_close(rows, model.act(model.fc(x)))
        # aborted with no forward after it: dropped at step()
        model.fail = True
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 4))
        rec.step(labels=torch.tensor([1, 2]))  # n of the aborted batch is not checked against labels
        assert rec.samples("act")[1].tolist() == [7, 8, 9]


def test_bad_feature_and_batch_dim_refused_and_detached() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    for opt in ({"feature_dim": 6}, {"batch_dim": 7}, {"feature_dim": -5}):
        rec = repdiag.attach(model, "1", metrics=None, **opt)
        what, v = next(iter(opt.items()))
        with pytest.raises(ShapeError, match=rf"{what}={v} does not exist on the 4-D activation .* \[-4, 3\]"):
            model(torch.randn(2, 3, 5, 5))
        assert not rec.attached
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
        model(torch.randn(2, 3, 5, 5))  # the model works again


@pytest.mark.parametrize("value", [1.5, "2", True, {"1": "x"}])
def test_feature_dim_wrong_type(value: object) -> None:
    with pytest.raises(ConfigError, match="feature_dim must be None"):
        repdiag.attach(_mlp(), "1", feature_dim=value)


def test_seed_wrong_type() -> None:
    with pytest.raises(ConfigError, match=r"seed must be an int; got str 'abc'"):
        repdiag.attach(_mlp(), "1", seed="abc")


def test_empty_batch_warns() -> None:
    model = _mlp()
    with repdiag.attach(model, "1", metrics=None) as rec:
        with pytest.warns(RepdiagWarning, match="saw an empty batch"):
            model(torch.randn(0, 4))
        assert rec.attached and rec.stats("1") is None


def test_complex_activation_warns() -> None:
    class C(nn.Module):
        def forward(self, x):
            return torch.complex(x, x)

    model = nn.Sequential(nn.Linear(4, 3), C())
    with repdiag.attach(model, "1", metrics=None) as rec:
        with pytest.warns(RepdiagWarning, match=r"complex64 activation; repdiag records real activations only"):
            model(torch.randn(2, 4))
        assert rec.stats("1") is None and rec.attached


def test_errors_are_repdiag_errors() -> None:
    assert issubclass(ShapeError, RepdiagError) and issubclass(ConfigError, RepdiagError)
