"""Checkers for the chapters' coding exercises: run the student's function on small cases.

Every coding exercise of the book asks for one function with a fixed signature. The cell after
the exercise calls its checker, ``check_<name>(student_function)``, which runs the function on a
few small cases whose answers are known (built here, independently of the book's data), prints
one line per failing case saying what is wrong, and returns whether every case passed. In the
book build (``KMEX_STRICT_CHECKS`` on, see :func:`kmexplain_utils.chapters.notebook.strict_checks`) a
failing case raises :class:`AssertionError`, so the book's own solutions are checked at every
build; in a student's notebook it only prints.

A function that is still the template (its body ``...``, so it returns ``None``) or raises
``NotImplementedError`` is reported as "not written yet".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .notebook import strict_checks

__all__ = [
    "check_pixels",
    "check_largest_part",
    "check_difference_map",
    "check_best_alpha",
    "check_negative_cams",
    "check_linear_from_prototypes",
    "check_nearest_mean_predict",
    "check_break_kmeans",
    "check_contrastive_map",
    "check_shuffle_positions",
    "check_concept_contributions",
    "check_block_scaling",
]

Case = tuple[str, Callable[[], "str | None"]]


class _NotWritten(Exception):
    pass


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError as e:
        raise _NotWritten(str(e)) from None
    if out is None:
        raise _NotWritten("the function returns None")
    return out


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(x))
    except Exception as e:  # noqa: BLE001 - any conversion error is the student's to read
        raise TypeError(f"{name} must be a tensor or an array, got {type(x).__name__}") from e


def _run(name: str, cases: list[Case]) -> bool:
    """Run the cases; print what fails; raise in the book build. Returns True when all pass."""
    problems: list[str] = []
    for label, case in cases:
        try:
            msg = case()
        except _NotWritten as e:
            problems = [f"  not written yet ({e}): write the function's body, then run this cell again"]
            break
        except Exception as e:  # noqa: BLE001 - the student's error is the report
            msg = f"raised {type(e).__name__}: {e}"
        if msg:
            problems.append(f"  - {label}: {msg}")
    if not problems:
        n = len(cases)
        print(f"{name}: all {n} cases pass." if n > 1 else f"{name}: the one case passes.")
        return True
    text = f"{name}: {len(problems)} of {len(cases)} cases fail\n" + "\n".join(problems)
    print(text)
    if strict_checks():
        raise AssertionError(text)
    return False


def _close(got: torch.Tensor, want: torch.Tensor, what: str, atol: float = 1e-5) -> str | None:
    if tuple(got.shape) != tuple(want.shape):
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    err = (got.double() - want.double()).abs().max().item() if got.numel() else 0.0
    if not err <= atol * max(1.0, want.double().abs().max().item() if want.numel() else 1.0):
        return f"{what} differs from the expected values by up to {err:.3g}"
    return None


# ----------------------------------------------------------------------------- chapter 0

def check_pixels(pixels: Callable[..., Any]) -> bool:
    """Chapter 0, exercise 3: ``pixels(images, grid)`` averages images down to a grid.

    Parameters
    ----------
    pixels : callable
        ``pixels(images, grid)`` with images a ``(N, 3, H, W)`` float tensor; returns the
        ``(N, 3 * grid * grid)`` array (or tensor) of the averages of each channel over each of
        the ``grid x grid`` equal cells, channel by channel, rows of cells in order.

    Returns
    -------
    bool
        Whether every case passed.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)

    def blocks() -> str | None:  # four constant quadrants per channel
        img = torch.zeros(1, 3, 4, 4)
        for c in range(3):
            for i, (r, s) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
                img[0, c, r:r + 2, s:s + 2] = 10 * c + i
        want = torch.tensor([[10.0 * c + i for c in range(3) for i in range(4)]])
        return _close(_as_tensor(_call(pixels, img, 2), "pixels(...)"), want, "pixels(quadrant image, 2)")

    def grid1() -> str | None:
        return _close(_as_tensor(_call(pixels, x, 1), "pixels(...)"), x.mean(dim=(2, 3)),
                      "pixels(x, 1) (the mean of each channel)")

    def grid4() -> str | None:
        want = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return _close(_as_tensor(_call(pixels, x, 4), "pixels(...)"), want, "pixels(x, 4)")

    return _run("pixels", [("2 x 2 grid on four constant quadrants", blocks),
                           ("1 x 1 grid", grid1), ("4 x 4 grid on random 8 x 8 images", grid4)])


