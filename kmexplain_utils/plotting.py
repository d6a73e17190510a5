"""The book's look: one style, fixed palettes, and the basic image figures.

Every helper draws on ``ax`` (or on a new figure when ``ax`` is ``None``),
returns the :class:`matplotlib.figure.Figure`, never calls ``plt.show()``
and never changes its input tensors. The only global change is
:func:`set_book_style`, which :func:`kmexplain_utils.chapters.notebook.setup_notebook`
calls once per chapter.

Example
-------
>>> import torch
>>> from kmexplain_utils.plotting import show_label_map
>>> fig = show_label_map(torch.rand(3, 16, 16), torch.randint(0, 3, (16, 16)))
>>> len(fig.axes)
1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ._figures import new_axes

__all__ = [
    "BACKGROUND_GREY",
    "DIVERGING_CMAP",
    "FIGURE_WIDTH",
    "HEATMAP_CMAP",
    "PART_CMAP",  # noqa: F822 (built lazily by __getattr__)
    "CONCEPT_PALETTE",
    "SEQUENTIAL_CMAP",
    "concept_colors",
    "concept_legend",
    "concept_attribute_shares",
    "concept_names",
    "drawn_map",
    "method_colors",
    "image_grid",
    "image_heatmap_grid",
    "label_cmap",
    "method_label",
    "nearest_images_grid",
    "part_colors",
    "plot_accuracy_vs_k",
    "plot_block_centres",
    "plot_block_grids",
    "plot_block_scaling",
    "plot_concept_contributions",
    "plot_concept_patches",
    "plot_curves",
    "plot_dataset_gallery",
    "plot_explanations",
    "plot_level_maps",
    "plot_norm_strip",
    "plot_qualitative",
    "plot_sweeps",
    "plot_tradeoff",
    "plot_training_history",
    "set_book_style",
    "short_label",
    "show_heatmap",
    "show_image",
    "show_label_map",
    "to_numpy_image",
]

FIGURE_WIDTH = 9.0  # inches: the width of the book's text column
BACKGROUND_GREY = "#bdbdbd"
# qualitative palette for part labels 1, 2, ... (label 0 is always BACKGROUND_GREY):
# Okabe-Ito colours first (colour-blind safe), then Tableau-like extras
_QUALITATIVE = [
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # green
    "#F0E442",  # yellow
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#CC79A7",  # purple
    "#000000",  # black
    "#8c564b",  # brown
    "#17becf",  # cyan
    "#bcbd22",  # olive
    "#7f7f7f",  # grey
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
]
# Concepts have a palette of their own, so that a concept is never drawn in a part's colour
# (a concept map beside a part map must not suggest "concept 2 = part 2"): Paul Tol's "muted"
# scheme (colour-blind safe), then a violet chosen to stay apart from all of them and from the
# part colours under the three simulated colour-vision deficiencies (tests/test_palettes.py).
_CONCEPTS = [
    "#CC6677",  # rose
    "#332288",  # indigo
    "#DDCC77",  # sand
    "#117733",  # green
    "#88CCEE",  # cyan
    "#882255",  # wine
    "#44AA99",  # teal
    "#999933",  # olive
    "#AA4499",  # purple
    "#A578FF",  # violet
]
# Methods and levels (the lines and points of the evaluation's plots, matplotlib's colour cycle
# after set_book_style): Okabe-Ito, the dark colours first, yellow (hard to see as a line) last.
_METHODS = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
]
# PART_CMAP (a ListedColormap: grey, then the palette) is built on first access, see __getattr__
#: The one sequential colour map of the book, for unsigned maps (values >= 0, or ranked).
HEATMAP_CMAP = "inferno"
#: Alias of :data:`HEATMAP_CMAP`: the name says what it is for.
SEQUENTIAL_CMAP = HEATMAP_CMAP
#: The one diverging colour map of the book, for signed maps; always centred at 0
#: (limits ``-m, m``): red for, blue against.
DIVERGING_CMAP = "RdBu_r"
#: Colours of concepts 0, 1, ... (public name of the concept palette above; tune ``_CONCEPTS``).
CONCEPT_PALETTE = _CONCEPTS


def __getattr__(name: str) -> Any:
    if name == "PART_CMAP":
        # built lazily so that importing this module does not import matplotlib
        return label_cmap(part_colors(len(_QUALITATIVE) + 1))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set_book_style() -> None:
    """Apply the book's matplotlib / seaborn style (the only global change the package makes)."""
    import matplotlib as mpl
    import seaborn as sns
    from cycler import cycler

    sns.set_theme(context="notebook", style="white", font_scale=0.95)
    mpl.rcParams.update(
        {
            # a colour-blind safe cycle for the lines of methods and levels (see method_colors)
            "axes.prop_cycle": cycler(color=list(_METHODS)),
            # white paper, also in the site's dark mode (book/_static/kmex.css keeps it white)
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "savefig.transparent": False,
            "figure.figsize": (FIGURE_WIDTH, FIGURE_WIDTH * 0.45),
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "figure.constrained_layout.use": True,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "image.interpolation": "nearest",
            "image.cmap": HEATMAP_CMAP,
            "legend.frameon": False,
            "legend.fontsize": 8,
        }
    )


def part_colors(n: int) -> list[tuple[float, float, float]]:
    """RGB colours of part labels ``0 .. n-1``: background grey, then a fixed qualitative palette.

    The colours of labels ``1, 2, ...`` never depend on ``n``, so a part has the
    same colour in every figure of the book. Beyond 16 labels, colours come
    from ``tab20`` (those not used yet) and then repeat.
    """
    from matplotlib.colors import to_rgb

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return []
    out = [to_rgb(BACKGROUND_GREY)]
    extra = _extra_colors()
    for i in range(n - 1):
        out.append(to_rgb(_QUALITATIVE[i]) if i < len(_QUALITATIVE) else extra[(i - len(_QUALITATIVE)) % len(extra)])
    return out


def _extra_colors() -> list[tuple[float, float, float]]:
    import matplotlib
    from matplotlib.colors import to_rgb

    taken = {tuple(round(v, 4) for v in to_rgb(c)) for c in [*_QUALITATIVE, *_CONCEPTS, BACKGROUND_GREY]}
    out = []
    for c in matplotlib.colormaps["tab20"].colors:  # type: ignore[attr-defined]
        rgb = tuple(float(v) for v in c[:3])
        if tuple(round(v, 4) for v in rgb) not in taken:
            out.append(rgb)
    return out


def concept_colors(k: int) -> list[tuple[float, float, float]]:
    """RGB colours of concepts ``0 .. k-1`` (no background: concept 0 is a real concept).

    A palette of its own (Paul Tol's "muted" colours, then a violet), never
    one of the part colours, so that a concept map never suggests that a concept
    is a part; stable in ``k`` (concept ``j`` keeps its colour when ``k``
    grows). The first ten stay distinguishable under simulated deuteranopia,
    protanopia and tritanopia; beyond ten, colours come from ``tab20`` (those
    not used by parts or concepts) and then repeat.

    Examples
    --------
    >>> concept_colors(2)
    [(0.8, 0.4, 0.4666666666666667), (0.2, 0.13333333333333333, 0.5333333333333333)]
    >>> set(concept_colors(10)) & set(part_colors(9))
    set()
    """
    from matplotlib.colors import to_rgb

    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    extra = _extra_colors()
    return [to_rgb(_CONCEPTS[j]) if j < len(_CONCEPTS) else extra[(j - len(_CONCEPTS)) % len(extra)]
            for j in range(k)]


def method_colors(n: int) -> list[tuple[float, float, float]]:
    """RGB colours of ``n`` methods or levels (lines and points): Okabe-Ito, dark colours first.

    The same colours as matplotlib's colour cycle after :func:`set_book_style`; the
    first eight stay distinguishable under simulated colour-vision deficiencies,
    then they repeat (tell such lines apart by their line style too).

    Examples
    --------
    >>> method_colors(2)
    [(0.0, 0.4470588235294118, 0.6980392156862745), (0.8352941176470589, 0.3686274509803922, 0.0)]
    """
    from matplotlib.colors import to_rgb

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [to_rgb(_METHODS[i % len(_METHODS)]) for i in range(n)]


