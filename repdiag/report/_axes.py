"""What a metric's value means and which way is better, for the report's axis labels.

Metric plugins declare both when they register (``register_metric(..., meaning=, better=)``);
rows that no plugin writes (the gamma table's sub-metrics, the landscape and EM-shift probes)
take them from :data:`PROBE_AXES` below, where each entry follows the source paper's reading.
"""

from __future__ import annotations

__all__ = ["PROBE_AXES", "axis_text", "better_of", "meaning_of", "y_label"]

PROBE_AXES: dict[str, tuple[str, str]] = {
    # name: (meaning, better: "higher" | "lower" | "")
    "gamma_below": ("fraction of norm channels with |gamma| < threshold", ""),
    "gamma_below_ref": ("fraction with |gamma| < threshold (reference)", ""),
    "gamma_mean": ("mean norm-layer gamma", ""),
    "gamma_std": ("std of norm-layer gamma", ""),
    "gamma_quantile": ("norm-layer gamma quantile", ""),
    "beta_mean": ("mean BN beta", ""),
    "beta_std": ("std of BN beta", ""),
    "beta_quantile": ("BN beta quantile", ""),
    "loss": ("training loss", "lower"),
    "grad_norm": ("gradient norm", ""),
    # Santurkar et al. 2018: smaller loss range / gradient change / beta = a smoother landscape
    "loss_range": ("loss range along the gradient", "lower"),
    "loss_range_rel": ("loss range / loss along the gradient", "lower"),
    "grad_change": ("gradient change along the gradient", "lower"),
    "grad_change_rel": ("relative gradient change (predictiveness)", "lower"),
    "beta_local": ("local beta-smoothness", "lower"),
    "beta_smoothness": ("effective beta-smoothness", "lower"),
    "hessian_top_eig": ("top Hessian eigenvalue", "lower"),
    # Santurkar's G vs G': a small difference, a cosine near 1 = little internal covariate shift
    "ics_l2": ("||G - G'|| (covariate shift)", "lower"),
    "ics_rel": ("||G - G'|| / ||G|| (covariate shift)", "lower"),
    "ics_cos": ("cos(G, G') (1 = no shift)", "higher"),
    # Huang & Yu 2020: W1 between a layer's outputs across updates; bounding it is the aim
    "w1_shift": ("EM (W1) shift per update", "lower"),
    "w1_shift_unit": ("per-unit W1 shift per update", "lower"),
    "w1_shift_sliced": ("sliced W1 shift per update", "lower"),
    "w1_shift_upper": ("W1 shift upper bound", "lower"),
    "w1_shift_lower": ("W1 shift lower bound", "lower"),
    "w1_drift_unit": ("per-unit W1 to the reference", "lower"),
    "w1_drift_sliced": ("sliced W1 to the reference", "lower"),
    "w1_drift_lower": ("W1 lower bound to the reference", "lower"),
    "cka_runs": ("linear CKA between runs", ""),
}


def _registered(metric: str) -> tuple[str, str] | None:
    from ..metrics import available_metrics

    m = available_metrics().get(metric)
    if m is None or not (m.meaning or m.better):
        return None
    return m.meaning or metric, m.better


def meaning_of(metric: str) -> str:
    """A short phrase for what ``metric``'s value is (the metric name when nothing says).

    >>> meaning_of("ics_rel")
    "||G - G'|| / ||G|| (covariate shift)"
    """
    got = _registered(metric) or PROBE_AXES.get(metric)
    return got[0] if got else metric


def better_of(metric: str) -> str:
    """``"higher"``, ``"lower"`` or ``""`` (neither direction is better, or nobody said).

    >>> better_of("silhouette_labels"), better_of("sparsity")
    ('higher', '')
    """
    got = _registered(metric) or PROBE_AXES.get(metric)
    return got[1] if got else ""


def axis_text(metric: str) -> str:
    """The direction in words: ``"higher is better"``, ``"lower is better"`` or ``"no better side"``."""
    b = better_of(metric)
    return f"{b} is better" if b else "no better side"


def y_label(metric: str) -> str:
    """The y-axis label of a plot of ``metric``: its meaning (wrapped), then the direction.

    >>> y_label("kmeans_nmi")
    'NMI of k-means and labels\\n(\u2191 higher is better)'
    """
    import textwrap

    arrow = {"higher": "\u2191 ", "lower": "\u2193 "}.get(better_of(metric), "")
    return "\n".join(textwrap.wrap(meaning_of(metric), 34)) + f"\n({arrow}{axis_text(metric)})"
