"""Chapter 6's plumbing: a pretrained network on real photographs, read with held-out photos.

The chapter fits its k-means head and concepts on crops of the *fitting*
photos and explains and scores the *held-out* ones
(:mod:`kmexplain_utils.data.photos`). This module holds what it needs that is
not the method itself:

- :func:`prediction_table` -- the network's top classes on each photo, with the
  photo's right answers (:data:`~kmexplain_utils.data.photos.PHOTO_CLASSES`);
- :func:`choose_n_prototypes` and :func:`choose_n_concepts` -- ``K`` and ``K'``
  chosen on fitting data only (a validation split of the fitting images; the
  silhouette of the fitting positions), never on the scored photos;
- :func:`refit_concepts` -- a fitted :class:`~kmexplain_utils.Explainer` with
  ``K'`` concepts fitted on the positions it already sampled (no new pass);
- :func:`agreement` -- how often the k-means head picks the network's class,
  outright and among the classes the head knows;
- :func:`concept_content` and :func:`colour_explains_concepts` -- what the
  concepts are on real pixels: mean colour, saturation, texture, a name
  computed from these, and how much of the concept assignment a pixel's colour
  (and texture) alone recovers;
- :func:`figure_legend` -- one legend under a figure of concept maps.

The randomisation sanity check is not here: chapter 6 runs chapter 5's protocol,
:func:`kmexplain_utils.evaluation.sanity.randomisation_protocol`.

Example
-------
>>> import numpy as np
>>> from kmexplain_utils.evaluation.real_photos import colour_name
>>> colour_name(np.array([0.9, 0.2, 0.1])), colour_name(np.array([0.5, 0.5, 0.5]))
('red', 'grey')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "prediction_table", "linear_probe", "choose_n_prototypes", "choose_n_concepts", "refit_concepts", "agreement",
    "colour_name", "concept_content", "colour_explains_concepts", "figure_legend",
]


# ----------------------------------------------------------------------------- the network on the photos
def prediction_table(probs: torch.Tensor, photo_names: Sequence[str], categories: Sequence[str],
                     right: Mapping[str, Sequence[str]], *, top: int = 5):
    """The network's top classes on each photo, against the photo's right answers.

    Parameters
    ----------
    probs : torch.Tensor
        ``(N, C)`` softmax probabilities.
    photo_names : sequence of str
        ``N`` photo names (keys of ``right``).
    categories : sequence of str
        ``C`` class names.
    right : mapping of str to sequence of str
        The class names that would be a right answer for each photo (empty:
        the label set has no class for what the photo shows).
    top : int
        Ranks listed in ``top-k``.

    Returns
    -------
    pandas.DataFrame
        One row per photo: ``photo``, ``top class``, ``p``, ``runner-up``,
        ``p2``, ``right`` (top class among the right answers),
        ``has class`` (the label set has a right answer), ``best right``
        (the highest-ranked right answer or ``""``), ``its rank`` (1-based,
        0 when none), ``its p`` and ``top-k`` (the first ``top`` names).

    Example
    -------
    >>> import torch
    >>> t = prediction_table(torch.tensor([[0.1, 0.7, 0.2]]), ["x"], ["a", "b", "c"], {"x": ["c"]})
    >>> t.loc[0, "top class"], bool(t.loc[0, "right"]), int(t.loc[0, "its rank"])
    ('b', False, 2)
    """
    import pandas as pd

    P = torch.as_tensor(probs).detach().float().cpu()
    if P.ndim != 2 or P.shape[0] != len(photo_names) or P.shape[1] != len(categories):
        raise ValueError(f"probs must be (N, C) = ({len(photo_names)}, {len(categories)}), got {tuple(P.shape)}")
    order = P.argsort(1, descending=True)
    index = {c: i for i, c in enumerate(categories)}
    rows = []
    for i, name in enumerate(photo_names):
        if name not in right:
            raise KeyError(f"no right answers for photo {name!r}; known photos: {sorted(right)}")
        ok = [index[c] for c in right[name] if c in index]
        unknown = [c for c in right[name] if c not in index]
        if unknown:
            raise ValueError(f"{name}: {unknown} are not class names of this network")
        rank = {int(c): r for r, c in enumerate(order[i].tolist())}
        best = min(ok, key=lambda c: rank[c]) if ok else None
        rows.append({
            "photo": name, "top class": categories[int(order[i, 0])], "p": float(P[i, order[i, 0]]),
            "runner-up": categories[int(order[i, 1])], "p2": float(P[i, order[i, 1]]),
            "right": int(order[i, 0]) in ok, "has class": bool(ok),
            "best right": categories[best] if best is not None else "",
            "its rank": rank[best] + 1 if best is not None else 0,
            "its p": float(P[i, best]) if best is not None else 0.0,
            "top-k": ", ".join(categories[int(c)] for c in order[i, :top]),
        })
    return pd.DataFrame(rows)


def linear_probe(Z: torch.Tensor, y: Any, *, C: float = 1.0, max_iter: int = 2000) -> Any:
    """scikit-learn's ``LogisticRegression`` fitted on embeddings, with BLAS on one thread.

    On a loaded machine a multi-threaded BLAS spins while it waits for its threads: the same
    fit on 200 x 1280 features took about 80 times more CPU time with two BLAS threads than with
    one. The result does not depend on the number of threads.

    Parameters
    ----------
    Z : torch.Tensor or numpy.ndarray
        ``(N, D)`` embeddings.
    y : array-like
        ``(N,)`` labels.
    C, max_iter :
        As in ``LogisticRegression``.

    Returns
    -------
    sklearn.linear_model.LogisticRegression

    Example
    -------
    >>> import torch
    >>> probe = linear_probe(torch.tensor([[0., 0], [0, 1], [5, 5], [5, 6]]), [0, 0, 1, 1])
    >>> probe.predict([[5., 5.5]]).tolist()
    [1]
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X = Z.detach().cpu().numpy() if isinstance(Z, torch.Tensor) else np.asarray(Z)
    with threadpool_limits(1):
        return LogisticRegression(C=C, max_iter=max_iter).fit(X, np.asarray(y))