def concept_names(
    concept_maps: torch.Tensor,
    parts: torch.Tensor,
    part_names: Sequence[str],
    n_concepts: int,
    *,
    geometry: Any = None,
    prefix: str = "C",
    runner_up: float = 0.2,
) -> list[str]:
    """Name every concept by the part it covers most, with the share: ``"C3: body 71 %"``.

    Each concept map is resampled to its image's pixels (each pixel takes the
    concept of the position whose registered centre is nearest, as the figures
    draw it); a concept's name is the part label held by most of its pixels,
    over all the given images, and the share of its pixels that part holds.

    Parameters
    ----------
    concept_maps : (N, h, w) int tensor
        Concept of every feature-map position (or pixel), ``0 .. n_concepts-1``.
    parts : (N, H, W) int tensor
        Ground-truth part labels of the same images (0 = background).
    part_names : list of str
        Name of every part label.
    n_concepts : int
        Number of concepts; a concept absent from these images is named
        ``"C<k>: absent"``.
    geometry : GridGeometry, optional
        Where the positions sit on the image; default stride ``H / h``, offset 0.
    prefix : str, default "C"
    runner_up : float, default 0.2
        The second part is named too when it holds at least this share of the concept's
        pixels (``"C5: background 52 %, head 31 %"``: a concept of heads whose cells are
        mostly background).

    Returns
    -------
    list of str
        One name per concept.
    """
    from .resample import infer_geometry, resample_labels

    km = torch.as_tensor(concept_maps).detach().cpu().long()
    pt = torch.as_tensor(parts).detach().cpu().long()
    if km.ndim != 3 or pt.ndim != 3 or len(km) != len(pt):
        raise ValueError(f"concept_maps (N, h, w) and parts (N, H, W) must hold the same images, got "
                         f"{tuple(km.shape)} and {tuple(pt.shape)}")
    if int(pt.max()) >= len(part_names):
        raise ValueError(f"parts go up to label {int(pt.max())} but part_names has {len(part_names)} names")
    if int(km.max()) >= n_concepts or int(km.min()) < 0:
        raise ValueError(f"concept labels must lie in 0 .. {n_concepts - 1}, got {int(km.min())} .. {int(km.max())}")
    size = tuple(pt.shape[-2:])
    if tuple(km.shape[-2:]) != size:
        geo = infer_geometry(tuple(km.shape[-2:]), size) if geometry is None else geometry
        km = torch.stack([resample_labels(m, geo, size) for m in km]).long()
    joint = torch.zeros(n_concepts, len(part_names), dtype=torch.long)
    joint.index_put_((km.flatten(), pt.flatten()), torch.ones(km.numel(), dtype=torch.long), accumulate=True)
    names = []
    for k in range(n_concepts):
        total = int(joint[k].sum())
        if total == 0:
            names.append(f"{prefix}{k}: absent")
            continue
        order = torch.argsort(joint[k], descending=True).tolist()
        top, second = order[0], order[1] if len(order) > 1 else None
        name = f"{prefix}{k}: {part_names[top]} {100 * int(joint[k, top]) / total:.0f} %"
        if second is not None and int(joint[k, second]) >= runner_up * total:
            name += f", {part_names[second]} {100 * int(joint[k, second]) / total:.0f} %"
        names.append(name)
    return names


def concept_attribute_shares(
    concept_maps: torch.Tensor,
    parts: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    part_names: Sequence[str],
    n_concepts: int,
    attributes: Callable[[int], dict[str, str]],
    *,
    geometry: Any = None,
    min_share: float = 0.2,
) -> dict[int, tuple[str, str, float]]:
    """What a concept's object pixels look like: the class attribute most of them carry.

    A concept named ``"C5: background 52 %, head 37 %"`` covers heads, but which? Each
    image's class fixes how its parts look (``attributes(label)``, e.g. ``{"head": "blue",
    "marking": "striped"}``); over the pixels of concept ``k`` that lie on a part with an
    attribute, the value held by most of them, with its share, says it ("96 % blue heads").

    Parameters
    ----------
    concept_maps : (N, h, w) int tensor
        Concept of every position (or pixel), ``0 .. n_concepts-1``; resampled to the
        pixels as :func:`concept_names` does.
    parts : (N, H, W) int tensor
        Ground-truth part labels (0 = background).
    labels : (N,) int tensor or sequence
        Class of every image.
    part_names : list of str
        Name of every part label; the parts named in ``attributes(label)`` are measured.
    n_concepts : int
    attributes : callable
        ``label -> {part name: attribute value}``, e.g.
        :func:`kmexplain_utils.data.parts.class_attributes`.
    geometry : GridGeometry, optional
        Where the positions sit on the image; default stride ``H / h``, offset 0.
    min_share : float, default 0.2
        A concept is described by the attributed part that holds most of its pixels, and only
        when that part holds at least this share of them.

    Returns
    -------
    dict of int -> (str, str, float)
        ``{k: (part, value, share)}`` for the concepts with such a part: ``share`` of that
        part's pixels in concept ``k`` come from images whose ``part`` is ``value``.
    """
    from .resample import infer_geometry, resample_labels

    km = torch.as_tensor(concept_maps).detach().cpu().long()
    pt = torch.as_tensor(parts).detach().cpu().long()
    lab = [int(v) for v in torch.as_tensor(labels).detach().cpu().reshape(-1).tolist()]
    if km.ndim != 3 or pt.ndim != 3 or not len(km) == len(pt) == len(lab):
        raise ValueError(f"concept_maps (N, h, w), parts (N, H, W) and labels (N,) must hold the same images, "
                         f"got {tuple(km.shape)}, {tuple(pt.shape)} and {len(lab)} labels")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must lie in (0, 1], got {min_share}")
    size = tuple(pt.shape[-2:])
    if tuple(km.shape[-2:]) != size:
        geo = infer_geometry(tuple(km.shape[-2:]), size) if geometry is None else geometry
        km = torch.stack([resample_labels(m, geo, size) for m in km]).long()
    out: dict[int, tuple[str, str, float]] = {}
    attrs = [attributes(v) for v in lab]
    for k in range(n_concepts):
        in_k = km == k
        total = int(in_k.sum())
        if total == 0:
            continue
        counts = {name: int((in_k & (pt == j)).sum()) for j, name in enumerate(part_names)
                  if name in attrs[0]}
        if not counts:
            continue
        part = max(counts, key=counts.get)
        if counts[part] < min_share * total:
            continue
        j = list(part_names).index(part)
        per_image = (in_k & (pt == j)).flatten(1).sum(1).tolist()  # pixels of the part, per image
        by_value: dict[str, int] = {}
        for a, n in zip(attrs, per_image):
            by_value[a[part]] = by_value.get(a[part], 0) + int(n)
        value = max(by_value, key=by_value.get)
        out[k] = (part, value, by_value[value] / counts[part])
    return out


def concept_legend(fig_or_ax: Any, names: Sequence[str], colors: Sequence[Any] | None = None, *,
                   title: str = "concepts (majority part)", **kwargs: Any):
    """Add a legend naming every concept (e.g. from :func:`concept_names`) in its colour.

    Parameters
    ----------
    fig_or_ax : Figure or Axes
        Where the legend goes (a figure legend sits outside, on the right).
    names : list of str
        One name per concept, in order.
    colors : list of colours, optional
        Default :func:`concept_colors` ``(len(names))``.
    title : str
    **kwargs
        Passed to ``legend``.

    Returns
    -------
    matplotlib.legend.Legend
    """
    from matplotlib.patches import Patch

    colors = concept_colors(len(names)) if colors is None else list(colors)
    if len(colors) < len(names):
        raise ValueError(f"{len(names)} concept names but {len(colors)} colours")
    handles = [Patch(facecolor=c, edgecolor="0.3", linewidth=0.5, label=str(n)) for n, c in zip(names, colors)]
    if hasattr(fig_or_ax, "add_axes"):  # a figure
        kwargs.setdefault("loc", "outside right center")
    else:
        kwargs.setdefault("loc", "upper left")
        kwargs.setdefault("bbox_to_anchor", (1.01, 1.0))
    kwargs.setdefault("fontsize", 8)
    return fig_or_ax.legend(handles=handles, title=title, **kwargs)


def drawn_map(
    heat: torch.Tensor | np.ndarray,
    size: tuple[int, int],
    *,
    interpolation: str = "nearest",
    geometry: Any = None,
) -> torch.Tensor:
    """A coarse ``(h, w)`` map at image size ``(H, W)``, exactly as :func:`show_heatmap` draws it.

    Positions sit at their registered centres, so border positions can cover
    more (or fewer) pixels than inner ones: the mean of the drawn map is in
    general **not** the mean of the grid (the score). Use it to say by how much.

    Parameters
    ----------
    heat : (h, w) tensor or array
    size : (H, W)
    interpolation : {"nearest", "bilinear"}, default "nearest"
    geometry : GridGeometry, optional
        Default stride ``H / h``, offset 0.

    Returns
    -------
    torch.Tensor
        ``(H, W)`` float64.
    """
    from .resample import infer_geometry, resample_labels, resample_map

    hm = torch.as_tensor(_to_numpy_map(heat, "heat").astype(np.float64))
    size = (int(size[0]), int(size[1]))
    if tuple(hm.shape) == size:
        return hm
    if interpolation not in {"nearest", "bilinear"}:
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
    geo = infer_geometry(tuple(hm.shape), size) if geometry is None else geometry
    resample = resample_labels if interpolation == "nearest" else resample_map
    return resample(hm, geo, size).double()


def label_cmap(colors: Sequence[Any]):
    """A :class:`matplotlib.colors.ListedColormap` for integer labels ``0 .. len(colors)-1``.

    ``PART_CMAP`` is ``label_cmap(part_colors(17))``; draw a label map with
    ``ax.imshow(labels, cmap=PART_CMAP, vmin=0, vmax=PART_CMAP.N - 1, interpolation="nearest")``.
    """
    from matplotlib.colors import ListedColormap

    return ListedColormap(list(colors), name="book_parts")


