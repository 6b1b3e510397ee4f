"""The report's view of how layers line up across runs: :func:`repdiag.tables.align_layers`
(by name where the runs' names agree, else by role and forward order) turned into labels for the
plots and a note for the reader."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..tables import MODEL_LAYER

__all__ = ["LayerMatch", "layer_positions", "match_tables"]


@dataclass
class LayerMatch:
    """How the runs' layers were matched.

    Attributes
    ----------
    how : {"name", "order", "depth"}
        ``"name"``: every run has the same layers. ``"order"``: the names differ, so the k-th
        layer of each role (activation, norm, ...) is labelled with the first run's name of it.
    order : list of str
        Matched layer labels in forward order.
    renames : dict
        ``{run: {original layer: matched label}}`` for ``how == "order"`` (empty otherwise).
    note : str
        One sentence for the report.
    alignment : DataFrame or None
        The :func:`repdiag.tables.align_layers` frame (``run, layer, module, role, depth, key,
        how``) behind it.
    """

    how: str
    order: list[str]
    renames: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""
    alignment: pd.DataFrame | None = None

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with each run's layer names replaced by the matched labels."""
        if not self.renames:
            return table
        out = table.copy()
        for run, mapping in self.renames.items():
            sel = out["run"] == run
            out.loc[sel, "layer"] = out.loc[sel, "layer"].map(lambda v: mapping.get(v, v) if isinstance(v, str) else v)
        return out


def match_tables(tables: Sequence[pd.DataFrame]) -> LayerMatch:
    """Align the layers of the runs in ``tables`` (several tables may hold rows of one run:
    evaluation and training) with :func:`repdiag.tables.align_layers`.

    Examples
    --------
    >>> from repdiag.tables import make_table
    >>> def run(name, modules):
    ...     return make_table([{"run": name, "layer": str(i), "module": m, "depth": i, "metric": "x", "value": 0.0}
    ...                        for i, m in enumerate(modules)])
    >>> m = match_tables([run("bn", ["BatchNorm1d", "ReLU"]), run("nobn", ["ReLU"])])
    >>> m.how, m.renames, m.order
    ('order', {'nobn': {'0': '1'}}, ['0', '1'])
    """
    from ..tables import align_layers, concat_tables

    frames = [t for t in tables if t is not None and not t.empty]
    if not frames:
        return LayerMatch("name", [])
    al = align_layers(concat_tables(frames))
    if al.empty:
        return LayerMatch("name", [], alignment=al)
    how = str(al["how"].iloc[0])
    renames: dict[str, dict[str, str]] = {}
    for run, layer, key in zip(al["run"], al["layer"], al["key"]):
        if layer != key:
            renames.setdefault(str(run), {})[str(layer)] = str(key)
    rank = {r: i for i, r in enumerate(dict.fromkeys(al["run"]))}
    first = al.assign(_r=al["run"].map(rank)).sort_values("_r", kind="stable").drop_duplicates("key")
    order = [str(k) for k in first.sort_values(["depth", "_r"], kind="stable", na_position="last")["key"]]
    note = ""
    if how == "order":
        note = ("The runs name their layers differently, so layers are matched by role and forward order (the k-th "
                "activation of each run together, the k-th BN layer together) and shown under the first run's "
                "names; 'How layers were aligned' lists the pairs.")
    return LayerMatch(how, order, renames, note, al)


def layer_positions(match: LayerMatch, layers: Sequence[str]) -> dict[str, int]:
    """x positions 0, 1, ... of ``layers`` in forward order (unknown names last, ``(model)`` dropped).

    >>> layer_positions(LayerMatch("name", ["a", "b", "c"]), ["c", "a"])
    {'a': 0, 'c': 1}
    """
    rank = {n: i for i, n in enumerate(match.order)}
    present = [lay for lay in dict.fromkeys(layers) if lay != MODEL_LAYER]
    first = {n: i for i, n in enumerate(present)}
    present.sort(key=lambda n: (rank.get(n, len(rank)), first[n]))
    return {n: i for i, n in enumerate(present)}