# ----------------------------------------------------------------------------- K and K' on fitting data
def choose_n_prototypes(Z: torch.Tensor, y: Any, candidates: Sequence[int], *, val_fraction: float = 0.3,
                        random_state: int = 0):
    """Choose ``K`` (prototypes per class) on a validation split carved from the fitting data.

    The fitting rows of each class are split at random (stratified); a :class:`~kmexplain_utils.KMeansClassifier`
    with each ``K`` is fitted on the first part and scored on the validation
    rows whose class it has seen. Only ``K`` that every class's training rows
    allow are tried. The largest validation accuracy wins; ties go to the
    smaller ``K``.

    Parameters
    ----------
    Z : torch.Tensor
        ``(N, D)`` pooled embeddings of the fitting images.
    y : array-like
        ``(N,)`` their labels.
    candidates : sequence of int
        ``K`` to try.
    val_fraction : float
        Share of the rows held out for validation, in ``(0, 1)``.
    random_state : int
        Seed of the split and of k-means.

    Returns
    -------
    K : int
    table : pandas.DataFrame
        ``K``, ``validation accuracy``, ``validation images``.

    Raises
    ------
    ValueError
        When no candidate fits the smallest class, or no class has two rows to validate on.

    Example
    -------
    >>> import torch
    >>> Z = torch.cat([torch.randn(20, 4), torch.randn(20, 4) + 5]); y = [0] * 20 + [1] * 20
    >>> K, t = choose_n_prototypes(Z, y, [1, 2])
    >>> K in (1, 2), list(t.columns)
    (True, ['K', 'validation accuracy', 'validation images'])
    """
    import pandas as pd

    from ..classifier import KMeansClassifier

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    y = np.asarray(y)
    Z = torch.as_tensor(Z).float()
    if Z.ndim != 2 or Z.shape[0] != y.shape[0]:
        raise ValueError(f"Z must be (N, D) with N = len(y) = {y.shape[0]}, got {tuple(Z.shape)}")
    rng = np.random.default_rng(random_state)
    val_parts, tr_parts = [], []
    for c in np.unique(y):                    # stratified: every class with >= 2 rows is validated
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = min(len(rows) - 1, max(1, int(round(val_fraction * len(rows))))) if len(rows) > 1 else 0
        val_parts.append(rows[:n_val])
        tr_parts.append(rows[n_val:])
    val, tr = np.concatenate(val_parts), np.concatenate(tr_parts)
    classes, counts = np.unique(y[tr], return_counts=True)
    if len(val) == 0:
        raise ValueError("no class has two rows, so nothing can be validated; use more fitting images")
    ok = [int(k) for k in candidates if int(k) <= int(counts.min())]
    if not ok:
        raise ValueError(f"the smallest class has {int(counts.min())} training rows: no K in {list(candidates)} fits")
    rows = []
    for K in ok:
        clf = KMeansClassifier(K, random_state=random_state, device="cpu").fit(Z[tr], y[tr])
        rows.append({"K": K, "validation accuracy": float(clf.score(Z[val], y[val])), "validation images": len(val)})
    table = pd.DataFrame(rows)
    best = table["validation accuracy"].max()
    return int(table.loc[table["validation accuracy"] >= best - 1e-12, "K"].min()), table