def to_numpy_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image ``(3, H, W)`` (tensor or array, values in [0, 1]) as an ``(H, W, 3)`` float array.

    Channels-last ``(H, W, 3)`` and grey ``(H, W)`` / ``(1, H, W)`` inputs are
    accepted too. The input is never modified (a copy is returned).
    """
    if isinstance(image, torch.Tensor):
        arr = image.detach().to("cpu", torch.float32).numpy().copy()
    else:
        arr = np.array(image, dtype=np.float32, copy=True)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # ambiguous tiny image: assume (C, H, W) like the rest of the book
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"image must have shape (3, H, W) (or (H, W, 3) / (H, W)); got {tuple(np.shape(image))}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.clip(arr, 0.0, 1.0)


def _grey_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """The luminance of an image as a grey RGB image, to draw marks and labels over.

    On images that use every palette colour, a coloured label or marker drawn
    over the colour image can vanish into a part of the same hue; over the
    luminance copy, every colour on top is the only colour.

    Parameters
    ----------
    image : (3, H, W) or (H, W, 3) tensor/array in [0, 1], or (H, W)

    Returns
    -------
    np.ndarray
        (H, W, 3) float array, the three channels equal: ``0.299 R + 0.587 G + 0.114 B``
        (ITU-R BT.601 luma).
    """
    img = to_numpy_image(image)
    if img.ndim == 2:
        lum = img
    else:
        lum = img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=img.dtype)
    return np.repeat(np.clip(lum, 0.0, 1.0)[..., None], 3, axis=-1)


def _to_numpy_map(m: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = m.detach().cpu().numpy().copy() if isinstance(m, torch.Tensor) else np.array(m, copy=True)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W), got {tuple(arr.shape)}")
    return arr


def _check_map_batch(images: Any, maps: Any, label: str) -> int:
    """``N = len(images)``, after checking that every map of ``maps`` is ``(N, h, w)`` (``label`` names one)."""
    n = len(images)
    for name, m in maps.items():
        if m.ndim != 3 or len(m) != n:
            raise ValueError(f"{label.format(name)} must have shape (N, h, w) with N = {n}, got {tuple(m.shape)}")
    return n


def _clean(ax: Any, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)


def show_image(image: torch.Tensor | np.ndarray, ax: Any = None, title: str | None = None):
    """Show one RGB image.

    Parameters
    ----------
    image : (3, H, W) tensor or array, values in [0, 1]
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made when ``None``.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = new_axes(ax)
    ax.imshow(to_numpy_image(image), interpolation="nearest")
    _clean(ax, title)
    return fig


