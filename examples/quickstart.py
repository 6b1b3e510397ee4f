"""The README's 10-line example: train a small CNN on the bundled digits with repdiag attached,
then print the tidy table of per-layer measurements."""

import torch
from torch import nn

import repdiag
from repdiag.data import batches, digits_split
from repdiag.models import small_cnn

x_train, y_train, _, _ = digits_split()
model = small_cnn(norm="bn")
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
with repdiag.attach(model, run="bn", every=5, max_samples=1024) as rec:
    for xb, yb in batches(x_train, y_train, 64, generator=torch.Generator().manual_seed(0)):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        rec.step(labels=yb)              # labels of the batch just seen
    table = rec.table()                  # tidy pandas DataFrame

print(table.to_string(index=False))