def choose_n_concepts(vectors: torch.Tensor, candidates: Sequence[int], *, random_state: int = 0,
                      max_points: int = 3000):
    """Choose ``K'`` (concepts) by the silhouette of k-means on the fitting positions.

    Parameters
    ----------
    vectors : torch.Tensor
        ``(M, D)`` position vectors sampled from the fitting images (e.g.
        ``explainer.concepts_.sample_.vectors``).
    candidates : sequence of int
        ``K'`` to try (each at least 2).
    random_state : int
        Seed of k-means and of the subsample.
    max_points : int
        Positions the silhouette is computed on (a random subsample when more).

    Returns
    -------
    K' : int
        The candidate with the largest silhouette (ties: the smaller).
    table : pandas.DataFrame
        ``K'`` and ``silhouette``.

    Example
    -------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> V = torch.cat([torch.randn(50, 3, generator=g) + 8 * i for i in range(3)])
    >>> choose_n_concepts(V, [2, 3, 4])[0]
    3
    """
    import pandas as pd
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    from ..kmeans import KMeans

    V = torch.as_tensor(vectors).float().cpu()
    if V.ndim != 2:
        raise ValueError(f"vectors must be (M, D), got {tuple(V.shape)}")
    if any(int(k) < 2 or int(k) >= V.shape[0] for k in candidates):
        raise ValueError(f"every K' must lie in [2, M - 1] = [2, {V.shape[0] - 1}], got {list(candidates)}")
    rng = np.random.default_rng(random_state)
    sub = rng.choice(V.shape[0], size=min(V.shape[0], int(max_points)), replace=False)
    rows = []
    for k in candidates:
        lab = KMeans(n_clusters=int(k), random_state=random_state, device="cpu").fit(V).predict(V)
        lab = np.asarray(torch.as_tensor(lab).cpu())
        with threadpool_limits(1):
            sil = float(silhouette_score(V[sub].numpy(), lab[sub])) if len(np.unique(lab[sub])) > 1 else -1.0
        rows.append({"K'": int(k), "silhouette": sil})
    table = pd.DataFrame(rows)
    best = table["silhouette"].max()
    return int(table.loc[table["silhouette"] >= best - 1e-12, "K'"].min()), table