def image_grid(
    images: torch.Tensor | np.ndarray | Sequence[Any],
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    axes: Any = None,
    *,
    size: float = 1.3,
):
    """Show images ``(N, 3, H, W)`` in a grid.

    Parameters
    ----------
    images : (N, 3, H, W) tensor/array or a list of (3, H, W) images
    titles : list of str, optional
        One per image.
    ncols : int, default 8
        Columns of the grid (fewer when ``N < ncols``).
    axes : array of Axes, optional
        At least ``N`` axes to draw on; a new figure is made when ``None``.
        Unused axes are switched off.
    size : float
        Inches per image when a new figure is made.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    if axes is None:
        ncols = max(1, min(int(ncols), n))
        nrows = max(1, -(-n // ncols))
        _fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(size * ncols, size * nrows + 0.3 * (titles is not None)),
            squeeze=False,
            layout="constrained",
        )
    axes_flat = np.asarray(axes, dtype=object).reshape(-1)
    if len(axes_flat) < n:
        raise ValueError(f"axes holds {len(axes_flat)} axes for {n} images")
    for i, ax in enumerate(axes_flat):
        if i < n:
            show_image(images[i], ax=ax, title=None if titles is None else titles[i])
        else:
            ax.axis("off")
    return axes_flat[0].figure


def show_label_map(
    image: torch.Tensor | np.ndarray | None,
    labels: torch.Tensor | np.ndarray,
    ax: Any = None,
    alpha: float = 0.5,
    colors: Sequence[Any] | None = None,
    legend_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    background: bool = True,
    geometry: Any = None,
    grey: bool = True,
):
    """Overlay an integer label map (part map or concept map) on an image.

    Parameters
    ----------
    image : (3, H, W) tensor/array in [0, 1], or None
        Shown underneath; ``None`` shows the labels alone.
    labels : (h, w) int tensor/array
        Label of every pixel, or of every feature-map position: a coarser map
        is resampled to the image, each pixel taking the label of the position
        whose registered centre is nearest (:mod:`kmexplain_utils.resample`).
    ax : Axes, optional
    alpha : float, default 0.5
        Opacity of the labels over the image.
    colors : list of colours, optional
        Colour of each label value; default :func:`part_colors` (label 0 grey)
        when ``background`` is True, else :func:`concept_colors`.
    legend_names : list of str, optional
        Name of each label value; only the values present get a legend entry.
    title : str, optional
    background : bool, default True
        Whether label 0 means background (drawn fully transparent over the
        image) as in part maps; set False for concept maps, where 0 is a
        concept.
    geometry : GridGeometry, optional
        Where a coarse map's positions sit on the image; default stride
        ``H / h``, offset 0 (symmetric padding).
    grey : bool, default True
        Draw the image underneath as its luminance (BT.601 luma), so that
        the only colours in the panel are the labels' and match the legend even
        on images painted in the same palette; False keeps the image's colours.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.patches import Patch

    lab = _to_numpy_map(labels, "labels").astype(np.int64)
    if lab.size and lab.min() < 0:
        raise ValueError(f"labels must be non-negative integers, got minimum {lab.min()}")
    n_labels = int(lab.max()) + 1 if lab.size else 1
    if colors is None:
        n_col = max(n_labels, len(legend_names) if legend_names is not None else 0)
        colors = part_colors(n_col) if background else concept_colors(n_col)
    if len(colors) < n_labels:
        raise ValueError(f"colors has {len(colors)} entries but labels go up to {n_labels - 1}")
    from matplotlib.colors import to_rgba

    rgba = np.array([to_rgba(c) for c in colors], dtype=np.float32)
    fig, ax = new_axes(ax)
    if image is not None:
        img = to_numpy_image(image)
        h, w = img.shape[:2]
        if lab.shape != (h, w):
            from .resample import infer_geometry, resample_labels

            geo = infer_geometry(lab.shape, (h, w)) if geometry is None else geometry
            lab = resample_labels(torch.from_numpy(lab), geo, (h, w)).numpy()
        ax.imshow(_grey_image(img) if grey else img, interpolation="nearest")
        over = rgba[lab].copy()
        over[..., 3] = alpha
        if background:
            over[lab == 0, 3] = 0.0
        ax.imshow(over, interpolation="nearest")
    else:
        ax.imshow(rgba[lab], interpolation="nearest")
    _clean(ax, title)
    if legend_names is not None:
        present = np.unique(lab)
        handles = [
            Patch(facecolor=rgba[v], edgecolor="none", label=str(legend_names[v]))
            for v in present
            if v < len(legend_names)
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def show_heatmap(
    image: torch.Tensor | np.ndarray | None,
    heat: torch.Tensor | np.ndarray,
    ax: Any = None,
    cmap: str | None = None,
    diverging: bool = False,
    *,
    alpha: float = 0.6,
    title: str | None = None,
    colorbar: bool = False,
    vmax: float | None = None,
    interpolation: str = "nearest",
    geometry: Any = None,
):
    """Overlay a heat map (attribution, CAM, score map) on an image.

    Parameters
    ----------
    image : (3, H, W) tensor/array in [0, 1], or None
        Shown underneath in grey so that the heat colours stay readable.
    heat : (h, w) float tensor/array
        The map; a coarser map is stretched over the image (bilinear).
    ax : Axes, optional
    cmap : str, optional
        Default ``"inferno"``, or ``"RdBu_r"`` when ``diverging``.
    diverging : bool, default False
        Centre the colour map at 0 (limits ``-m, m`` with ``m = max |heat|``):
        positive evidence red, negative blue.
    alpha : float, default 0.6
        Opacity of the heat over the image.
    title : str, optional
    colorbar : bool, default False
        Add a colour bar.
    vmax : float, optional
        Upper limit (and ``-vmax`` lower limit when diverging).
    interpolation : {"nearest", "bilinear"}, default "nearest"
        How a coarse map is resampled to the image at its registered
        coordinates: each pixel taking the nearest position (keeps the
        positions visible; the book's default), or bilinear between position
        centres. Either way the mean of the drawn map is not exactly the mean
        of the grid (see :func:`drawn_map`).
    geometry : GridGeometry, optional
        Where the map's positions sit on the image; default stride ``H / h``,
        offset 0 (symmetric padding).

    Returns
    -------
    matplotlib.figure.Figure
    """
    hm = _to_numpy_map(heat, "heat").astype(np.float64)
    if not np.isfinite(hm).all():
        raise ValueError("heat contains NaN or infinite values")
    cmap = cmap or (DIVERGING_CMAP if diverging else HEATMAP_CMAP)
    fig, ax = new_axes(ax)
    extent = None
    if image is not None:
        img = to_numpy_image(image)
        grey = img.mean(axis=-1)
        h, w = grey.shape
        extent = (-0.5, w - 0.5, h - 0.5, -0.5)
        ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if hm.shape != (h, w):
            from .resample import infer_geometry, resample_labels, resample_map

            geo = infer_geometry(hm.shape, (h, w)) if geometry is None else geometry
            resample = resample_labels if interpolation == "nearest" else resample_map
            hm = resample(torch.from_numpy(hm), geo, (h, w)).numpy()
        interpolation = "nearest"
    if diverging:
        m = vmax if vmax is not None else float(np.abs(hm).max()) or 1.0
        vmin, vmax_ = -m, m
    else:
        vmin, vmax_ = float(hm.min()), (vmax if vmax is not None else float(hm.max()))
        if vmax_ <= vmin:
            vmax_ = vmin + 1.0
    im = ax.imshow(
        hm,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax_,
        alpha=alpha if image is not None else 1.0,
        interpolation=interpolation,
        extent=extent,
    )
    _clean(ax, title)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_level_maps(
    images: torch.Tensor,
    parts: torch.Tensor,
    part_names: Sequence[str],
    maps: dict[str, torch.Tensor],
    n_concepts: int,
    *,
    concept_names: dict[str, Sequence[str]] | None = None,
    col_labels: Sequence[str] | None = None,
    size: float = 2.0,
    title: str | None = None,
):
    """Concept maps of several levels, one row per level, one column per image, named concepts.

    The first row is the ground-truth parts over each image; every other row is one level's
    concept maps drawn in the concept colours *alone* (no image underneath, so no image colour
    shows through and a concept's colour is exactly its legend's). Each map is drawn at the
    image's size with its positions at their *registered* centres, like every other label-map
    figure: pixel ``u`` takes the label of the position whose centre ``s i`` (stride
    ``s = H / h``, offset 0, :func:`~kmexplain_utils.resample.infer_geometry`) is nearest
    (:func:`~kmexplain_utils.resample.resample_labels`). On a 4 x 4 grid over a 64 px image the
    first column covers 8 px, the inner ones 16 px and the last 24 px -- not four equal 16 px
    cells, which would shift every map by ``(s - 1) / 2`` px (7.5 px here). Right
    of every row, the legend of that level's concepts (concepts of different levels are
    different concepts: the same colour in two rows means nothing).

    Parameters
    ----------
    images : (N, 3, H, W) tensor in [0, 1]
    parts : (N, H, W) int tensor
    part_names : list of str
    maps : dict of str -> (N, h, w) int tensor
        Concept maps per level (row title = key), each on its level's grid; resampled to the
        images' ``(H, W)`` as described above (a map already ``(H, W)`` is drawn as is).
    n_concepts : int
        Concepts per level (fixes the colours).
    concept_names : dict of str -> list of str, optional
        Names of each level's concepts (e.g. :func:`concept_names`); default "C<k>".
    col_labels : list of str, optional
        Title of each column (e.g. the true class).
    size : float
        Inches per panel (at most three columns keep panels >= 160 px on the page).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .resample import infer_geometry, resample_labels

    n = _check_map_batch(images, maps, "maps[{!r}]")
    if col_labels is not None and len(col_labels) != n:
        raise ValueError(f"col_labels must have one entry per image ({n}), got {len(col_labels)}")
    size_hw = tuple(int(v) for v in to_numpy_image(images[0]).shape[:2])
    # every level at the image's size, each position at its registered centre s * i (not the cell centre)
    drawn = {name: resample_labels(torch.as_tensor(m).long().cpu(),
                                   infer_geometry(tuple(m.shape[-2:]), size_hw), size_hw)
             for name, m in maps.items()}
    rows = ["parts", *maps]
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n + 2.2, size * len(rows) + 0.4),
                             squeeze=False, layout="constrained")
    p_colors = part_colors(len(part_names))
    c_colors = concept_colors(n_concepts)
    for j in range(n):
        show_label_map(images[j], parts[j], ax=axes[0, j], colors=p_colors, alpha=0.6)
        if col_labels is not None:
            axes[0, j].set_title(col_labels[j], fontsize=9)
        for r, (name, m) in enumerate(drawn.items(), start=1):
            show_label_map(None, m[j], ax=axes[r, j], colors=c_colors, background=False)
    for r, name in enumerate(rows):
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    handles = [Patch(facecolor=p_colors[v], label=str(part_names[v])) for v in range(1, len(part_names))]
    axes[0, -1].legend(handles=handles, title="parts", loc="center left", bbox_to_anchor=(1.02, 0.5),
                       fontsize=7, title_fontsize=7)
    for r, name in enumerate(maps, start=1):
        names = (concept_names or {}).get(name) or [f"C{k}" for k in range(n_concepts)]
        concept_legend(axes[r, -1], list(names), title=f"{name} concepts", loc="center left",
                       bbox_to_anchor=(1.02, 0.5), fontsize=6, title_fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_norm_strip(
    Z: torch.Tensor,
    labels: torch.Tensor,
    groups: dict[str, torch.Tensor],
    class_names: Sequence[str],
    *,
    ax: Any = None,
    title: str | None = None,
):
    """Where chosen images sit in their class: embedding norm relative to the class's median.

    One row per class: every training image of the class as a small grey tick
    (``||z_i|| / median_{class} ||z||``), and the images of each group (e.g. the
    images a row scores highest, the images nearest to the class mean) as
    coloured markers. A ratio above 1 is further out than a typical image.

    Parameters
    ----------
    Z : (N, D) tensor
        Embeddings of the training images.
    labels : (N,) int tensor
        Their classes ``0 .. C-1``.
    groups : dict of str -> (C, k) int tensor
        Per group, ``k`` image indices (into ``Z``) for every class.
    class_names : list of str
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    Zc, y = Z.detach().cpu().double(), torch.as_tensor(labels).cpu().long()
    norms = Zc.norm(dim=1)
    C = len(class_names)
    fig, ax = new_axes(ax, size=(FIGURE_WIDTH * 0.8, 0.45 * C + 1.0))
    rng = np.random.default_rng(0)
    markers = ["o", "s", "^", "D"]
    colors = ["#D55E00", "#0072B2", "#009E73", "#CC79A7"]
    for c in range(C):
        med = norms[y == c].median()
        r = (norms[y == c] / med).numpy()
        ax.scatter(r, c + rng.uniform(-0.15, 0.15, len(r)), s=3, color="0.7", lw=0, zorder=1,
                   label="training images of the class" if c == 0 else None)
        for g, (name, idx) in enumerate(groups.items()):
            sel = torch.as_tensor(idx)[c].cpu().long()
            ax.scatter((norms[sel] / med).numpy(), np.full(len(sel), c + 0.3 * (g - 0.5 * (len(groups) - 1))),
                       s=28, marker=markers[g % 4], color=colors[g % 4], edgecolor="white", lw=0.5,
                       zorder=2, label=name if c == 0 else None)
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_yticks(range(C), [short_label(n, 20) for n in class_names])
    ax.invert_yaxis()
    ax.set_xlabel("embedding norm / median norm of the class")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_dataset_gallery(
    dataset: Any,
    n_per_class: int = 2,
    show_parts: bool = True,
    *,
    classes: Sequence[int] | None = None,
    size: float = 1.2,
    alpha: float = 0.6,
):
    """A gallery of a dataset: one row per class, each image next to its part map.

    Parameters
    ----------
    dataset : ImageSet
        Any :class:`kmexplain_utils.data.ImageSet`.
    n_per_class : int, default 2
        Images shown per class (the first ones of each class, so the figure
        is the same in every run).
    show_parts : bool, default True
        Add a panel with the part label map after each image (when the
        dataset has parts), and a legend of the part names.
    classes : list of int, optional
        Which classes (rows); default all.
    size : float
        Inches per panel.
    alpha : float
        Opacity of the part colours.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = dataset.labels
    classes = list(range(dataset.n_classes)) if classes is None else [int(c) for c in classes]
    with_parts = bool(show_parts and dataset.part_names is not None)
    per_image = 2 if with_parts else 1
    ncols = n_per_class * per_image
    fig, axes = plt.subplots(
        len(classes),
        ncols,
        figsize=(size * ncols + (1.4 if with_parts else 0.0) + 1.6, size * len(classes)),
        squeeze=False,
        layout="constrained",
    )
    colors = part_colors(len(dataset.part_names)) if with_parts else None
    for r, c in enumerate(classes):
        idx = torch.nonzero(labels == c).flatten()[:n_per_class]
        imgs = dataset.images_at(idx) if len(idx) else []
        prts = dataset.parts_at(idx) if with_parts and len(idx) else None
        for j in range(n_per_class):
            ax_img = axes[r, j * per_image]
            if j >= len(idx):
                ax_img.axis("off")
                if with_parts:
                    axes[r, j * per_image + 1].axis("off")
                continue
            show_image(imgs[j], ax=ax_img)
            if with_parts:
                show_label_map(imgs[j], prts[j], ax=axes[r, j * per_image + 1], alpha=alpha, colors=colors)
        axes[r, 0].set_ylabel(dataset.class_names[c], rotation=0, ha="right", va="center", fontsize=8)
    if with_parts:
        handles = [Patch(facecolor=colors[i], label=name) for i, name in enumerate(dataset.part_names) if i > 0]
        fig.legend(handles=handles, loc="outside right center", title="parts", fontsize=8)
    return fig


# --------------------------------------------------------------------------- chapter figures
def short_label(name: str, max_len: int = 12) -> str:
    """A class name short enough for a panel title.

    Names of at most ``max_len`` characters are kept. Longer ones are split
    into words (at ``-``, ``_`` and spaces, separators kept) and every word
    longer than ``k`` letters is cut to its first ``k``, with the largest
    ``k >= 3`` that fits; a word of ``k + 1`` letters is kept whole rather
    than cut by one (so that ``"warm"`` does not become ``"war"``):
    ``"red-pointed-striped"`` -> ``"red-poi-str"``,
    ``"warm-pointed-striped"`` -> ``"warm-poi-str"``. Names that do not fit
    even so are cut to ``max_len`` letters of that form.
    """
    import re

    name = str(name)
    if len(name) <= max_len:
        return name
    tokens = re.split(r"([-_ ])", name)
    words, seps = tokens[0::2], tokens[1::2]

    def cut(k: int, keep: int) -> str:
        return "".join((w if len(w) <= keep else w[:k]) + (seps[i] if i < len(seps) else "")
                       for i, w in enumerate(words))

    for k in range(max(len(w) for w in words), 0, -1):
        for keep in ((k + 1, k) if k >= 3 else (k,)):
            short = cut(k, keep)
            if len(short) <= max_len:
                return short
    return cut(3, 4)[:max_len] if len(words) > 1 else name[:max_len]


def _cpu_index(idx: Any) -> np.ndarray:
    if isinstance(idx, torch.Tensor):
        return idx.detach().cpu().numpy()
    return np.asarray(idx)


def image_heatmap_grid(
    images: torch.Tensor,
    heats: torch.Tensor,
    titles: Sequence[str] | None = None,
    *,
    heat_label: str = "",
    title: str | None = None,
    ncols: int = 8,
    diverging: bool = False,
    cmap: str | None = None,
    shared_scale: bool = True,
    size: float = 1.4,
    interpolation: str = "nearest",
):
    """Images with a heat map over each (CAMs, attribution maps), one shared colour bar.

    Parameters
    ----------
    images : (N, 3, H, W) tensor in [0, 1]
    heats : (N, h, w) float tensor
        One map per image (coarser maps are stretched over the image).
    titles : list of str, optional
        One per image.
    heat_label : str
        Label of the colour bar.
    title : str, optional
        Title of the figure.
    ncols : int, default 8
    diverging : bool, default False
        Centre the colours at 0 (red positive, blue negative).
    cmap : str, optional
        Colour map (default as in :func:`show_heatmap`).
    shared_scale : bool, default True
        One colour scale for all panels (so that the colour bar reads the
        same everywhere); ``False`` scales each panel to its own range.
    size : float
        Inches per panel.
    interpolation : {"nearest", "bilinear"}, default "nearest"
        How coarse maps are drawn (see :func:`show_heatmap`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    n = len(images)
    if heats.ndim != 3 or len(heats) != n:
        raise ValueError(f"heats must have shape (N, h, w) with N = {n} images, got {tuple(heats.shape)}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    hm = heats.detach().cpu().double()
    vmax = float(hm.abs().max()) if diverging else float(hm.max())
    ncols = max(1, min(int(ncols), n))
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols + 0.8, size * nrows + 0.4 * (title is not None) + 0.35 * (titles is not None)),
        squeeze=False, layout="constrained",
    )
    axes_flat = axes.reshape(-1)
    for i, ax in enumerate(axes_flat):
        if i >= n:
            ax.axis("off")
            continue
        show_heatmap(
            images[i], hm[i], ax=ax, cmap=cmap, diverging=diverging,
            vmax=vmax if shared_scale else None, title=None if titles is None else titles[i],
            interpolation=interpolation,
        )
        if shared_scale and not diverging:
            ax.images[-1].set_clim(float(hm.min()), vmax if vmax > float(hm.min()) else float(hm.min()) + 1.0)
    if n:
        bar = fig.colorbar(axes_flat[0].images[-1], ax=list(axes_flat), fraction=0.03, pad=0.02, shrink=0.9)
        if heat_label:
            bar.set_label(heat_label)
    if title:
        fig.suptitle(title)
    return fig


def nearest_images_grid(
    dataset: Any,
    nearest: Any,
    row_classes: Sequence[int] | None = None,
    row_labels: Sequence[str] | None = None,
    *,
    title: str | None = None,
    size: float = 1.0,
    frame_color: str = "#d62728",
):
    """Rows of training images (nearest neighbours of prototypes), wrong-class images framed in red.

    Parameters
    ----------
    dataset : ImageSet
        Where the indices point.
    nearest : (R, k) int tensor/array, or dict of them
        Row ``r`` shows the images ``nearest[r]``. A dict ``{name: (R, k)}``
        puts several groups side by side, each headed by its name.
    row_classes : list of int, optional
        The class of each row; an image of another class gets a red frame.
    row_labels : list of str, optional
        Text left of each row.
    title : str, optional
    size : float
        Inches per image.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    groups = dict(nearest) if isinstance(nearest, dict) else {"": nearest}
    groups = {name: _cpu_index(idx) for name, idx in groups.items()}
    shapes = {idx.shape[0] for idx in groups.values()}
    if len(shapes) != 1 or any(idx.ndim != 2 for idx in groups.values()):
        raise ValueError("nearest must be (R, k) indices, or a dict of (R, k) indices with the same R")
    n_rows = shapes.pop()
    row_classes = None if row_classes is None else [int(c) for c in row_classes]
    if row_classes is not None and len(row_classes) != n_rows:
        raise ValueError(f"row_classes must have one entry per row ({n_rows}), got {len(row_classes)}")
    if row_labels is not None and len(row_labels) != n_rows:
        raise ValueError(f"row_labels must have one entry per row ({n_rows}), got {len(row_labels)}")
    widths = [idx.shape[1] for idx in groups.values()]
    fig = plt.figure(
        figsize=(size * sum(widths) + 0.3 * (len(widths) - 1) + 1.8, size * n_rows + 0.5 + 0.3 * (title is not None)),
        layout="constrained",
    )
    subfigs = np.atleast_1d(fig.subfigures(1, len(groups), width_ratios=widths, wspace=0.02))
    labels = dataset.labels
    for g, (sub, (name, idx)) in enumerate(zip(subfigs, groups.items())):
        axes = sub.subplots(n_rows, idx.shape[1], squeeze=False)
        if name:
            sub.suptitle(name, fontsize=10)
        for r in range(n_rows):
            imgs = dataset.images_at(idx[r])
            for j in range(idx.shape[1]):
                ax = axes[r, j]
                show_image(imgs[j], ax=ax)
                if row_classes is not None and int(labels[int(idx[r, j])]) != row_classes[r]:
                    for side in ax.spines.values():
                        side.set_visible(True)
                        side.set_color(frame_color)
                        side.set_linewidth(2.5)
            if g == 0 and row_labels is not None:
                axes[r, 0].set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_accuracy_vs_k(
    k_values: Sequence[int],
    accuracies: Sequence[float],
    reference: float | None = None,
    reference_label: str = "reference",
    ax: Any = None,
    *,
    xlabel: str = "prototypes per class K",
    label: str = "k-means classifier",
):
    """Test accuracy against the number of prototypes per class, with an optional reference line.

    Parameters
    ----------
    k_values : list of int
    accuracies : list of float
        Accuracies in ``[0, 1]`` (shown in percent).
    reference : float, optional
        E.g. the linear head's accuracy, drawn as a dashed line.
    reference_label : str
    ax : Axes, optional
    xlabel, label : str

    Returns
    -------
    matplotlib.figure.Figure
    """
    if len(k_values) != len(accuracies):
        raise ValueError(f"k_values ({len(k_values)}) and accuracies ({len(accuracies)}) differ in length")
    fig, ax = new_axes(ax, size=(4.5, 3.0))
    ks = [int(k) for k in k_values]
    ax.plot(ks, [100 * float(a) for a in accuracies], marker="o", color=_QUALITATIVE[4], label=label)
    if reference is not None:
        ax.axhline(100 * float(reference), ls="--", color="0.35", label=reference_label)
    if ks and min(ks) > 0 and max(ks) / min(ks) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    return fig


def plot_training_history(history: Sequence[dict[str, float]], ax: Any = None):
    """Loss and accuracy per epoch of :func:`kmexplain_utils.chapters.training.train_model`.

    Parameters
    ----------
    history : list of dict
        One dict per epoch with ``epoch``, ``loss``, ``train_acc`` and
        optionally ``test_acc`` (as in ``TrainResult.history``).
    ax : Axes, optional
        Draws both curves on one axes (accuracy on a twin axis); by default a
        new figure with two panels, loss and accuracy.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("history is empty: train for at least one epoch")
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    loss = [float(h["loss"]) for h in history]
    train_acc = [100 * float(h["train_acc"]) for h in history if "train_acc" in h]
    test = [(e, 100 * float(h["test_acc"])) for e, h in zip(epochs, history) if h.get("test_acc") is not None]
    if ax is None:
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(FIGURE_WIDTH * 0.8, 2.8), layout="constrained")
    else:
        fig, ax_loss = ax.figure, ax
        ax_acc = ax.twinx()
    ax_loss.plot(epochs, loss, marker=".", color=_QUALITATIVE[5], label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    if train_acc:
        ax_acc.plot(epochs[: len(train_acc)], train_acc, marker=".", color=_QUALITATIVE[4], label="train (augmented batches)")
    if test:
        ax_acc.plot([e for e, _ in test], [a for _, a in test], marker="o", color=_QUALITATIVE[2], label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend(loc="lower right")
    if ax is None:
        ax_loss.legend(loc="upper right")
    return fig


def plot_explanations(
    images: torch.Tensor,
    columns: dict[str, torch.Tensor],
    *,
    parts: torch.Tensor | None = None,
    part_names: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    panel_titles: dict[str, Sequence[str]] | None = None,
    n_concepts: int | None = None,
    size: float = 1.6,
    alpha: float = 0.55,
    title: str | None = None,
    colorbar: bool = True,
    concept_names: Sequence[str] | dict[str, Sequence[str]] | None = None,
    with_image: bool = True,
    concept_alpha: float = 0.85,
):
    """One row per image: the image, its ground-truth parts, then concept and attribution maps.

    Parameters
    ----------
    images : (N, 3, H, W) tensor in [0, 1]
    columns : dict of str -> (N, h, w) tensor
        Integer maps are drawn as concept maps (:func:`concept_colors`),
        floating maps as diverging heat maps (red = for, blue = against,
        centred at 0, one scale per column). The key is the column's title.
    parts : (N, H, W) int tensor, optional
        Ground-truth part maps, drawn after the image.
    part_names : list of str, optional
        For the parts legend.
    row_labels : list of str, optional
        Left of each row (e.g. the true class).
    panel_titles : dict of str -> list of str, optional
        Per-image captions under the panels of a column.
    n_concepts : int, optional
        Number of concepts (fixes the concept colours); default from the maps.
    size : float
        Inches per panel.
    alpha : float
        Opacity of label maps.
    title : str, optional
    colorbar : bool, default True
        One colour bar under every heat-map column (its scale, shared by the column's panels).
    concept_names : list of str, or dict of column -> list of str, optional
        Names of the concepts (e.g. :func:`concept_names`, "C3: body 71 %"): one legend per
        list, in the concept colours, under its column. A dict gives each concept
        column its own names (concepts of different levels are different concepts).
    concept_alpha : float, default 0.85
        Opacity of concept maps: high, so that a concept's colour is (nearly) its legend's
        and the image's own colours do not show through.
    with_image : bool, default True
        Whether the first column shows the plain image; ``False`` saves a column (every other
        panel draws its map over the image already), so that three maps fit the page with
        panels of at least 160 px.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = _check_map_batch(images, columns, "column {!r}")
    heads = (["image"] if with_image else []) + (["parts"] if parts is not None else []) + list(columns)
    if not heads:
        raise ValueError("nothing to draw: no image column, no parts and no maps")
    # the height holds what sits under the panels too, so that the square panels keep ``size``
    # inches of width: captions under every row, the colour bars and the legends under the columns
    lists = [] if concept_names is None else (
        list(concept_names.values()) if isinstance(concept_names, dict) else [concept_names])
    n_legend = max([len(v) for v in lists] + [len(part_names or [1]) - 1 if parts is not None else 0])
    has_bar = colorbar and any(m.is_floating_point() for m in columns.values())
    under = 0.18 * n * bool(panel_titles) + 0.45 * has_bar + (0.14 * n_legend + 0.25) * (n_legend > 0)
    fig, axes = plt.subplots(
        n, len(heads), figsize=(size * len(heads) + 0.9, size * n + 0.5 + 0.3 * (title is not None) + under),
        squeeze=False, layout="constrained",
    )
    n_parts = len(part_names) if part_names is not None else (int(parts.max()) + 1 if parts is not None else 0)
    p_colors = part_colors(max(n_parts, 1))
    scales = {}
    for name, m in columns.items():
        if m.is_floating_point():
            scales[name] = float(m.detach().abs().max()) or 1.0
    for i in range(n):
        col = 0
        if with_image:
            show_image(images[i], ax=axes[i, col])
            col += 1
        if parts is not None:
            show_label_map(images[i], parts[i], ax=axes[i, col], colors=p_colors, alpha=alpha)
            col += 1
        for name, m in columns.items():
            ax = axes[i, col]
            if m.is_floating_point():
                show_heatmap(images[i], m[i], ax=ax, diverging=True, vmax=scales[name], interpolation="nearest")
            else:
                k = int(n_concepts) if n_concepts is not None else int(m.max()) + 1
                show_label_map(images[i], m[i], ax=ax, colors=concept_colors(k), alpha=concept_alpha,
                               background=False)
            if panel_titles is not None and name in panel_titles:
                ax.set_xlabel(panel_titles[name][i], fontsize=7)
            col += 1
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=8)
    for c, head in enumerate(heads):
        axes[0, c].set_title(head, fontsize=9)
    if colorbar:
        first = len(heads) - len(columns)
        for c, (name, m) in enumerate(columns.items()):
            if m.is_floating_point() and axes[-1, first + c].images:
                bar = fig.colorbar(axes[-1, first + c].images[-1], ax=axes[:, first + c], location="bottom",
                                   shrink=0.9, aspect=12, pad=0.01)
                bar.ax.tick_params(labelsize=6)
    # legends under their columns (the figure keeps its width: no panel is shrunk by a legend)
    below = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.04), "fontsize": 7, "title_fontsize": 7}
    if parts is not None and part_names is not None:
        handles = [Patch(facecolor=p_colors[v], label=str(part_names[v])) for v in range(1, len(part_names))]
        axes[-1, heads.index("parts")].legend(handles=handles, title="parts", **below)
    if concept_names is not None:
        first = len(heads) - len(columns)
        if isinstance(concept_names, dict):
            for col in concept_names:
                if col not in columns:
                    raise ValueError(f"concept_names names column {col!r}, not one of {list(columns)}")
            named = dict(concept_names)
        else:  # one list for every concept column
            named = {col: concept_names for col, m in columns.items() if not m.is_floating_point()}
        for col, names in named.items():
            concept_legend(axes[-1, first + list(columns).index(col)], list(names), title="concepts", **below)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------ chapters 3-4: contributions, block scaling, patches, grids
def plot_concept_contributions(
    contributions: torch.Tensor | np.ndarray,
    ax: Any = None,
    *,
    score: float | None = None,
    title: str | None = None,
    concept_names: Sequence[str] | None = None,
):
    """Bar chart of how much each concept contributes to a prototype's score.

    Parameters
    ----------
    contributions : (K,) tensor/array
        One image's :func:`kmexplain_utils.attribution.concept_contributions`.
    ax : Axes, optional
    score : float, optional
        The prototype's score, written beside the bars' sum (above the bars: the y axis
        leaves room for the text).
    title : str, optional
    concept_names : list of str, optional
        Bar labels (default ``"0"``, ``"1"``, ...).

    Returns
    -------
    matplotlib.figure.Figure
    """
    vals = np.asarray(contributions.detach().cpu() if isinstance(contributions, torch.Tensor) else contributions,
                      dtype=np.float64).reshape(-1)
    k = len(vals)
    labels = list(concept_names) if concept_names is not None else [str(i) for i in range(k)]
    if len(labels) != k:
        raise ValueError(f"concept_names must have {k} entries, got {len(labels)}")
    fig, ax = new_axes(ax, size=(0.45 * k + 1.5, 2.6))
    ax.bar(np.arange(k), vals, color=concept_colors(k), edgecolor="0.3", linewidth=0.5)
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi + 0.3 * (hi - lo))  # room above the tallest bar for the sum and score
    ax.set_xticks(np.arange(k), labels)
    ax.set_xlabel("concept")
    ax.set_ylabel("contribution to the score")
    text = f"sum = {vals.sum():.3f}"
    if score is not None:
        text += f"\nscore = {float(score):.3f}"
    ax.text(0.98, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def plot_block_scaling(
    before: dict[str, float], after: dict[str, float], ax: Any = None, *, title: str | None = None
):
    """Each block's share of the squared norm of the concatenated position vectors, unscaled vs scaled.

    Parameters
    ----------
    before, after : mapping of block name to float
        Mean squared norm ``mean_p ||a^(b)_p||^2`` of each block's part of
        the concatenation, without and with the per-block scaling.
    ax : Axes, optional
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    blocks = list(before)
    if set(after) != set(blocks):
        raise ValueError(f"before and after must name the same blocks, got {blocks} and {list(after)}")
    b = np.array([before[k] for k in blocks], dtype=np.float64)
    a = np.array([after[k] for k in blocks], dtype=np.float64)
    fig, ax = new_axes(ax, size=(4.2, 2.8))
    x = np.arange(len(blocks))
    ax.bar(x - 0.2, b / b.sum(), width=0.4, label="without scaling", color="#bdbdbd", edgecolor="0.3")
    ax.bar(x + 0.2, a / a.sum(), width=0.4, label=r"divided by $\sigma_b$", color="#0072B2", edgecolor="0.3")
    ax.axhline(1.0 / len(blocks), color="0.3", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, blocks)
    ax.set_ylabel("share of mean squared norm")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    if title:
        ax.set_title(title)
    return fig


def plot_concept_patches(
    dataset: Any,
    concept_model: Any,
    k: int = 6,
    *,
    context: float = 2.0,
    size: float = 0.9,
    concepts: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
):
    """Each concept shown by the training patches nearest to its centroid (one row per concept).

    Every patch is the cell of the level's grid that the position stands for,
    enlarged by ``context`` to show its surroundings; the cell itself is
    outlined in the concept's colour.

    Parameters
    ----------
    dataset : ImageSet
        The training images the concepts were fitted on (same order).
    concept_model : ConceptModel
        Fitted; its ``sample_`` holds the candidate positions.
    k : int, default 6
        Patches per concept.
    context : float, default 2.0
        Patch size relative to the cell (>= 1).
    size : float
        Inches per patch.
    concepts : list of int, optional
        Which concepts (default all).
    names : list of str, optional
        A name for every concept (e.g. :func:`concept_names`), written left of its row in
        its colour; default ``"concept k"``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from .prototypes import nearest_patches, patch_box
    from .resample import infer_geometry

    cents = concept_model.centroids_
    rows = list(range(cents.shape[0])) if concepts is None else [int(c) for c in concepts]
    colors = concept_colors(cents.shape[0])
    sample = concept_model.sample_
    if names is not None and len(names) < cents.shape[0]:
        raise ValueError(f"names has {len(names)} entries for {cents.shape[0]} concepts")
    fig, axes = plt.subplots(len(rows), k, figsize=(size * k + 0.9, size * len(rows)), squeeze=False,
                             layout="constrained")
    for r, c in enumerate(rows):
        near = nearest_patches(cents[c].cpu(), sample, k=k)
        for j in range(k):
            ax = axes[r, j]
            if j >= len(near.image_index):
                ax.axis("off")
                continue
            img = to_numpy_image(dataset.images_at([int(near.image_index[j])])[0])
            ct, cl, cb, cr = (int(v) for v in patch_box(near.yx[j], near.grid, near.image_size,
                                                        geometry=near.geometry))
            # every panel is the same window about the position's centre: a patch at the border
            # keeps its panel's size, the part outside the image left grey
            geo = near.geometry if near.geometry is not None else infer_geometry(near.grid, near.image_size)
            rows, cols = geo.centres(near.grid)
            cy, cx = float(rows[int(near.yx[j][0])]), float(cols[int(near.yx[j][1])])
            hh, hw = 0.5 * geo.stride[0] * context, 0.5 * geo.stride[1] * context
            ax.imshow(img, interpolation="nearest")
            ax.set_xlim(cx - hw, cx + hw)
            ax.set_ylim(cy + hh, cy - hh)
            ax.add_patch(Rectangle((cl - 0.5, ct - 0.5), cr - cl, cb - ct, fill=False,
                                   edgecolor=colors[c], linewidth=2))
            _clean(ax, None)
            ax.set_facecolor("0.85")
        # one line per part share, so that the row labels leave the patches their width
        label = f"concept {c}" if names is None else str(names[c]).replace(": ", ":\n", 1).replace(", ", ",\n")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8, color=colors[c])
    return fig


def plot_block_grids(
    image: torch.Tensor | np.ndarray,
    grids: dict[str, tuple[int, int]],
    point: tuple[float, float] | None = None,
    *,
    size: float = 2.0,
):
    """Each block's feature grid over one image, with the cell that holds one image point.

    One panel per block: the grid lines of its feature map laid over the image
    and, outlined, the cell whose receptive-field centre region holds
    ``point``. The outlined cells are nested: a coarser block's cell contains
    the finer blocks' cells at the same place.

    Parameters
    ----------
    image : (3, H, W) tensor/array in [0, 1]
    grids : mapping of block name to (h, w)
        Feature-grid size of each block, e.g. ``{"B1": (32, 32), ..., "B4": (4, 4)}``.
    point : (row, col) in pixels, optional
        Default: a point a little off the image centre.
    size : float
        Inches per panel.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    img = to_numpy_image(image)
    H, W = img.shape[:2]
    py, px = point if point is not None else (0.4 * H, 0.6 * W)
    names = list(grids)
    colors = concept_colors(len(names))
    fig, axes = plt.subplots(1, len(names), figsize=(size * len(names), size + 0.4), squeeze=False,
                             layout="constrained")
    for j, (name, ax) in enumerate(zip(names, axes[0])):
        gh, gw = (int(v) for v in grids[name])
        ax.imshow(img, interpolation="nearest")
        for r in range(1, gh):
            ax.axhline(r * H / gh - 0.5, color="white", linewidth=0.5, alpha=0.7)
        for c in range(1, gw):
            ax.axvline(c * W / gw - 0.5, color="white", linewidth=0.5, alpha=0.7)
        for k in range(j, len(names)):  # this block's cell and the coarser blocks' cells around it
            kh, kw = (int(v) for v in grids[names[k]])
            i, c = int(py * kh / H), int(px * kw / W)
            ax.add_patch(Rectangle((c * W / kw - 0.5, i * H / kh - 0.5), W / kw, H / kh, fill=False,
                                   edgecolor=colors[k], linewidth=2.0 if k == j else 1.0,
                                   linestyle="-" if k == j else "--"))
        ax.plot([px], [py], marker="+", color="white", markersize=8)
        _clean(ax, f"{name}: {gh}x{gw} grid")
    return fig


def plot_block_centres(
    image: torch.Tensor | np.ndarray,
    registration: dict[str, Any],
    measured: dict[str, Any] | None = None,
    *,
    size: float = 2.2,
    ncols: int = 2,
):
    """Where each block's positions sit on one image: registered centres against the cell convention.

    One panel per block: the image in grey (its luminance, so that no part
    painted in a mark's colour hides the mark), the registered centre ``s i + o`` of every
    position (white dots, from :func:`kmexplain_utils.architectures.registration`)
    and the centre of each stride-wide grid cell, ``s i + (s - 1) / 2``, that
    bilinear resizing with ``align_corners=False`` assumes (red crosses). With
    ``measured``, the panel title gives the exactly measured receptive-field
    centre of the probe position next to both predictions.

    Parameters
    ----------
    image : (3, H, W) tensor/array in [0, 1]
    registration : dict of str to BlockRegistration
        ``registration(model, (H, W))``.
    measured : dict of str to MeasuredCentre, optional
        :func:`kmexplain_utils.receptive_field.receptive_field_centres` of the same model.
    size : float
        Inches per panel.
    ncols : int, default 2
        Panels per row: four blocks make a 2 x 2 grid, so that each panel stays wider than
        160 px on a 736 px text column (the legend sits under the grid, not beside it).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    img = to_numpy_image(image)
    names = list(registration)
    if int(ncols) < 1:
        raise ValueError(f"ncols must be a positive number of panels per row, got {ncols}")
    ncols = min(int(ncols), len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + 0.6) * nrows + 0.3), squeeze=False,
                             layout="constrained")
    for ax in axes.reshape(-1)[len(names):]:
        ax.axis("off")
    for name, ax in zip(names, axes.reshape(-1)):
        r = registration[name]
        ax.imshow(_grey_image(img), interpolation="nearest")  # no red stripe hides a red cross
        rows, cols = r.centres()
        yy, xx = np.meshgrid(rows.numpy(), cols.numpy(), indexing="ij")
        cy = r.stride[0] * np.arange(r.grid_size[0]) + (r.stride[0] - 1) / 2
        cx = r.stride[1] * np.arange(r.grid_size[1]) + (r.stride[1] - 1) / 2
        cyy, cxx = np.meshgrid(cy, cx, indexing="ij")
        marker = max(1.0, 12.0 / max(r.grid_size))
        ax.plot(cxx.ravel(), cyy.ravel(), "x", color="tab:red", markersize=marker * 1.5, markeredgewidth=0.8,
                label="cell centre")
        ax.plot(xx.ravel(), yy.ravel(), "o", color="white", markeredgecolor="black", markeredgewidth=0.4,
                markersize=marker, label="registered s·i + o")
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(img.shape[0] - 0.5, -0.5)
        title = f"{name}: s = {r.stride[1]:g}, o = {r.offset[1]:g}"
        if measured is not None and name in measured:
            m = measured[name]
            j = m.index[1]
            title += (f"\ni = {j}: measured {m.centre[1]:g} px\ns·i + o = {r.stride[1] * j + r.offset[1]:g}, "
                      f"cell {r.stride[1] * j + (r.stride[1] - 1) / 2:g}")
        _clean(ax, title)
        ax.title.set_fontsize(7)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7, markerscale=3)  # under the grid
    return fig


# ----------------------------------------------------------------------------- figures of the evaluation
def method_label(level: str, method: str) -> str:
    """Readable name of a method: ``"k-means B234"``, ``"CAM"``, ``"Grad-CAM B3"``, ``"random map"``..."""
    suffix = " (on the linear head)" if method.endswith("_transfer") else ""
    method = method.removesuffix("_transfer")
    if method == "kmeans":
        return f"k-means {level}{suffix}"
    if method == "kmeans-cell":
        return f"k-means {level} (cell registration){suffix}"
    if method == "gradcam":
        return f"Grad-CAM {level}" if level != "B4" else "Grad-CAM"
    return {"cam": "CAM", "random": "random map", "linear": "linear head", "occlusion": "occlusion"}.get(method, method) + (
        f" (on k-means {level})" if method == "random" and level != "pixel" else "")


def _mean_std(df: pandas.DataFrame, level: str, method: str, metric: str) -> tuple[float, float]:  # noqa: F821
    v = df[(df["level"] == level) & (df["method"] == method) & (df["metric"] == metric) & df["sweep"].isna()]["value"]
    return (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0) if len(v) else (float("nan"), float("nan"))


def plot_tradeoff(df: pandas.DataFrame, ax: Any = None, *, fidelity: str = "nmi_object",  # noqa: F821
                  controls: bool = True):
    """Accuracy of the k-means classifier vs semantic fidelity of its concept maps, per level.

    Points are the mean over seeds, bars one standard deviation; the linear
    head's accuracy is the horizontal band. Resolution controls (which have
    no classifier of their own) are drawn at B4's accuracy, hollow.

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation`.
    ax : Axes, optional
    fidelity : str, default "nmi_object"
        Concept metric on the x axis (``"miou"``, ``"nmi_object"``, ...).
    controls : bool
        Also draw the resolution controls.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4.0), layout="constrained")
    else:
        fig = ax.figure
    acc_lin, sd_lin = _mean_std(df, "B4", "linear", "accuracy")
    if np.isfinite(acc_lin):
        ax.axhline(100 * acc_lin, color="0.3", lw=1, ls="--", label="linear head")
        ax.axhspan(100 * (acc_lin - sd_lin), 100 * (acc_lin + sd_lin), color="0.85", zorder=0)
    names = [n for n in dict.fromkeys(df[(df["method"] == "concepts") & (df["metric"] == fidelity)]["level"])]
    levels = [lv for lv in dict.fromkeys(df["level"]) if not str(lv).startswith("B4@") and lv != "pixel"]
    colors = dict(zip(levels, method_colors(max(1, len(levels)))))
    for name in names:
        is_control = name.startswith("B4@")
        if is_control and not controls:
            continue
        # a control B4@S-grid takes the colour of S, hollow
        color = colors.get(name[3:-5] if is_control else name, "0.5")
        fx, fsd = _mean_std(df, name, "concepts", fidelity)
        ay, asd = _mean_std(df, "B4" if is_control else name, "kmeans", "accuracy")
        ax.errorbar(fx, 100 * ay, xerr=fsd, yerr=100 * asd, fmt="o", ms=7, capsize=3, color=color,
                    mfc="white" if is_control else color, mew=1.5, label=name)
    ax.set_xlabel(f"semantic fidelity: {fidelity.replace('_', ' ')} of concepts vs parts")
    ax.set_ylabel("test accuracy of the k-means classifier (%)")
    ax.set_title("Accuracy vs semantic fidelity, per level")
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_curves(curves: pandas.DataFrame, ax: Any = None, *, curve: str = "deletion"):  # noqa: F821
    """Mean deletion or insertion curve of every map (averaged over images and seeds).

    Parameters
    ----------
    curves : DataFrame
        ``df.attrs["curves"]`` from :func:`run_evaluation`.
    ax : Axes, optional
    curve : {"deletion", "insertion"}

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if curve not in ("deletion", "insertion"):
        raise ValueError(f"curve must be 'deletion' or 'insertion', got {curve!r}")
    if ax is None:
        fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
    else:
        fig = ax.figure
    sub = curves[curves["curve"] == curve]
    mean = sub.groupby(["level", "method", "fraction"], sort=False)["value"].mean().reset_index()
    for (lv, method), g in mean.groupby(["level", "method"], sort=False):
        label = method_label(lv, method)
        ls = "-" if method == "kmeans" else ("--" if method != "random" else ":")
        ax.plot(100 * g["fraction"], g["value"], ls, label=label)
    ax.set_xlabel(f"pixels {'removed' if curve == 'deletion' else 'inserted'} (%)")
    ax.set_ylabel("probability of the explained class")
    ax.set_title(f"{curve.capitalize()} curves")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    return fig


def plot_sweeps(df: pandas.DataFrame, axes: Any = None):  # noqa: F821
    """Sensitivity: accuracy vs prototypes per class, and mIoU / object AMI vs number of concepts.

    Parameters
    ----------
    df : DataFrame
        Records of :func:`run_evaluation` (with ``include_sweeps=True``).
    axes : sequence of 3 Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), layout="constrained")
    else:
        fig = axes[0].figure
    
    levels = [lv for lv in dict.fromkeys(df["level"]) if not str(lv).startswith("B4@") and lv != "pixel"]
    colors = dict(zip(levels, method_colors(max(1, len(levels)))))
    panels = [("k_per_class", "accuracy", "prototypes per class K", "k-means test accuracy (%)", 100.0),
              ("n_concepts", "miou", "number of concepts K'", "mIoU (test)", 1.0),
              ("n_concepts", "ami_object", "number of concepts K'", "object-pixel AMI (test)", 1.0)]
    for ax, (sweep, metric, xlabel, ylabel, scale) in zip(axes, panels):
        sub = df[(df["sweep"] == sweep) & (df["metric"] == metric)]
        for lv, g in sub.groupby("level", sort=False):
            g = g.sort_values("param")
            color = colors.get(lv[3:-5] if lv.startswith("B4@") else lv, "0.5")
            ax.plot(g["param"], scale * g["value"], "o-", label=lv, color=color,
                    mfc="white" if lv.startswith("B4@") else color)
        ax.set_xscale("log", base=2)
        ticks = sorted({int(v) for v in sub["param"].dropna()})
        if ticks:
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" (")[0] + " vs " + xlabel.split(" K")[0])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="best")
    return fig


def plot_qualitative(examples: dict[str, Any], *, size: float = 1.9, max_images: int = 3):
    """The same test images under every level and baseline, beside the ground-truth parts.

    One column per image (at most ``max_images``: three panels of 1.9 inches and
    the row labels fit a 736 px text column with every panel above 160 px) and
    one row per map, in stacked sections titled by
    what they hold: *test images*, *concept maps* (the part map, then the
    concept map of every level and resolution control), *k-means attribution
    maps* (one per level) and *baseline attribution maps* (CAM, Grad-CAM,
    occlusion, random...). Each row is labelled on the left. Each concept is
    drawn in the colour of the part it was mapped to on the *training* images
    (``examples["concept_parts"]``, the mapping mIoU uses), so that the concept
    rows read like the part row.

    Parameters
    ----------
    examples : dict
        ``df.attrs["examples"]`` from :func:`~kmexplain_utils.evaluation.run.run_evaluation`.
    size : float
        Inches per panel.
    max_images : int
        Most images (columns) shown: the first ones of ``examples``.

    Returns
    -------
    matplotlib.figure.Figure
        One sub-figure per section (``fig.subfigs``), titled by the section.

    Raises
    ------
    ValueError
        Without examples, or with ``max_images < 1``.
    """
    import matplotlib.pyplot as plt

    if not examples:
        raise ValueError("no examples: run_evaluation(..., include_attribution=True) keeps them")
    if max_images < 1:
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    images = examples["images"]
    cmaps = examples.get("concept_parts") or examples["concept_maps"]
    as_parts = "concept_parts" in examples
    atts = examples["attributions"]
    n = min(len(images), max_images)

    # (row label, draw(i, ax)) per row, in sections
    def concept(m):
        if as_parts:
            return lambda i, ax: show_label_map(images[i], m[i], ax=ax)
        return lambda i, ax: show_label_map(images[i], m[i], ax=ax, background=False, alpha=0.6)

    def heat(m):
        return lambda i, ax: show_heatmap(images[i], m[i], ax=ax)

    def att_label(key: str) -> str:  # two short lines: "k-means\nB4", "random map\n(on k-means B234)"
        label = method_label(*key.split("/"))
        return label.replace(" (", "\n(", 1) if " (" in label else label.replace(" ", "\n", 1)

    concepts = [("parts", lambda i, ax: show_label_map(images[i], examples["parts"][i], ax=ax))]
    concepts += [(f"concepts\n{k.replace('-grid', ' grid')}", concept(m)) for k, m in cmaps.items()]
    is_kmeans = {k: k.split("/")[1].startswith("kmeans") for k in atts}
    sections = [
        ("Test images", [("image", lambda i, ax: show_image(images[i], ax=ax))]),
        ("Concept maps" + (" (each concept in the colour of its part)" if as_parts else ""), concepts),
        ("k-means attribution maps", [(att_label(k), heat(m)) for k, m in atts.items() if is_kmeans[k]]),
        ("Baseline attribution maps", [(att_label(k), heat(m)) for k, m in atts.items() if not is_kmeans[k]]),
    ]
    sections = [(name, rows) for name, rows in sections if rows]
    heights = [size * len(rows) + 0.4 for _, rows in sections]  # the rows and the section title
    fig = plt.figure(figsize=(size * n + 1.1, sum(heights)), layout="constrained")  # + the row labels
    subfigs = np.atleast_1d(fig.subfigures(len(sections), 1, height_ratios=heights, hspace=0.02))
    for sub, (name, rows) in zip(subfigs, sections):
        axes = sub.subplots(len(rows), n, squeeze=False)
        sub.suptitle(name, fontsize=10, x=0.0, ha="left")
        for r, (label, draw) in enumerate(rows):
            for i in range(n):
                draw(i, axes[r, i])
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    return fig
