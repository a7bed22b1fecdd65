"""A fitted random forest packed into flat arrays and walked for all trees at once with numpy.

scikit-learn predicts tree by tree (a Python call per tree), which costs ~1 ms per tree for a
single row: 300 trees made one prediction take hundreds of milliseconds. Walking every tree one
level per step instead costs a few numpy operations per level, and the same walk yields the
per-feature contributions that explain the prediction. Results equal scikit-learn's (tested).
"""

from __future__ import annotations

import weakref
from typing import Any, Literal, overload

import numpy as np

_packed: weakref.WeakKeyDictionary[Any, PackedForest] = weakref.WeakKeyDictionary()


class PackedForest:
    """All trees of a fitted forest as one node table; node values are P(positive) or the mean."""

    def __init__(self, forest: Any):
        classes = list(getattr(forest, "classes_", []))
        positive = (classes.index(True) if True in classes else len(classes) - 1) if classes else 0
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "value")
        }
        roots, offset = [], 0
        for tree in forest.estimators_:
            t = tree.tree_
            leaf = t.children_left < 0
            roots.append(offset)
            parts["left"].append(np.where(leaf, -1, t.children_left + offset))
            parts["right"].append(np.where(leaf, -1, t.children_right + offset))
            parts["feature"].append(np.where(leaf, 0, t.feature))
            parts["threshold"].append(t.threshold)
            parts["missing_left"].append(np.asarray(t.missing_go_to_left, dtype=bool))
            value = t.value[:, 0, :]
            if classes:
                totals = value.sum(axis=1)
                totals[totals == 0] = 1.0
                parts["value"].append(value[:, positive] / totals)
            else:
                parts["value"].append(value[:, 0])
            offset += t.node_count
        self.feature = np.concatenate(parts["feature"]).astype(np.intp)
        self.threshold = np.concatenate(parts["threshold"])
        self.left = np.concatenate(parts["left"]).astype(np.intp)
        self.right = np.concatenate(parts["right"]).astype(np.intp)
        self.missing_left = np.concatenate(parts["missing_left"])
        self.value = np.concatenate(parts["value"])
        self.is_leaf = self.left < 0
        self.roots = np.asarray(roots, dtype=np.intp)
        self.base = float(self.value[self.roots].mean())

    @overload
    def walk(
        self, X: np.ndarray, contributions: Literal[False] = False, chunk: int = 1024
    ) -> tuple[np.ndarray, None]: ...

    @overload
    def walk(
        self, X: np.ndarray, contributions: Literal[True], chunk: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def walk(
        self, X: np.ndarray, contributions: bool = False, chunk: int = 1024
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Walk in chunks of rows: smaller arrays stay in cache (measured ~25% faster than one go)."""
        if len(X) <= chunk:
            return self._walk(X, contributions)
        parts = [self._walk(X[i : i + chunk], contributions) for i in range(0, len(X), chunk)]
        score = np.concatenate([p[0] for p in parts])
        if not contributions:
            return score, None
        return score, np.concatenate([p[1] for p in parts])

    def _walk(
        self, X: np.ndarray, contributions: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(mean leaf value per row, rows x features contributions or None).

        Contributions: along each path, the value change at every split is credited to the
        split's feature; they sum with `base` to the prediction exactly.
        """
        # scikit-learn compares float32 features with float64 thresholds: do the same.
        X = np.asarray(X, dtype=np.float32)
        n_rows, n_features = X.shape
        n_trees = len(self.roots)
        node = np.tile(self.roots, (n_rows, 1))
        row = np.repeat(np.arange(n_rows), n_trees).reshape(n_rows, n_trees)
        flat_node, flat_row = node.ravel(), row.ravel()
        total = np.zeros(n_rows * n_features) if contributions else None
        active = np.nonzero(~self.is_leaf[flat_node])[0]
        while len(active):
            at = flat_node[active]
            rows = flat_row[active]
            feature = self.feature[at]
            x = X[rows, feature]
            go_left = np.where(np.isnan(x), self.missing_left[at], x <= self.threshold[at])
            child = np.where(go_left, self.left[at], self.right[at])
            if total is not None:
                total += np.bincount(
                    rows * n_features + feature,
                    weights=self.value[child] - self.value[at],
                    minlength=n_rows * n_features,
                )
            flat_node[active] = child
            active = active[~self.is_leaf[child]]
        score = self.value[flat_node].reshape(n_rows, n_trees).mean(axis=1)
        if total is None:
            return score, None
        return score, total.reshape(n_rows, n_features) / n_trees


def packed(forest: Any) -> PackedForest:
    """The packed form of a fitted forest, built once per forest object."""
    result = _packed.get(forest)
    if result is None:
        result = PackedForest(forest)
        _packed[forest] = result
    return result
