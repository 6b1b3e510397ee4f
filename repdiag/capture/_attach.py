"""``repdiag.attach``: build a :class:`~repdiag.capture.Recorder` on a model, with its validated
arguments and the optional probes (``_extensions``) wired in."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from torch import nn

from .._validation import check_attach_args
from ._extensions import EXTENSION_KEYS, attach_extensions
from ._recorder import Recorder, Reduce
from ._select import LayerSpec

__all__ = ["attach"]


def attach(
    model: nn.Module,
    layers: LayerSpec = "auto",
    *,
    every: int = 1,
    max_samples: int = 4096,
    reduce: Reduce = "mean",
    metrics: str | Sequence[str] | None = "default",
    run: str | None = None,
    seed: int = 0,
    group: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Recorder:
    """Hook ``model`` and record per-layer activations; returns a :class:`Recorder`.

    Parameters
    ----------
    model : nn.Module
        Any module; DataParallel / DistributedDataParallel wrappers are unwrapped, so layer
        names carry no ``module.`` prefix.
    layers : "auto", str, list, type or callable
        ``"auto"`` takes every activation module (ReLU, GELU, SiLU, Tanh, ... see
        :data:`repdiag.capture.ACTIVATION_TYPES`): their outputs are the post-activation
        representations the source papers study; Hugging Face activations (classes of
        ``transformers.activations``) count, so a transformer gets each block's MLP activation.
        A model with none (it calls ``F.relu`` in ``forward``) gets its conv, linear (and GPT-2
        ``Conv1D``), norm, RNN and Transformer-block layers instead. Also accepted: a module
        path, a glob (``*`` within one dotted level, ``**`` across levels: ``"h.*"``,
        ``"h.**.act"``), a list of those, a module type or tuple of types, or a predicate
        ``f(name, module) -> bool``.
    every : int
        Record on steps ``0, every, 2*every, ...``; other steps cost one bool check per hook.
    max_samples : int
        Rows kept per layer (reservoir sampling: a uniform sample of all rows seen).
    reduce : {"mean", "positions", "flatten"}
        How a conv map or sequence becomes rows: the mean over positions per unit (one row per
        sample), each position a row (labels broadcast), or the flattened map. Padded tokens
        (the forward's ``attention_mask``, or :meth:`Recorder.set_mask`) are left out.
    metrics : "default", "all", list of str, or None
        Metric plugins :meth:`Recorder.table` computes (``repdiag metrics`` lists them).
    run : str
        Run name written in the table's ``run`` column (default with ``log_dir``: the
        directory's name).
    seed : int
        Seed of the reservoirs' own generators (the global RNG is never touched); also the
        run's seed in the ``seed`` column and the run directory's metadata.
    group : str, optional
        The condition the run belongs to (``"bn"``, ``"nobn"``); with it the table gets
        ``group`` and ``seed`` columns, and ``repdiag.compare(tables, by="group")`` pools runs.
    log_dir : path-like, optional
        Write a run directory as training goes (``docs/runs.md``): ``meta.json`` and each
        snapshot's and probe's rows as a Parquet part, so a killed run keeps every snapshot it
        completed and the recorder holds no rows in memory. :meth:`Recorder.detach` writes what
        was captured since the last snapshot. Read it with :func:`repdiag.load_run`.
    **options
        ``capture="input"`` records each module's input instead of its output (the
        post-activation input of the next layer in nets with functional activations);
        ``feature_dim`` / ``batch_dim`` override the inferred layout (:attr:`Recorder.layout`),
        an int for all layers or a dict ``{layer: dim}``; ``sparsity_eps`` counts
        ``|x| <= eps`` as zero; ``snapshot_every=k`` snapshots and resets every k steps so the
        table has values over training; ``metric_options={"name": {...}, "*": {...}}``;
        ``distributed=True`` (or ``"all"``) makes :meth:`Recorder.table` describe every rank's
        data when ``torch.distributed`` is initialised, ``"rank0"`` gathers on rank 0 only,
        False keeps per-rank tables; ``distributed_timeout`` (seconds) bounds the wait for the
        other ranks (default: the process group's timeout); further
        keys (``probe``, ``loss_fn``, ...) are accepted by the probes that define them.
    """
    check_attach_args(layers, every=every, max_samples=max_samples, reduce=reduce, metrics=metrics, seed=seed, options=options)
    ext = {k: options.pop(k) for k in list(options) if k in EXTENSION_KEYS}
    rec = Recorder(model, layers, every=every, max_samples=max_samples, reduce=reduce, metrics=metrics, run=run,
                   seed=seed, group=group, log_dir=log_dir, **options)
    try:
        if rec._history.writer is not None:
            rec._history.writer.add_config(ext)
        attach_extensions(rec, ext)
    except BaseException:
        rec.detach()
        raise
    return rec
