"""What :func:`repdiag.findings` asks and how it decides: the questions of the four source papers,
the metrics each rests on, the papers' own claims, and the rules that turn a difference into a
verdict. Everything the findings table says is set here; nothing depends on a particular run.

Each run gives one value per question: the question's metric averaged over its layers (those
that runs of both groups have, once aligned) at the run's last step for measurements of the
trained network (sparsity, clustering, channels off), or over every logged step for measurements
taken during training (landscape, covariate shift, EM shift; ``Question.steps``).

Verdict rules (per question, on those per-run values):

- ``"not measured"``: a group has no run with the metric (the note says how to measure it);
- ``"too few runs"``: a group has fewer than :data:`MIN_RUNS` runs (the difference is shown,
  no interval);
- ``"a > b"`` / ``"a < b"``: the :data:`CONFIDENCE` bootstrap interval of ``mean a - mean b``
  excludes 0 **and** the difference is at least :data:`MIN_RELATIVE_DIFFERENCE` of the larger
  group mean in absolute value (so a tiny but consistent gap is not called a difference);
- ``"no clear difference"`` otherwise.

The same rule is applied to a question's scale-normalised metric where it has one; when the two
verdicts differ the note says so (a difference in raw W1 or raw loss range can come from a
difference in activation or loss scale alone, RESEARCH.md "Across all four").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Question", "QUESTIONS", "MIN_RUNS", "CONFIDENCE", "MIN_RELATIVE_DIFFERENCE", "VERDICTS", "HOW_TO_MEASURE"]

MIN_RUNS = 2
"""Runs a group needs for an interval (and a verdict other than "too few runs")."""
CONFIDENCE = 0.95
"""Level of the bootstrap interval over runs."""
MIN_RELATIVE_DIFFERENCE = 0.05
"""Smallest |mean a - mean b| / max(|mean a|, |mean b|) called a difference."""
VERDICTS = ("a > b", "a < b", "no clear difference", "too few runs", "not measured")

HOW_TO_MEASURE = {
    "landscape": "attach(model, loss_fn=criterion, landscape_every=k, optimizer=opt) and rec.step(labels=y, inputs=x)",
    "probe": "attach(model, probe=x_fixed, probe_every=k)",
    "labels": "rec.step(labels=y)",
    "stats": "the default metrics (they are computed from every recorded activation)",
    "gamma": "a model with affine normalization layers (BatchNorm, LayerNorm, GroupNorm, RMSNorm)",
}


@dataclass(frozen=True)
class Question:
    """One question of a source paper.

    Attributes
    ----------
    key : str
        Short name (``sparsity``, ``em_shift``...).
    question : str
        The question, as the findings table states it.
    paper : str
        Authors, year and arXiv id.
    claim : str
        What the paper reports (BN vs no BN), in a few words.
    metrics : tuple of str
        The metric the verdict rests on; the first one present in both groups is used.
    where : dict
        Parameter-column values that select the rows (``{"scale": "raw"}``).
    normalised : tuple of (metric, where), optional
        The scale-normalised variant checked against the raw verdict.
    layers : {"all", "deep", "model"}
        Which layers are averaged: every layer with the metric, the deeper half of them, or the
        model-wide rows.
    needs : str
        Key of :data:`HOW_TO_MEASURE` (what to do when the metric is missing).
    bn_direction : str or None
        The paper's direction for "BN minus no BN" ("<", ">", "~" for similar, None for none),
        compared with the verdict when exactly one group has norm layers.
    steps : {"last", "all"}
        Use each run's last logged step, or the mean over all its logged steps.
    context : tuple of (metric, where), optional
        A related metric whose group means the note quotes (the gamma fraction beside
        ``channels_off``).
    """

    key: str
    question: str
    paper: str
    claim: str
    metrics: tuple[str, ...]
    where: dict[str, Any] = field(default_factory=dict)
    normalised: tuple[str, dict[str, Any]] | None = None
    layers: str = "all"
    needs: str = "stats"
    bn_direction: str | None = None
    steps: str = "last"
    context: tuple[str, dict[str, Any]] | None = None


_POTGIETER = "Potgieter, Mouton, Davel 2025 (arXiv 2501.14441)"
_SANTURKAR = "Santurkar, Tsipras, Ilyas, Madry 2018 (arXiv 1805.11604)"
_FRANKLE = "Frankle, Schwab, Morcos 2021 (arXiv 2003.00152)"
_HUANG = "Huang, Yu 2020 (arXiv 2001.02814)"

QUESTIONS: tuple[Question, ...] = (
    Question("sparsity", "Does BN change the sparsity of post-activation representations?", _POTGIETER,
             "BN changes activation sparsity, but that change does not explain BN's better generalization",
             ("sparsity",), needs="stats"),
    Question("clustering", "Do deep-layer representations cluster by class better with BN?", _POTGIETER,
             "BN representations cluster better by class (silhouette higher), above all in deep layers",
             ("silhouette_labels",), where={"standardize": False}, normalised=("silhouette_labels", {"standardize": True}),
             layers="deep", needs="labels", bn_direction=">"),
    Question("loss_range", "Is the loss landscape along the gradient smoother (smaller loss range)?", _SANTURKAR,
             "BN makes the loss change less along the gradient direction (smaller range)",
             ("loss_range",), normalised=("loss_range_rel", {}), layers="model", needs="landscape", bn_direction="<",
             steps="all"),
    Question("gradient_predictiveness", "Is the gradient more predictive (changes less along the step)?", _SANTURKAR,
             "with BN the gradient changes less when stepping along it (more predictive)",
             ("grad_change",), normalised=("grad_change_rel", {}), layers="model", needs="landscape",
             bn_direction="<", steps="all"),
    Question("beta_smoothness", "Is the effective beta-smoothness smaller?", _SANTURKAR,
             "BN lowers the effective beta-smoothness (gradients are more Lipschitz)",
             ("beta_smoothness",), layers="model", needs="landscape", bn_direction="<", steps="all"),
    Question("covariate_shift", "Does BN reduce internal covariate shift (G vs G', Santurkar Def. 2.1)?", _SANTURKAR,
             "BN does not reduce ICS in this sense: BN nets show similar or larger ||G - G'||",
             ("ics_l2",), normalised=("ics_rel", {}), needs="landscape", bn_direction="~", steps="all"),
    Question("em_shift", "Does BN bound the Earth Mover shift of layer outputs between updates?", _HUANG,
             "BN bounds (rather than removes) the EM shift; after dividing by output scale BN is lowest",
             ("w1_shift", "w1_shift_unit", "w1_shift_sliced"), where={"scale": "raw"},
             normalised=("w1_shift", {"scale": "normalized"}), needs="probe", bn_direction="<", steps="all"),
    Question("disabled_features", "What fraction of features does BN switch off?", _FRANKLE,
             "BN-only training learns to disable about a third of random features (small gamma, channels off)",
             ("channels_off",), needs="stats", context=("gamma_below", {"threshold": 0.05})),
)
"""The questions, in the order the findings table lists them."""
