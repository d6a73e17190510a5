"""scikit-learn glue shared by the estimators: input checks, the parameter table, output types.

The estimators take numpy arrays, lists (and other array-likes, pandas
included) or torch tensors. Non-tensor inputs go through scikit-learn's
``validate_data`` (feature counts and names, sparse, complex and object
inputs, empty data), tensors are checked here without leaving their device.
Outputs follow the input: numpy for everything but tensors, tensors on the
input's device for tensors.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import validate_data

__all__ = ["RANDOM_STATE_CONSTRAINT", "is_tensor", "validate_features", "check_n_features"]

#: ``random_state``: ``None`` (a fresh random seed at every ``fit``), a non-negative int,
#: or a numpy / torch generator.
RANDOM_STATE_CONSTRAINT = [
    Interval(numbers.Integral, 0, None, closed="left"),
    np.random.RandomState,
    np.random.Generator,
    torch.Generator,
    None,
]


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (its outputs are then tensors on its device)."""
    return isinstance(x, torch.Tensor)


def check_n_features(estimator: Any, n_features: int, *, name: str = "X") -> None:
    """Raise scikit-learn's message when ``n_features`` differs from ``estimator.n_features_in_``."""
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and int(n_features) != int(expected):
        raise ValueError(
            f"{name} has {n_features} features, but {type(estimator).__name__} is expecting "
            f"{expected} features as input; pass an array of shape (n_samples, {expected})."
        )


def validate_features(estimator: Any, X: Any, *, reset: bool) -> Any:
    """Check ``X`` as scikit-learn does, without copying it or moving a tensor.

    Parameters
    ----------
    estimator : BaseEstimator
        Gets ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame)
        when ``reset``; otherwise ``X`` is checked against them.
    X : array-like or torch.Tensor of shape (n_samples, n_features)
        The input.
    reset : bool
        ``True`` in ``fit``, ``False`` in the methods that use a fitted model.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        A tensor is returned as is; anything else as a numeric numpy array
        (no copy for a numeric array). Inputs that are not 2-D are returned
        unchecked, for the caller to raise its own shape error with a hint.
    """
    if isinstance(X, torch.Tensor):
        if X.ndim == 2:
            if reset:
                estimator.n_features_in_ = int(X.shape[1])
                estimator.__dict__.pop("feature_names_in_", None)
            else:
                check_n_features(estimator, int(X.shape[1]))
        return X
    if isinstance(X, np.ndarray) and X.ndim != 2 and X.dtype != object:
        return X
    return validate_data(
        estimator, X, reset=reset, dtype="numeric", ensure_all_finite=False, accept_sparse=False, ensure_2d=True
    )