def check_largest_part(largest_part: Callable[..., Any]) -> bool:
    """Chapter 0, exercise 4: ``largest_part(parts)``, the largest non-background part.

    Parameters
    ----------
    largest_part : callable
        ``largest_part(parts)`` with ``parts`` a ``(N, H, W)`` integer tensor of part labels
        (0 = background); returns the ``(N,)`` labels (>= 1) of each image's largest part
        other than the background.

    Returns
    -------
    bool
    """
    parts = torch.zeros(3, 6, 6, dtype=torch.long)
    parts[0, :2, :] = 1          # 12 px of part 1
    parts[0, 3:, :3] = 2         # 9 px of part 2
    parts[1, :1, :] = 1          # 6 px of part 1
    parts[1, 2:, 2:] = 3         # 16 px of part 3
    parts[2, 0, 0] = 2           # 1 px: background (35 px) must not win
    want = torch.tensor([1, 3, 2])

    def case() -> str | None:
        got = _as_tensor(_call(largest_part, parts), "largest_part(...)").long().flatten()
        if got.shape != want.shape:
            return f"returned {tuple(got.shape)} values for 3 images"
        if bool((got == 0).any()):
            return "returned label 0 (the background): only parts 1, 2, ... count"
        bad = (got != want).nonzero().flatten().tolist()
        return f"wrong label for images {bad}: got {got.tolist()}, expected {want.tolist()}" if bad else None

    return _run("largest_part", [("three 6 x 6 part maps (one mostly background)", case)])


# ----------------------------------------------------------------------------- chapter 1

