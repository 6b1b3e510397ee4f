"""Models of every architecture the capture engine must leave untouched."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """A ResNet block with a shortcut and functional activations (no ReLU modules)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.layer1(self.stem(x)).mean(dim=(2, 3)))


class TupleOut(nn.Module):
    """Its inner block returns a tuple; the captured tensor is the first element."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _Pair()
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.inner(x)
        return self.head(a + b)


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.act = nn.Tanh()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.act(self.lin(x))
        return h, h * 2


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _DictBody()
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        d = self.body(x)
        return self.head(d["features"]) + d["aux"].sum()


class _DictBody(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 6)
        self.relu = nn.ReLU()
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.drop(self.relu(self.lin(x)))
        return {"features": h, "aux": h.mean()}


class Reused(nn.Module):
    """One ReLU module called three times in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.l3(self.relu(self.l2(self.relu(self.l1(x)))))


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.relu = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(self.relu(out[:, -1]))


class TransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.enc(x).mean(1))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout2d(0.2), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def _mlp_bn() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


# name -> (factory, input maker, target maker for a loss)
ARCHS: dict[str, tuple[Callable[[], nn.Module], Callable[[], Tensor]]] = {
    "sequential_cnn": (_cnn, lambda: torch.randn(6, 3, 8, 8)),
    "mlp_bn": (_mlp_bn, lambda: torch.randn(6, 4)),
    "resnet_functional": (TinyResNet, lambda: torch.randn(6, 3, 8, 8)),
    "tuple_output": (TupleOut, lambda: torch.randn(6, 4)),
    "dict_output": (DictOut, lambda: torch.randn(6, 4)),
    "reused_module": (Reused, lambda: torch.randn(6, 4)),
    "lstm": (LSTMNet, lambda: torch.randn(6, 5, 4)),
    "transformer": (TransformerNet, lambda: torch.randn(6, 5, 8)),
    "channels_last_cnn": (lambda: _cnn().to(memory_format=torch.channels_last),
                          lambda: torch.randn(6, 3, 8, 8).to(memory_format=torch.channels_last)),
    "dataparallel": (lambda: nn.DataParallel(_cnn()), lambda: torch.randn(6, 3, 8, 8)),
    "bfloat16_cnn": (lambda: _cnn().to(torch.bfloat16), lambda: torch.randn(6, 3, 8, 8, dtype=torch.bfloat16)),
    "half_mlp": (lambda: _mlp_bn().to(torch.float16), lambda: torch.randn(6, 4, dtype=torch.float16)),
}
