"""Per-prediction explanations: which features pushed this equipment's failure score up.

Tree contributions (the "treeinterpreter" decomposition): along each tree's decision path, the
change in the node's failure share at every split is credited to the split's feature. Summed over
the forest, the contributions plus the forest's base rate equal the forest score exactly, so the
explanation accounts for the whole prediction. It costs one sparse product per tree, so it runs on
every scored row, not on a sample.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp

from ml.model import FailureModel

_tree_deltas: weakref.WeakKeyDictionary[Any, list[tuple[sp.csr_matrix, float]]] = (
    weakref.WeakKeyDictionary()
)


def _positive_share(tree: Any, positive_index: int) -> np.ndarray:
    value = tree.tree_.value[:, 0, :]
    totals = value.sum(axis=1)
    totals[totals == 0] = 1.0
    return value[:, positive_index] / totals


def _deltas(forest: Any) -> list[tuple[sp.csr_matrix, float]]:
    """Per tree: (node x feature matrix of share changes credited to the parent's feature, root share)."""
    cached = _tree_deltas.get(forest)
    if cached is not None:
        return cached
    classes = list(forest.classes_)
    positive_index = classes.index(True) if True in classes else len(classes) - 1
    n_features = forest.n_features_in_
    result = []
    for tree in forest.estimators_:
        structure = tree.tree_
        share = _positive_share(tree, positive_index)
        parent = np.full(structure.node_count, -1)
        for side in (structure.children_left, structure.children_right):
            has_child = side >= 0
            parent[side[has_child]] = np.nonzero(has_child)[0]
        nodes = np.nonzero(parent >= 0)[0]
        delta = share[nodes] - share[parent[nodes]]
        matrix = sp.csr_matrix(
            (delta, (nodes, structure.feature[parent[nodes]])),
            shape=(structure.node_count, n_features),
        )
        result.append((matrix, float(share[0])))
    _tree_deltas[forest] = result
    return result


def contributions(model: FailureModel, X: np.ndarray) -> tuple[np.ndarray, float]:
    """(rows x features contributions to the forest score, forest base rate)."""
    forest = model.classifier
    total = np.zeros((X.shape[0], X.shape[1]))
    base = 0.0
    for (matrix, root_share), tree in zip(_deltas(forest), forest.estimators_, strict=True):
        total += (tree.decision_path(X) @ matrix).toarray()
        base += root_share
    count = len(forest.estimators_)
    return total / count, base / count


def explain_rows(model: FailureModel, X: np.ndarray, top: int = 5) -> list[list[dict[str, Any]]]:
    """For each row, the `top` features pushing its failure score up the most, in readable words."""
    contrib, _ = contributions(model, X)
    labels = model.feature_labels or {}
    explanations = []
    for row_index in range(X.shape[0]):
        row = contrib[row_index]
        order = np.argsort(-row)[:top]
        items = []
        for j in order:
            name = model.feature_names[j]
            label, sensor = (labels.get(name) or [name, None])[:2]
            value = X[row_index, j]
            items.append(
                {
                    "feature": name,
                    "label": label,
                    "sensor": sensor,
                    "contribution": round(float(row[j]), 4),
                    "value": None if np.isnan(value) else round(float(value), 4),
                }
            )
        explanations.append(items)
    return explanations