def check_difference_map(difference_map: Callable[..., Any]) -> bool:
    """Chapter 1, exercise 3: the winner's minus the runner-up's similarity map.

    Parameters
    ----------
    difference_map : callable
        ``difference_map(s, logits, n)`` with ``s`` the ``(N, C, H, W)`` per-position
        similarities and ``logits`` the ``(N, C)`` logits; returns ``(winner, runner_up, d)``
        for image ``n``: the two classes with the largest logits and the ``(H, W)`` map
        ``s[n, winner] - s[n, runner_up]``.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 5, 4, 4, generator=g)
    logits = s.mean(dim=(2, 3))

    def case(n: int) -> Callable[[], str | None]:
        def run() -> str | None:
            w, r, d = _call(difference_map, s, logits, n)
            top2 = logits[n].topk(2).indices.tolist()
            if [int(w), int(r)] != top2:
                return f"winner, runner-up = {int(w)}, {int(r)}; expected {top2[0]}, {top2[1]}"
            d = _as_tensor(d, "the difference map")
            bad = _close(d, s[n, top2[0]] - s[n, top2[1]], "the difference map")
            if bad:
                return bad
            gap = abs(d.mean().item() - (logits[n, top2[0]] - logits[n, top2[1]]).item())
            return None if gap < 1e-5 else f"its mean is {gap:.3g} away from the logit difference"
        return run

    return _run("difference_map", [(f"random similarities, image {n}", case(n)) for n in range(3)])


def check_best_alpha(best_alpha: Callable[..., Any]) -> bool:
    """Chapter 1, exercise 4: the rescaling ``alpha >= 0`` that brings ``alpha w`` nearest the data.

    Parameters
    ----------
    best_alpha : callable
        ``best_alpha(w, Z)`` with ``w`` a ``(D,)`` row and ``Z`` the ``(N, D)`` embeddings;
        returns the ``alpha >= 0`` minimising ``min_i ||alpha w - z_i||`` (a grid search is
        fine: within 2 % of the exact value, or 0.02 when it is 0).

    Returns
    -------
    bool
    """
    e1, e2 = torch.eye(3)[0], torch.eye(3)[1]

    def case(w: torch.Tensor, Z: torch.Tensor, want: float, what: str) -> Case:
        def run() -> str | None:
            got = float(_call(best_alpha, w, Z))
            if got < 0:
                return f"alpha = {got:.3g} < 0: the rescaling must keep the row's direction"
            ok = abs(got - want) <= (0.02 * want if want > 0 else 0.02)
            return None if ok else f"alpha = {got:.4g}, expected {want:.4g}"
        return (what, run)

    return _run("best_alpha", [
        case(2 * e1, torch.stack([3 * e1, -5 * e1 + 10 * e2]), 1.5, "a data point on the row's line"),
        case(e1, torch.stack([4 * e1 + e2, 8 * e1 + 3 * e2]), 4.0, "two points off the line"),
        case(e1, torch.stack([-3 * e1, -2 * e1 + e2]), 0.0, "all data behind the origin (alpha = 0)"),
    ])


def check_negative_cams(make_cams_negative: Callable[..., Any]) -> bool:
    """Chapter 1, exercise 5 (break it): shifted rows that turn every CAM blue, same predictions.

    Parameters
    ----------
    make_cams_negative : callable
        ``make_cams_negative(W, bias, Z_train)`` with ``W`` the ``(C, D)`` rows, ``bias`` the
        ``(C,)`` biases and ``Z_train`` the ``(N, D)`` training embeddings (non-negative, as
        after a ReLU); returns the shifted rows ``W + v`` (one ``v`` for every row) under which
        the predicted class's map is negative on at least 95 % of the positions.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(2)
    C, D = 4, 6
    W = torch.randn(C, D, generator=g)
    bias = torch.randn(C, generator=g)
    Z_train = torch.rand(50, D, generator=g) + 0.1
    A = torch.rand(5, 3, 3, D, generator=g) + 0.1  # (N, H, W, D) position vectors

    def run() -> str | None:
        W_v = _as_tensor(_call(make_cams_negative, W, bias, Z_train), "the shifted rows").to(W)
        if W_v.shape != W.shape:
            return f"the shifted rows have shape {tuple(W_v.shape)}, expected {tuple(W.shape)}"
        v = W_v - W
        if (v - v[0]).abs().max() > 1e-4 * max(1.0, v.abs().max().item()):
            return "the rows were not all shifted by the same vector v"
        before, after = A @ W.T + bias, A @ W_v.T + bias  # (N, H, W, C)
        pred_b, pred_a = before.mean((1, 2)).argmax(1), after.mean((1, 2)).argmax(1)
        if not bool((pred_a == pred_b).all()):
            return "some predictions changed"
        n = torch.arange(len(A))
        neg = (after[n, :, :, pred_b] < 0).float().mean().item()
        return None if neg >= 0.95 else f"only {100 * neg:.0f} % of the winner's positions are negative"

    return _run("make_cams_negative", [("random rows and non-negative positions", run)])


# ----------------------------------------------------------------------------- chapter 2

