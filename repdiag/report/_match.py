"""Matching layers across runs: by module path when the runs hook the same layers, else by
forward order (the i-th hooked layer of every run is compared), and the report says so."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..tables import MODEL_LAYER

__all__ = ["LayerMatch", "match_layers"]


@dataclass
class LayerMatch:
    """How the runs' layers were matched.

    Attributes
    ----------
    how : {"name", "order"}
        ``"name"``: every run hooked the same module paths. ``"order"``: the architectures differ,
        so the i-th hooked layer of each run is labelled with the first run's i-th name.
    order : list of str
        Matched layer labels in forward order (hooked layers first, then other layers that rows
        name, such as BN layers of the gamma table).
    renames : dict
        ``{run: {original layer: matched label}}`` for ``how == "order"`` (empty otherwise).
    note : str
        One sentence for the report.
    """

    how: str
    order: list[str]
    renames: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""

    def apply(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with each run's layer names replaced by the matched labels."""
        if not self.renames:
            return table
        out = table.copy()
        for run, mapping in self.renames.items():
            sel = out["run"] == run
            out.loc[sel, "layer"] = out.loc[sel, "layer"].map(lambda v: mapping.get(v, v) if isinstance(v, str) else v)
        return out


def match_layers(hooked: Mapping[str, Sequence[str]], module_order: Mapping[str, Sequence[str]] | None = None
                 ) -> LayerMatch:
    """Match the hooked layers of several runs.

    Parameters
    ----------
    hooked : mapping run -> list of str
        Each run's hooked layers, in forward order.
    module_order : mapping run -> list of str, optional
        Each run's module paths in ``named_modules()`` order, used to place layers that rows
        name but that were not hooked (BN layers of the gamma table).

    Examples
    --------
    >>> match_layers({"a": ["1", "3"], "b": ["1", "3"]}).how
    'name'
    >>> m = match_layers({"a": ["f.0", "f.2"], "b": ["g.1", "g.4"]})
    >>> m.how, m.renames["b"]["g.4"]
    ('order', 'f.2')
    """
    runs = list(hooked)
    lists = [list(hooked[r]) for r in runs]
    module_order = module_order or {}
    if not runs:
        return LayerMatch("name", [])
    if all(lst == lists[0] for lst in lists):
        order = list(lists[0])
        for r in runs:
            for name in module_order.get(r, []):
                if name not in order:
                    order.append(name)
        return LayerMatch("name", _sort_by_modules(order, module_order.get(runs[0], [])))
    longest = max(len(lst) for lst in lists)
    labels = [next(lst[i] for lst in lists if len(lst) > i) for i in range(longest)]
    renames: dict[str, dict[str, str]] = {}
    for r, lst in zip(runs, lists):
        renames[r] = {name: labels[i] for i, name in enumerate(lst) if name != labels[i]}
    counts = ", ".join(f"{r}: {len(lst)}" for r, lst in zip(runs, lists))
    note = (f"The runs hook different layers ({counts} layers), so layers are matched by forward order: "
            f"the i-th hooked layer of every run is shown under the first run's name.")
    if len({len(lst) for lst in lists}) > 1:
        note += " Runs with fewer layers have no value at the deepest positions."
    order = list(labels)
    for r in runs:
        for name in module_order.get(r, []):
            name = renames[r].get(name, name)
            if name not in order:
                order.append(name)
    return LayerMatch("order", order, renames, note)


def _sort_by_modules(names: list[str], modules: Sequence[str]) -> list[str]:
    pos = {n: i for i, n in enumerate(modules)}
    return sorted(names, key=lambda n: (pos.get(n, len(pos)), names.index(n)))


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
