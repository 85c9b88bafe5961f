"""Shape checks of fitted libsvm arrays (SVC and relatives) of a model loaded from a file.

Why: scikit-learn hands ``support_vectors_``, ``_dual_coef_``, ``_intercept_``,
``_n_support`` and ``_probA``/``_probB`` to libsvm's C code, which trusts their
sizes; it checks only that ``_n_support`` sums to the number of support
vectors.  A file whose arrays disagree makes libsvm read past them: silently
wrong decision values, or a crash.  skops trusts SVC by default (types, not
contents), so we check the sizes here, after loading.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def check_fitted_svms(estimator, source=None) -> int:
    """Refuse (``InputError`` naming ``source``) the first fitted libsvm model whose arrays disagree; return how many."""
    from sklearn.svm._base import BaseLibSVM

    count, seen, stack = 0, set(), [estimator]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, (str, bytes, int, float, np.generic, np.ndarray)) or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
            continue
        if isinstance(obj, BaseLibSVM) and hasattr(obj, "support_vectors_"):
            _check(obj, f"{type(obj).__name__} {count}", source)
            count += 1
        try:
            stack.extend(vars(obj).values())
        except TypeError:
            pass
    return count


def _check(svm, label, source) -> None:
    def fail(problem):
        raise InputError(source, f"{label}: {problem}")

    vectors = svm.support_vectors_
    n_sv = vectors.shape[0]
    n_support = np.asarray(svm._n_support)
    n_class = n_support.size
    pairs = n_class * (n_class - 1) // 2 if n_class > 1 else 1
    if vectors.ndim != 2 or (n_sv and vectors.shape[1] != svm.n_features_in_):
        fail(f"support vectors of shape {vectors.shape}, for {svm.n_features_in_} features")
    if (n_support < 0).any() or n_support.sum() != n_sv:
        fail(f"class support counts {n_support.tolist()} do not add up to {n_sv} support vectors")
    if np.asarray(svm.support_).shape != (n_sv,):
        fail(f"{np.asarray(svm.support_).size} support indices for {n_sv} support vectors")
    dual = svm._dual_coef_
    if dual.shape != (max(n_class - 1, 1), n_sv):
        fail(f"dual coefficients of shape {dual.shape}, expected {(max(n_class - 1, 1), n_sv)}")
    if np.asarray(svm._intercept_).shape != (pairs,):
        fail(f"{np.asarray(svm._intercept_).size} intercepts, expected {pairs}")
    for name in ("_probA", "_probB"):
        size = np.asarray(getattr(svm, name, [])).size
        if size not in (0, pairs):
            fail(f"{size} {name} values, expected 0 or {pairs}")
    for name in ("support_vectors_", "_dual_coef_", "_intercept_"):
        values = getattr(svm, name)
        values = values.data if hasattr(values, "data") and not isinstance(values, np.ndarray) else np.asarray(values)
        if not np.isfinite(values).all():
            fail(f"{name} holds values that are not finite numbers")