def refit_concepts(explainer: Any, n_concepts: int) -> Any:
    """A copy of a fitted Explainer whose concepts are re-fitted with ``n_concepts`` on its sampled positions.

    No forward pass: the positions the explainer sampled from its training
    images (``concepts_.sample_``) are clustered again.

    Example
    -------
    >>> import torch, torchvision
    >>> from kmexplain_utils import Explainer
    >>> net = torchvision.models.resnet18(weights=None, num_classes=2).eval()
    >>> ex = Explainer(net, "B4", 1, 3, device="cpu").fit(torch.rand(6, 3, 64, 64), [0, 1] * 3)
    >>> refit_concepts(ex, 2).concepts_.centroids_.shape[0], ex.concepts_.centroids_.shape[0]
    (2, 3)
    """
    from ..concepts import ConceptModel

    cm = getattr(explainer, "concepts_", None)
    if cm is None:
        raise ValueError("the explainer has no concepts (not fitted, or the 'logits' level)")
    new = ConceptModel(int(n_concepts), level=cm.level, per_class=cm.per_class,
                       positions_per_image=cm.positions_per_image, random_state=cm.random_state,
                       device=cm.device, kmeans_kwargs=cm.kmeans_kwargs)
    new.fit(explainer.model, None, level_features=cm.level_features_, sample=cm.sample_)
    twin = copy.copy(explainer)
    twin.n_concepts = int(n_concepts)
    twin.concepts_ = new
    return twin


def agreement(class_scores: torch.Tensor, head_classes: Sequence[int], logits: torch.Tensor) -> dict[str, float]:
    """How often the k-means head picks the network's class.

    Parameters
    ----------
    class_scores : torch.Tensor
        ``(N, C_k)`` the k-means head's class scores (columns: ``head_classes``).
    head_classes : sequence of int
        The network's class index of each column.
    logits : torch.Tensor
        ``(N, C)`` the network's logits on the same images.

    Returns
    -------
    dict
        ``top1``: share of images where the head's class is the network's
        top-1; ``among_known``: share where it is the network's best class
        among ``head_classes``; ``known``: share of images whose network top-1
        is one of ``head_classes``; ``n``: images.

    Example
    -------
    >>> import torch
    >>> a = agreement(torch.tensor([[1., 0.], [0., 1.]]), [3, 5], torch.tensor([[0, 0, 0, 2., 0, 1], [0, 9, 0, 2, 0, 1]]))
    >>> a["top1"], a["among_known"], a["known"]
    (0.5, 0.5, 0.5)
    """
    S = torch.as_tensor(class_scores).float().cpu()
    L = torch.as_tensor(logits).float().cpu()
    cols = torch.as_tensor(list(head_classes)).long()
    if S.shape[0] != L.shape[0] or S.shape[1] != len(cols):
        raise ValueError(f"class_scores {tuple(S.shape)} must be (N, len(head_classes)) with N = {L.shape[0]}")
    head = cols[S.argmax(1)]
    net_top = L.argmax(1)
    net_known = cols[L[:, cols].argmax(1)]
    return {"top1": float((head == net_top).float().mean()), "among_known": float((head == net_known).float().mean()),
            "known": float(torch.isin(net_top, cols).float().mean()), "n": int(S.shape[0])}


# ----------------------------------------------------------------------------- what the concepts are
_HUES = [(15, "red"), (45, "orange"), (70, "yellow"), (165, "green"), (200, "cyan"), (260, "blue"),
         (290, "purple"), (335, "magenta"), (360, "red")]


def colour_name(rgb: np.ndarray) -> str:
    """A plain name for an RGB colour in ``[0, 1]``: a hue when saturated, else black / dark grey / grey / light grey / white.

    Example
    -------
    >>> colour_name(np.array([0.1, 0.2, 0.8])), colour_name(np.array([0.05, 0.05, 0.05]))
    ('blue', 'black')
    """
    import colorsys

    r, g, b = (float(v) for v in np.clip(np.asarray(rgb, dtype=float), 0, 1))
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if s >= 0.25 and v >= 0.2:
        deg = 360 * h
        name = next(n for lim, n in _HUES if deg < lim)
        return ("dark " + name) if v < 0.45 else name
    return "black" if v < 0.15 else "dark grey" if v < 0.35 else "grey" if v < 0.65 else \
        "light grey" if v < 0.85 else "white"


