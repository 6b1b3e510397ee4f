"""Integrations with the tools people train and watch runs in.

* :mod:`repdiag.integrations.tensorboard`: :func:`~repdiag.integrations.tensorboard.log_to` writes
  a recorder's table (and, on request, activation histograms) to a TensorBoard ``SummaryWriter``;
  also available as :meth:`repdiag.Recorder.log_to`.
* :mod:`repdiag.integrations.lightning`: :class:`~repdiag.integrations.lightning.RepdiagCallback`
  for Lightning's ``Trainer`` (needs the optional ``lightning`` package:
  ``pip install 'repdiag[lightning]'``).

Nothing here is imported by ``import repdiag``; each submodule loads its tool on import.
"""

__all__ = ["lightning", "tensorboard"]
