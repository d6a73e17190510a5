"""Small torch helpers used across the package: the model's device, eval mode, random generators.

One implementation each, so that every module means the same thing by them.

- :func:`model_device` -- where a model's parameters (or buffers) live.
- :func:`eval_mode` -- a context manager: eval mode inside, every module's
  flag restored on exit (also when the body raises).
- :func:`keep_grads` -- a context manager: every parameter's ``.grad`` restored
  on exit (for libraries that call ``backward()`` on the user's model).
- :func:`as_generator` -- the package's one rule for ``random_state``: an int
  seeds a new generator, a ``torch.Generator`` is used as is, and ``None``
  means fresh randomness drawn from torch's global generator (so
  ``torch.manual_seed`` makes it reproducible), as ``None`` means in
  scikit-learn.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["model_device", "eval_mode", "keep_grads", "as_generator", "seed_from"]


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (or buffer); the CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every module's train/eval flag on exit.

    Example
    -------
    >>> m = torch.nn.Sequential(torch.nn.Dropout(), torch.nn.BatchNorm1d(2)).train()
    >>> with eval_mode(m):
    ...     m.training, m[0].training
    (False, False)
    >>> m.training, m[1].training
    (True, True)
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def keep_grads(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every parameter's ``.grad`` (``None`` or its values) on exit, also when the body raises.

    Example
    -------
    >>> lin = torch.nn.Linear(2, 1)
    >>> with keep_grads(lin):
    ...     lin(torch.ones(1, 2)).sum().backward()
    >>> lin.weight.grad is None
    True
    """
    saved = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    try:
        yield model
    finally:
        for p, g in saved:
            if g is None:
                p.grad = None
            else:
                p.grad = g


def as_generator(random_state: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``random_state`` (int, generator, or ``None`` = fresh randomness).

    Example
    -------
    >>> a, b = as_generator(3), as_generator(3)
    >>> bool(torch.equal(torch.rand(2, generator=a), torch.rand(2, generator=b)))
    True
    """
    if isinstance(random_state, torch.Generator):
        return random_state
    g = torch.Generator()
    if random_state is None:
        g.manual_seed(int(torch.randint(0, 2**62, (1,))))
    elif isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        g.manual_seed(int(random_state))
    else:
        raise TypeError(f"random_state must be an int, a torch.Generator or None, got {type(random_state).__name__}")
    return g


def seed_from(random_state: Any) -> int:
    """An int seed from ``random_state`` (int, None, np/torch generator)."""
    if random_state is None:
        return int(torch.randint(0, 2**62, (1,)))
    if isinstance(random_state, torch.Generator):
        return int(torch.randint(0, 2**62, (1,), generator=random_state))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**62))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral):
        if int(random_state) < 0:
            raise ValueError(f"random_state must be non-negative, got {random_state}.")
        return int(random_state)
    raise TypeError(
        f"random_state must be None, an int, or a numpy/torch generator, got {type(random_state).__name__}."
    )