def check_linear_from_prototypes(linear_from_prototypes: Callable[..., Any]) -> bool:
    """Chapter 2, exercise 3: the k-means head as a linear layer.

    Parameters
    ----------
    linear_from_prototypes : callable
        ``linear_from_prototypes(mu)`` with ``mu`` the ``(P, D)`` prototypes; returns
        ``(weight, bias)`` of shapes ``(P, D)`` and ``(P,)`` such that
        ``z @ weight.T + bias = ||z||^2 - ||z - mu||^2``.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(3)
    mu = torch.randn(6, 5, generator=g, dtype=torch.float64)
    Z = torch.randn(20, 5, generator=g, dtype=torch.float64)

    def run() -> str | None:
        weight, b = _call(linear_from_prototypes, mu)
        weight, b = _as_tensor(weight, "weight").double(), _as_tensor(b, "bias").double()
        bad = _close(weight, 2 * mu, "weight (expected 2 mu)") or _close(b, -mu.pow(2).sum(1),
                                                                       "bias (expected -||mu||^2)")
        if bad:
            return bad
        scores = Z @ weight.T + b
        want = Z.pow(2).sum(1, keepdim=True) - torch.cdist(Z, mu).pow(2)
        return _close(scores, want, "the scores")

    return _run("linear_from_prototypes", [("6 random prototypes in 5 dimensions", run)])


def check_nearest_mean_predict(nearest_mean_predict: Callable[..., Any]) -> bool:
    """Chapter 2, exercise 4: the nearest-class-mean classifier (k-means with K = 1).

    Parameters
    ----------
    nearest_mean_predict : callable
        ``nearest_mean_predict(Z_train, y_train, Z)`` returns, for each row of ``Z``, the class
        (a value of ``y_train``) whose mean training embedding is nearest.

    Returns
    -------
    bool
    """
    Z_train = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0], [0.0, 9.0]])
    y_train = torch.tensor([3, 3, 7, 7, 5])  # class means (1, 0), (10, 2), (0, 9)
    Z = torch.tensor([[1.5, 0.0], [9.0, 1.0], [1.0, 8.0], [5.0, 1.0], [6.0, 2.0]])
    want = torch.tensor([3, 7, 5, 3, 7])

    def run() -> str | None:
        got = _as_tensor(_call(nearest_mean_predict, Z_train, y_train, Z), "the predictions").long()
        got = got.flatten()
        if got.shape != want.shape:
            return f"{got.numel()} predictions for 5 points"
        bad = (got != want).nonzero().flatten().tolist()
        return None if not bad else (f"wrong class for points {bad}: got {got.tolist()}, expected "
                                     f"{want.tolist()} (class labels 3, 5, 7, not 0, 1, 2)")

    return _run("nearest_mean_predict", [("three classes with labels 3, 5, 7", run)])


def check_break_kmeans(coordinate_scale: Callable[..., Any]) -> bool:
    """Chapter 2, exercise 5 (break it): a coordinate scaling that the linear head absorbs.

    Parameters
    ----------
    coordinate_scale : callable
        ``coordinate_scale(Z_train, y_train)`` returns a ``(D,)`` vector of positive, finite
        factors; multiplying the embeddings by it (and dividing the linear head's weights by
        it, which changes no linear decision) must bring the accuracy of a nearest-class-mean
        head fitted on the scaled embeddings down by at least 20 points.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(4)
    n = 200
    y = torch.arange(n) % 2
    Z = torch.randn(n, 4, generator=g) * torch.tensor([0.3, 1.0, 1.0, 1.0])
    Z[:, 0] += 2.0 * y  # only coordinate 0 separates the classes

    def nearest_mean_accuracy(Zs: torch.Tensor) -> float:
        means = torch.stack([Zs[y == c].mean(0) for c in (0, 1)])
        return (torch.cdist(Zs, means).argmin(1) == y).float().mean().item()

    def run() -> str | None:
        s = _as_tensor(_call(coordinate_scale, Z, y), "the scale").double().flatten()
        if s.shape != (4,):
            return f"the scale has {s.numel()} entries, expected one per coordinate (4)"
        if not bool(torch.isfinite(s).all() and (s > 0).all()):
            return "the factors must be positive and finite (the linear head divides by them)"
        before, after = nearest_mean_accuracy(Z), nearest_mean_accuracy(Z * s.float())
        if after > before - 0.2:
            return (f"nearest-mean accuracy {100 * before:.0f} % -> {100 * after:.0f} %: not broken "
                    "(amplify coordinates that do not separate the classes)")
        return None

    return _run("coordinate_scale", [("two classes separated by one coordinate of four", run)])


# ----------------------------------------------------------------------------- chapter 3