def _pixel_stats(images: torch.Tensor, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import torch.nn.functional as F

    x = torch.as_tensor(images).float().cpu()
    grey = x.mean(1, keepdim=True)
    mean = F.avg_pool2d(grey, 5, 1, 2, count_include_pad=False)
    sq = F.avg_pool2d(grey**2, 5, 1, 2, count_include_pad=False)
    texture = (sq - mean**2).clamp_min(0).sqrt()[:, 0]                    # local grey-level std, 5x5 px
    mx, mn = x.max(1).values, x.min(1).values
    sat = torch.where(mx > 0, (mx - mn) / mx.clamp_min(1e-8), torch.zeros_like(mx))
    sl = (slice(None), slice(None, None, step), slice(None, None, step))
    rgb = x.permute(0, 2, 3, 1)[sl].reshape(-1, 3).numpy()
    return rgb, sat[sl].reshape(-1).numpy(), texture[sl].reshape(-1).numpy()


def concept_content(images: torch.Tensor, concepts: torch.Tensor, n_concepts: int, *, step: int = 2):
    """What each concept covers on real pixels: share, mean colour, saturation, texture, and a computed name.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` in ``[0, 1]``.
    concepts : torch.Tensor
        ``(N, H, W)`` int concept of every pixel (``Explanation.concepts``).
    n_concepts : int
        ``K'``.
    step : int
        Every ``step``-th pixel in each direction is counted.

    Returns
    -------
    pandas.DataFrame
        One row per concept: ``concept``, ``share`` (of the pixels), ``rgb``
        (mean colour, a tuple), ``colour`` (:func:`colour_name` of it),
        ``saturation`` (mean HSV saturation), ``texture`` (mean 5x5 grey-level
        standard deviation), ``name`` (e.g. ``"orange, textured"``; texture
        called smooth / textured against the median over the concepts,
        ``"(absent)"`` for a concept no pixel takes).

    Example
    -------
    >>> import torch
    >>> x = torch.zeros(1, 3, 8, 8); x[0, 0, :, 4:] = 1.0
    >>> c = torch.zeros(1, 8, 8, dtype=torch.long); c[0, :, 4:] = 1
    >>> concept_content(x, c, 2, step=1)["colour"].tolist()
    ['black', 'red']
    """
    import pandas as pd

    x = torch.as_tensor(images)
    lab = torch.as_tensor(concepts).long().cpu()
    if x.ndim != 4 or lab.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"concepts must be (N, H, W) = {(x.shape[0], *x.shape[-2:])}, got {tuple(lab.shape)}")
    rgb, sat, tex = _pixel_stats(x, step)
    c = lab[:, ::step, ::step].reshape(-1).numpy()
    rows = []
    for k in range(int(n_concepts)):
        m = c == k
        if not m.any():
            rows.append({"concept": k, "share": 0.0, "rgb": (np.nan,) * 3, "colour": "", "saturation": np.nan,
                         "texture": np.nan})
            continue
        mean = rgb[m].mean(0)
        rows.append({"concept": k, "share": float(m.mean()), "rgb": tuple(float(v) for v in mean),
                     "colour": colour_name(mean), "saturation": float(sat[m].mean()), "texture": float(tex[m].mean())})
    t = pd.DataFrame(rows)
    med = float(np.nanmedian(t["texture"])) if t["texture"].notna().any() else 0.0
    t["name"] = [("(absent)" if r.share == 0 else f"{r.colour}, {'textured' if r.texture > med else 'smooth'}")
                 for r in t.itertuples()]
    return t


