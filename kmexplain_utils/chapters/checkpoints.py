"""Model checkpoints: atomic writes, validated reads.

A checkpoint is one ``torch.save`` file holding a plain dictionary::

    {"format": 1, "state_dict": {name: tensor}, "metadata": {str: plain values}}

It is read back with ``torch.load(weights_only=True)`` (no code is executed
from the file), written to a temporary file in the same folder and moved into
place with :func:`os.replace` (readers never see a half-written file), and
checked before any weight is copied into a model: a corrupt or truncated
file, missing or extra weights, wrong shapes, or metadata from another
profile/version raise :class:`CheckpointError` naming the file and the
problem.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointWarning",
    "save_checkpoint",
    "read_checkpoint",
    "check_metadata",
    "load_state_dict_checked",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used: corrupt, truncated or mismatched."""


class CheckpointWarning(UserWarning):
    """A cached checkpoint was unusable and is being replaced (e.g. retrained)."""


def _plain(value: Any, where: str = "metadata") -> Any:
    """``value`` as built-in types that ``torch.load(weights_only=True)`` accepts."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):  # e.g. torch.__version__ is a str subclass
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _plain(value.item(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v, where) for v in value)
    if isinstance(value, list):
        return [_plain(v, where) for v in value]
    raise TypeError(
        f"{where} holds a {type(value).__name__}; checkpoint metadata may only hold str, int, float, "
        "bool, None and lists/tuples/dicts of them (convert it, e.g. with str())."
    )


def save_checkpoint(path: str | os.PathLike, model: nn.Module, metadata: Mapping[str, Any]) -> Path:
    """Save ``model.state_dict()`` and ``metadata`` to ``path`` atomically.

    The file is first written to a temporary file in the same folder, flushed
    to disk, then renamed over ``path``; on any failure the temporary file is
    removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or path-like
        Destination file (its folder is created if needed).
    model : torch.nn.Module
        Model whose ``state_dict`` is saved (tensors are copied to the CPU).
    metadata : mapping
        Plain values only (str, int, float, bool, None, and lists/tuples/dicts
        of them; numpy/torch scalars, paths and str subclasses are converted),
        so that the file loads with ``weights_only=True``.

    Raises
    ------
    TypeError
        If ``metadata`` holds another type (before anything is written).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": _plain(dict(metadata)),
    }
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file safely and check its structure.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_checkpoint`.

    Returns
    -------
    state_dict : dict of str to torch.Tensor
        The weights, on the CPU.
    metadata : dict
        The metadata saved with them.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file cannot be unpickled safely (corrupt, truncated, not a
        checkpoint) or lacks the expected entries.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        raise CheckpointError(
            f"Checkpoint {path} is corrupt or truncated and cannot be read "
            f"({type(exc).__name__}: {reason}). Delete it to retrain."
        ) from exc
    if not isinstance(payload, dict) or not {"state_dict", "metadata"} <= set(payload):
        kind = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"Checkpoint {path} is not a kmexplain checkpoint (expected keys 'state_dict' and 'metadata', "
            f"found {kind}). Delete it to retrain."
        )
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"Checkpoint {path} has format {payload.get('format')!r}, this package reads format "
            f"{CHECKPOINT_FORMAT}. Delete it to retrain."
        )
    state, metadata = payload["state_dict"], payload["metadata"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"Checkpoint {path}: 'state_dict' is not a dictionary of tensors. Delete it to retrain.")
    if not isinstance(metadata, dict):
        raise CheckpointError(f"Checkpoint {path}: 'metadata' is not a dictionary. Delete it to retrain.")
    return state, metadata


def check_metadata(
    path: str | os.PathLike, metadata: Mapping[str, Any], expected: Mapping[str, Any] | None
) -> None:
    """Raise :class:`CheckpointError` if ``metadata`` disagrees with ``expected``.

    Only the keys of ``expected`` are compared (``==``; tuples and lists
    compare equal when their items do).
    """
    if not expected:
        return

    def norm(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    diffs = [
        f"{key}: file has {metadata.get(key, '<missing>')!r}, expected {value!r}"
        for key, value in expected.items()
        if key not in metadata or norm(metadata[key]) != norm(value)
    ]
    if diffs:
        raise CheckpointError(f"Checkpoint {path} does not match the requested run ({'; '.join(diffs)}).")


def load_state_dict_checked(path: str | os.PathLike, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model`` after checking every name and shape.

    Nothing is copied unless everything matches, so a failed load leaves the
    model untouched.

    Raises
    ------
    CheckpointError
        Naming the missing/unexpected weights or the first shape mismatches.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing weights {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected weights {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
    if shapes:
        problems.append(f"shape mismatch {shapes[:3]}{' ...' if len(shapes) > 3 else ''}")
    if problems:
        raise CheckpointError(
            f"Checkpoint {path} does not fit the model {type(model).__name__}: {'; '.join(problems)}."
        )
    model.load_state_dict(state, strict=True)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, expected_metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` after validating it.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_checkpoint`.
    model : torch.nn.Module
        Receives the weights (on its own device).
    expected_metadata : mapping, optional
        Values the saved metadata must have (e.g. profile name, config hash,
        seed, package version).

    Returns
    -------
    dict
        The saved metadata.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        Corrupt/truncated file, metadata mismatch, missing/unexpected weights
        or shape mismatch; the model is left unchanged.
    """
    state, metadata = read_checkpoint(path)
    check_metadata(path, metadata, expected_metadata)
    load_state_dict_checked(path, model, state)
    return metadata
