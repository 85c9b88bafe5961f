"""Bounds checks of the fitted tree arrays of a model loaded from a file.

Why: scikit-learn's tree predictors -- ``sklearn.tree._tree.Tree`` (decision
trees, random forests, classic gradient boosting) and ``TreePredictor``
(histogram gradient boosting) -- walk their node arrays in compiled code with
no bounds checks.  A child, feature or bitset index out of range in a file
reads outside memory (a segfault, or silently wrong numbers) and a child that
points back up the tree loops forever.  skops checks the *types* in a file, not
the contents of these arrays, which is why it does not trust these two types by
default.  We need them, so we trust them and check their contents here, before
an estimator loaded from a file is used: :func:`check_fitted_trees`.

What holds for every tree scikit-learn builds (depth-first or best-first, and
after pruning) and is checked: the node arrays have the recorded length; a node
is a leaf exactly when it has no children; children lie in the array, after
their parent (so no cycles) and have one parent each; split features lie in
``[0, n_features)`` and agree with the estimator's ``n_features_in_``;
thresholds are not NaN and leaf values are finite; categorical splits name a
bitset that exists, for a feature that is categorical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

#: Columns of a histogram gradient boosting bitset: 8 x 32 bits = 256 categories (sklearn's layout).
BITSET_COLUMNS = 8


class _Trees:
    """Walks an object graph, numbering trees in the order met, refusing the first bad one."""

    def __init__(self, source):
        self.source = source
        self.count = 0
        self.seen: set[int] = set()

    def fail(self, problem: str):
        raise InputError(self.source, problem)

    # -- graph -------------------------------------------------------------------
    def walk(self, root) -> int:
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
        from sklearn.tree._tree import Tree

        stack = [root]  # depth first, members in their order: trees are numbered as they are stored
        while stack:
            obj = stack.pop()
            if obj is None or isinstance(obj, (str, bytes, int, float, bool, np.generic)) or id(obj) in self.seen:
                continue
            self.seen.add(id(obj))
            if isinstance(obj, Tree):
                self.tree(obj)
                continue
            if isinstance(obj, TreePredictor):
                self.predictor(obj, n_features=None, categorical=None)
                continue
            if isinstance(obj, np.ndarray):
                if obj.dtype == object:
                    stack.extend(reversed(obj.ravel().tolist()))
                continue
            if isinstance(obj, dict):
                stack.extend(reversed(list(obj.values())))
                continue
            if isinstance(obj, (list, tuple, set, frozenset)):
                stack.extend(reversed(list(obj)))
                continue
            self.estimator(obj)
            try:
                stack.extend(reversed(list(vars(obj).values())))
            except TypeError:  # compiled objects without a __dict__ (losses, links): no arrays of ours
                pass
        return self.count

    # -- estimators: how their trees are fed --------------------------------------
    def estimator(self, obj) -> None:
        from sklearn.ensemble._gb import BaseGradientBoosting
        from sklearn.ensemble._hist_gradient_boosting.gradient_boosting import BaseHistGradientBoosting
        from sklearn.tree import BaseDecisionTree

        name = type(obj).__name__
        n_features = getattr(obj, "n_features_in_", None)
        if n_features is not None and not (isinstance(n_features, (int, np.integer)) and n_features > 0):
            self.fail(f"{name} has n_features_in_ = {n_features!r}, not a positive integer")
        if isinstance(obj, BaseDecisionTree) and hasattr(obj, "tree_"):
            if obj.tree_.n_features != n_features:
                self.fail(f"{name} expects {n_features} features but its tree has {obj.tree_.n_features}")
        if isinstance(obj, BaseHistGradientBoosting) and hasattr(obj, "_predictors"):
            self.hist_gradient_boosting(obj, n_features)
        members = getattr(obj, "estimators_", None)
        if n_features is None or members is None or not hasattr(obj, "fit"):
            return
        if isinstance(obj, BaseGradientBoosting):
            # predict_stages writes column k of an (n, n_trees_per_iteration_) array, unchecked.
            shape = getattr(members, "shape", None)
            if shape is None or len(shape) != 2 or shape[1] != getattr(obj, "n_trees_per_iteration_", None):
                self.fail(f"{name} has estimators_ of shape {shape}, not (n, {getattr(obj, 'n_trees_per_iteration_', '?')})")
        # Ensembles call their trees with check_input=False: each must take the ensemble's columns.
        subsets = getattr(obj, "estimators_features_", None)
        flat = members.ravel().tolist() if isinstance(members, np.ndarray) else list(members)
        for index, member in enumerate(flat):
            if not isinstance(member, BaseDecisionTree):
                continue
            expected = n_features if subsets is None else len(subsets[index])
            if member.n_features_in_ != expected:
                self.fail(f"{name} member {index} expects {member.n_features_in_} features, the ensemble gives it {expected}")

    def hist_gradient_boosting(self, obj, n_features) -> None:
        categorical = getattr(getattr(obj, "_bin_mapper", None), "is_categorical_", None)
        if categorical is not None:
            categorical = np.asarray(categorical)
            if categorical.shape != (n_features,):
                self.fail(f"{type(obj).__name__} marks {categorical.size} features as categorical or not, "
                          f"for {n_features} features")
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

        stages = obj._predictors
        if not isinstance(stages, list) or not all(isinstance(stage, list) for stage in stages):
            self.fail(f"{type(obj).__name__} has _predictors that are not a list of lists")
        for stage in stages:
            for predictor in stage:
                if not isinstance(predictor, TreePredictor):
                    self.fail(f"{type(obj).__name__} has a {type(predictor).__name__} among its trees")
                self.seen.add(id(predictor))
                self.predictor(predictor, n_features, categorical)

    # -- sklearn.tree._tree.Tree ---------------------------------------------------
    def tree(self, tree) -> None:
        label = f"tree {self.count}"
        self.count += 1
        n = int(tree.node_count)
        # Every array property reads node_count entries (sklearn clamps it to the capacity on load; checked anyway).
        if not 0 < n <= int(tree.capacity):
            self.fail(f"{label} claims {n} nodes but holds {tree.capacity}")
        if tree.n_features < 1 or tree.n_outputs < 1:
            self.fail(f"{label} has {tree.n_features} features and {tree.n_outputs} outputs")
        n_classes = np.asarray(tree.n_classes)
        if n_classes.min() < 1 or tree.max_n_classes != n_classes.max():
            self.fail(f"{label} has class counts {n_classes.tolist()} but max_n_classes {tree.max_n_classes}")
        value = tree.value
        if value.shape != (n, tree.n_outputs, tree.max_n_classes):
            self.fail(f"{label} has values of shape {value.shape}, expected {(n, tree.n_outputs, tree.max_n_classes)}")
        if not np.isfinite(value).all():
            self.fail(f"{label} holds values that are not finite numbers")
        left, right = np.asarray(tree.children_left), np.asarray(tree.children_right)
        leaf = left == -1
        depth = self.structure(label, n, left, right, leaf, right == -1)
        if tree.max_depth < depth:
            # decision_path sizes its buffer by max_depth.
            self.fail(f"{label} records max_depth {tree.max_depth} but is {depth} deep")
        split = np.flatnonzero(~leaf)
        self.features(label, split, np.asarray(tree.feature)[split], tree.n_features)
        bad = split[np.isnan(np.asarray(tree.threshold)[split])]
        if bad.size:
            self.fail(f"{label} node {bad[0]} has a NaN threshold")

    # -- histogram gradient boosting's TreePredictor ---------------------------------
    def predictor(self, predictor, n_features, categorical) -> None:
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE

        label = f"tree {self.count}"
        self.count += 1
        nodes = getattr(predictor, "nodes", None)
        if not isinstance(nodes, np.ndarray) or nodes.dtype != PREDICTOR_RECORD_DTYPE or nodes.ndim != 1 or nodes.size == 0:
            self.fail(f"{label} has no valid node array ({getattr(nodes, 'dtype', type(nodes).__name__)})")
        n = nodes.size
        leaf = nodes["is_leaf"] != 0
        self.structure(label, n, nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf, leaf)
        split = np.flatnonzero(~leaf)
        features = nodes["feature_idx"][split]
        self.features(label, split, features, n_features)
        if not np.isfinite(nodes["value"][leaf]).all():
            self.fail(f"{label} holds leaf values that are not finite numbers")
        is_categorical = nodes["is_categorical"][split] != 0
        bad = split[~is_categorical & np.isnan(nodes["num_threshold"][split])]
        if bad.size:
            self.fail(f"{label} node {bad[0]} has a NaN threshold")
        sizes = []
        for name in ("raw_left_cat_bitsets", "binned_left_cat_bitsets"):
            bitsets = getattr(predictor, name, None)
            if (not isinstance(bitsets, np.ndarray) or bitsets.dtype != np.uint32 or bitsets.ndim != 2
                    or bitsets.shape[1] != BITSET_COLUMNS or not bitsets.flags.c_contiguous):
                self.fail(f"{label} has a {name} that is not a C-ordered uint32 array of {BITSET_COLUMNS} columns")
            sizes.append(bitsets.shape[0])
        for node, bitset, feature in zip(split[is_categorical], nodes["bitset_idx"][split][is_categorical],
                                         features[is_categorical]):
            if bitset >= min(sizes):
                held = f"outside 0..{min(sizes) - 1}" if min(sizes) else "but the tree holds none"
                self.fail(f"{label} node {node} has bitset {bitset} {held}")
            # Known categories are looked up by feature, in a table of the categorical features only.
            if categorical is None or not categorical[feature]:
                self.fail(f"{label} node {node} splits feature {feature} by category, but it is not categorical")

    # -- shared --------------------------------------------------------------------
    def structure(self, label, n, left, right, leaf, right_leaf) -> int:
        """Refuse children out of range, before their parent or shared; return the depth."""
        if not np.array_equal(leaf, right_leaf):
            node = int(np.flatnonzero(leaf != right_leaf)[0])
            self.fail(f"{label} node {node} has one child only ({left[node]}, {right[node]})")
        split = np.flatnonzero(~leaf)
        for children in (left[split], right[split]):
            bad = (children < 0) | (children >= n)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                self.fail(f"{label} node {split[first]} has child {children[first]} outside 0..{n - 1}")
            bad = children <= split
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                self.fail(f"{label} node {split[first]} has child {children[first]} before it (a cycle)")
        parents = np.bincount(np.concatenate([left[split], right[split]]), minlength=n)
        if (parents > 1).any():
            self.fail(f"{label} node {int(np.flatnonzero(parents > 1)[0])} has {int(parents.max())} parents")
        depth, frontier = 0, np.array([0])
        while True:
            frontier = frontier[~leaf[frontier]]
            if frontier.size == 0:
                return depth
            frontier = np.concatenate([left[frontier], right[frontier]])
            depth += 1

    def features(self, label, split, features, n_features) -> None:
        limit = np.iinfo(np.int64).max if n_features is None else n_features
        bad = (features < 0) | (features >= limit)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            self.fail(f"{label} node {split[first]} splits on feature {features[first]} outside 0..{limit - 1}")


def check_fitted_trees(estimator, source: str | Path | None = None) -> int:
    """Refuse (``InputError`` naming ``source``) the first tree array of ``estimator`` out of range.

    Walks every fitted sub-estimator (pipelines, searches, calibration,
    ensembles, whatever holds them) and returns the number of trees checked.
    """
    return _Trees(source).walk(estimator)