def colour_explains_concepts(images: torch.Tensor, concepts: torch.Tensor, n_concepts: int, *,
                             step: int = 4, neighbours: int = 15, random_state: int = 0) -> dict[str, Any]:
    """How much of the concept assignment a pixel's colour (and local texture) alone recovers.

    A k-nearest-neighbour rule predicts each sampled pixel's concept from its
    colour (RGB) alone, and from its colour and its local texture (5x5
    grey-level standard deviation), with 3-fold cross-validation over the
    pixels; both are compared with always answering the largest concept. The
    share of the colour variance that the concepts explain (between-concept
    over total sum of squares, RGB) is the reverse reading.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` in ``[0, 1]``.
    concepts : torch.Tensor
        ``(N, H, W)`` int concept of every pixel.
    n_concepts : int
        ``K'``.
    step : int
        Every ``step``-th pixel in each direction is used.
    neighbours : int
        ``k`` of the nearest-neighbour rule.
    random_state : int
        Seed of the folds.

    Returns
    -------
    dict
        ``colour``: cross-validated accuracy from colour; ``colour_texture``:
        from colour and texture; ``majority``: share of the largest concept;
        ``recall``: ``(K',)`` per-concept share of its pixels the colour rule
        gets right (``nan`` when absent); ``eta2``: share of the colour
        variance explained by the concepts.

    Example
    -------
    >>> import torch
    >>> x = torch.zeros(1, 3, 16, 16); x[0, 0, :, 8:] = 1.0
    >>> c = torch.zeros(1, 16, 16, dtype=torch.long); c[0, :, 8:] = 1
    >>> r = colour_explains_concepts(x, c, 2, step=1, neighbours=3)
    >>> r["colour"], r["majority"], round(r["eta2"], 3)
    (1.0, 0.5, 1.0)
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    lab = torch.as_tensor(concepts).long().cpu()
    rgb, _, tex = _pixel_stats(torch.as_tensor(images), step)
    c = lab[:, ::step, ::step].reshape(-1).numpy()
    present, counts = np.unique(c, return_counts=True)
    majority = float(counts.max() / len(c))
    out: dict[str, Any] = {"majority": majority, "recall": np.full(int(n_concepts), np.nan)}
    feats = {"colour": rgb, "colour_texture": np.column_stack([rgb, tex / max(float(tex.std()), 1e-8) * rgb.std()])}
    n_folds = int(min(3, counts.min())) if len(present) > 1 else 0
    for key, F_ in feats.items():
        if n_folds < 2:
            out[key] = 1.0 if len(present) == 1 else majority
            continue
        cv = StratifiedKFold(n_folds, shuffle=True, random_state=random_state)
        knn = KNeighborsClassifier(n_neighbors=min(int(neighbours), len(c) - len(c) // n_folds - 1))
        guess = cross_val_predict(knn, F_, c, cv=cv)
        out[key] = float((guess == c).mean())
        if key == "colour":
            for k in present:
                out["recall"][k] = float((guess[c == k] == k).mean())
    total = float(((rgb - rgb.mean(0)) ** 2).sum())
    within = float(sum(((rgb[c == k] - rgb[c == k].mean(0)) ** 2).sum() for k in present))
    out["eta2"] = 1.0 - within / total if total > 0 else float("nan")
    return out


def figure_legend(fig: Any, names: Sequence[str], colors: Sequence[Any], *, title: str | None = None,
                  ncol: int | None = None) -> Any:
    """One legend under a figure: a colour patch and a name per entry (e.g. each concept by its content).

    Example
    -------
    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> fig = plt.figure(); leg = figure_legend(fig, ["a", "b"], ["red", "blue"], title="concepts")
    >>> [t.get_text() for t in leg.get_texts()]
    ['a', 'b']
    """
    from matplotlib.patches import Patch

    if len(names) != len(colors):
        raise ValueError(f"{len(names)} names for {len(colors)} colours")
    handles = [Patch(facecolor=c, edgecolor="none", label=str(n)) for n, c in zip(names, colors)]
    return fig.legend(handles=handles, loc="outside lower center", ncol=ncol or min(len(names), 4), fontsize=8,
                      title=title, title_fontsize=8, frameon=False)