def check_contrastive_map(contrastive_map: Callable[..., Any]) -> bool:
    """Chapter 3, exercise 2: the contrastive map of class ``c`` against class ``c2``.

    Parameters
    ----------
    contrastive_map : callable
        ``contrastive_map(m, proto_class, c, c2)`` with ``m`` the ``(P, H, W)`` maps
        ``m_{c,j}(p)`` of every prototype and ``proto_class`` the ``(P,)`` class of each;
        returns the ``(H, W)`` map ``max_j m_{c,j}(p) - max_j m_{c2,j}(p)``.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(5)
    m = torch.randn(6, 3, 3, generator=g)
    proto_class = torch.tensor([0, 0, 1, 1, 2, 2])

    def case(c: int, c2: int) -> Case:
        def run() -> str | None:
            got = _as_tensor(_call(contrastive_map, m, proto_class, c, c2), "the map")
            want = m[proto_class == c].max(0).values - m[proto_class == c2].max(0).values
            return _close(got, want, f"the map of {c} against {c2}")
        return (f"class {c} against class {c2}", run)

    return _run("contrastive_map", [case(0, 1), case(2, 0)])


def check_shuffle_positions(shuffle_positions: Callable[..., Any]) -> bool:
    """Chapter 3, exercise 4 (break it): the positions of a feature map shuffled.

    Parameters
    ----------
    shuffle_positions : callable
        ``shuffle_positions(A, seed)`` with ``A`` a ``(D, H, W)`` feature map; returns a
        ``(D, H, W)`` map whose positions (the vectors ``A[:, h, w]``) are those of ``A`` in
        another order: each vector kept whole, every vector used once.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(6)
    A = torch.randn(5, 4, 4, generator=g)

    def run() -> str | None:
        B = _as_tensor(_call(shuffle_positions, A, 0), "the shuffled map")
        if B.shape != A.shape:
            return f"shape {tuple(B.shape)}, expected {tuple(A.shape)}"
        a, b = A.flatten(1).T, B.flatten(1).T  # (HW, D) position vectors
        d = torch.cdist(b, a)
        match = d.argmin(1)
        if d.min(1).values.max() > 1e-6:
            return "some positions are not vectors of the original map (channels mixed?)"
        if len(set(match.tolist())) != len(a):
            return "some positions appear twice and others not at all: a permutation uses each once"
        if bool((match == torch.arange(len(a))).all()):
            return "the positions are in their original order"
        return None

    return _run("shuffle_positions", [("a random 5 x 4 x 4 map", run)])


def check_concept_contributions(concept_contributions: Callable[..., Any]) -> bool:
    """Chapter 3, exercise 3: the score split by concept.

    Parameters
    ----------
    concept_contributions : callable
        ``concept_contributions(m, kappa, K)`` with ``m`` an ``(H, W)`` attribution map,
        ``kappa`` the ``(H, W)`` concept map (labels ``0 .. K-1``) and ``K`` the number of
        concepts; returns the ``(K,)`` contributions ``C_k = (1/|P|) sum_{p: kappa(p)=k} m(p)``
        (0 for an absent concept), which sum to the mean of ``m``.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(8)
    m = torch.randn(4, 4, generator=g)
    kappa = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1], [0, 2, 2, 1], [4, 4, 4, 4]])  # 3 absent

    def run() -> str | None:
        got = _as_tensor(_call(concept_contributions, m, kappa, 5), "the contributions").flatten()
        want = torch.stack([(m * (kappa == k)).sum() / m.numel() for k in range(5)])
        bad = _close(got, want, "the contributions")
        if bad:
            return bad + (" (divide by all |P| positions, not by n_k)" if
                          _close(got, want * m.numel() / torch.stack(
                              [(kappa == k).sum().clamp(min=1) for k in range(5)]), "") is None else "")
        return None

    return _run("concept_contributions", [("a 4 x 4 map, 5 concepts, one absent", run)])


# ----------------------------------------------------------------------------- chapter 4

def check_block_scaling(scale_blocks: Callable[..., Any]) -> bool:
    """Chapter 4, exercise 3: per-block scaling before concatenation.

    Parameters
    ----------
    scale_blocks : callable
        ``scale_blocks(blocks)`` with ``blocks`` a list of ``(N, D_b)`` pooled features of the
        same images; returns the list of the blocks, each divided by the mean norm of its rows,
        so that every block has mean row norm 1.

    Returns
    -------
    bool
    """
    g = torch.Generator().manual_seed(7)
    blocks = [torch.randn(10, 3, generator=g) * 100, torch.randn(10, 8, generator=g) * 0.01]

    def run() -> str | None:
        out = _call(scale_blocks, blocks)
        if len(out) != len(blocks):
            return f"{len(out)} blocks returned for {len(blocks)}"
        for i, (o, b) in enumerate(zip(out, blocks)):
            o = _as_tensor(o, f"block {i}")
            sigma = b.pow(2).sum(1).mean().sqrt()
            bad = _close(o, b / sigma, f"block {i} (expected divided by sigma_b = {sigma:.3g})")
            if bad:
                return bad
        return None

    return _run("scale_blocks", [("a large block and a small block", run)])
