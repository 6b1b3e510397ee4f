"""A Lightning callback that records a LightningModule's representations during ``fit``.

Needs the optional ``lightning`` package (``pip install 'repdiag[lightning]'``); importing this
module without it raises an ImportError that says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised only where lightning is absent
    raise ImportError(
        "repdiag.integrations.lightning needs the 'lightning' package (Lightning 2.x), which is not "
        "installed. Install it with: pip install 'repdiag[lightning]'"
    ) from exc

import pandas as pd
import torch
from torch import Tensor

from .._errors import ConfigError
from ..capture import Recorder, attach
from ..tables import empty_table
from .tensorboard import table_tags

__all__ = ["RepdiagCallback", "batch_labels"]

LabelSpec = Any  # "auto", int, str, callable(batch) -> labels, or None
_LABEL_KEYS = ("y", "label", "labels", "target", "targets")


def _is_labels(obj: Any) -> bool:
    return isinstance(obj, Tensor) and obj.ndim == 1 and not obj.is_floating_point() and not obj.is_complex()


def batch_labels(batch: Any, spec: LabelSpec = "auto") -> Tensor | None:
    """The class labels of a training ``batch`` according to ``spec``.

    ``"auto"`` takes ``batch[1]`` of a tuple/list, or the first of the keys
    ``y, label, labels, target, targets`` of a mapping, when it is a 1-D integer tensor, and None
    otherwise. An int indexes the batch, a str is a key, a callable gets the batch, None means
    no labels.

    Examples
    --------
    >>> import torch
    >>> batch_labels((torch.zeros(2, 3), torch.tensor([1, 0]))).tolist()
    [1, 0]
    >>> batch_labels({"x": torch.zeros(2, 3)}) is None
    True
    """
    if spec is None:
        return None
    if callable(spec):
        out = spec(batch)
        return None if out is None else torch.as_tensor(out)
    if spec == "auto":
        if isinstance(batch, (tuple, list)) and len(batch) >= 2 and _is_labels(batch[1]):
            return batch[1]
        if isinstance(batch, Mapping):
            for k in _LABEL_KEYS:
                if k in batch and _is_labels(batch[k]):
                    return batch[k]
        return None
    try:
        return torch.as_tensor(batch[spec])
    except (KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"labels={spec!r} does not select anything in a batch of type {type(batch).__name__}; "
                          "pass an index, a key, a callable batch -> labels, or None.") from exc


class RepdiagCallback(Callback):
    """Record a LightningModule's representations during ``trainer.fit`` and log the table.

    At fit start the callback attaches a recorder to the LightningModule (layer names are paths
    inside it, e.g. ``net.2``); after each training batch it calls ``rec.step(labels=...)`` with
    the batch's labels; validation and sanity-check passes are not recorded. Every
    ``log_every_n_epochs`` epochs (and/or ``log_every_n_steps`` steps) it snapshots the metrics,
    resets the buffers (each logged value describes the activations since the previous log) and
    logs every row to each of ``trainer.loggers`` as ``prefix + layer/metric[/param=value]`` at
    ``trainer.global_step``. At fit end it logs what is left, keeps the full table in
    :attr:`table` and detaches; an exception detaches it as well.

    Parameters
    ----------
    layers : "auto", str, list, type or callable
        Which modules to record (see :func:`repdiag.attach`).
    labels : "auto", int, str, callable or None
        How to get the labels of a batch (see :func:`batch_labels`).
    log_every_n_epochs : int or None
        Log at the end of every n-th training epoch (None: never on epochs).
    log_every_n_steps : int or None
        Log after every n-th optimizer step (None: never on steps).
    histograms : bool
        Also write activation histograms to the TensorBoard loggers among ``trainer.loggers``.
    prefix : str
        Prefix of the logged metric names.
    **attach_options
        Passed to :func:`repdiag.attach` (``every``, ``max_samples``, ``reduce``, ``metrics``,
        ``run``, ``seed``, ...).

    Attributes
    ----------
    recorder : Recorder or None
        The recorder while fitting.
    table : DataFrame
        Every snapshot taken during the last fit (empty before).

    Examples
    --------
    >>> cb = RepdiagCallback(max_samples=1024, run="bn")               # doctest: +SKIP
    >>> lightning.Trainer(callbacks=[cb], max_epochs=3).fit(module, loader)  # doctest: +SKIP
    >>> cb.table                                                        # doctest: +SKIP
    """

    def __init__(
        self,
        layers: Any = "auto",
        *,
        labels: LabelSpec = "auto",
        log_every_n_epochs: int | None = 1,
        log_every_n_steps: int | None = None,
        histograms: bool = False,
        prefix: str = "repdiag/",
        **attach_options: Any,
    ) -> None:
        super().__init__()
        for name, v in (("log_every_n_epochs", log_every_n_epochs), ("log_every_n_steps", log_every_n_steps)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be None or a positive int; got {v!r}.")
        if not (labels is None or labels == "auto" or callable(labels) or isinstance(labels, (int, str))):
            raise ConfigError(f"labels must be 'auto', an index, a key, a callable or None; got {labels!r}.")
        self.layers = layers
        self.labels = labels
        self.log_every_n_epochs = log_every_n_epochs
        self.log_every_n_steps = log_every_n_steps
        self.histograms = histograms
        self.prefix = prefix
        self.attach_options = attach_options
        self.recorder: Recorder | None = None
        self.table: pd.DataFrame = empty_table()
        self._pause = contextlib.ExitStack()
        self._unlogged = 0

    # -- lifetime -------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.table = empty_table()
        self.recorder = attach(pl_module, self.layers, **self.attach_options)
        self._unlogged = 0

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is None:
            return
        try:
            if self._unlogged:
                self._log(trainer)
            self.table = self.recorder.table()
        finally:
            self._detach()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._detach()

    def _detach(self) -> None:
        self._pause.close()
        if self.recorder is not None:
            self.recorder.detach()
        self.recorder = None

    # -- recording ------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.recorder is None:
            return
        self.recorder.step(labels=batch_labels(batch, self.labels))
        self._unlogged += 1
        n = self.log_every_n_steps
        if n is not None and trainer.global_step % n == 0:
            self._log(trainer)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        n = self.log_every_n_epochs
        if self.recorder is not None and n is not None and (trainer.current_epoch + 1) % n == 0 and self._unlogged:
            self._log(trainer)

    def _pause_recording(self) -> None:
        if self.recorder is not None:
            self._pause.enter_context(self.recorder.paused())

    def _resume_recording(self) -> None:
        self._pause.close()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._pause_recording()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._resume_recording()

    # -- logging --------------------------------------------------------------------------------
    def _log(self, trainer: Any) -> None:
        """Snapshot the recorder, log the new rows (and histograms) to every logger, reset."""
        assert self.recorder is not None
        frame = self.recorder.snapshot(reset=False)
        self._unlogged = 0
        metrics = {self.prefix + tag: float(v) for tag, v in zip(table_tags(frame), frame["value"])}
        loggers = list(getattr(trainer, "loggers", None) or [])
        writers = [lg.experiment for lg in loggers if hasattr(getattr(lg, "experiment", None), "add_histogram")]
        data = self.recorder.layer_data() if self.histograms and writers else []
        for logger in loggers:
            if metrics:
                logger.log_metrics(metrics, step=trainer.global_step)
        for w in writers:
            for d in data:
                if d.samples is not None and d.samples.numel():
                    x = d.samples.detach().flatten()
                    w.add_histogram(f"{self.prefix}{d.layer}/activations", x[x.isfinite()].float().cpu(),
                                    global_step=trainer.global_step)
        self.recorder.reset()
