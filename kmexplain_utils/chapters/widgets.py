"""Interactive explorers for the book, each with a kernel-free static counterpart.

A book page is read three ways: in a live Jupyter/Colab kernel, and as a
static HTML page that has no kernel at all. An *explorer* shows one figure
as a function of a few choices (a test image, a level, a number of concepts):

- :class:`LiveExplorer` re-draws the figure with Python on every change. It
  needs a kernel: in the static HTML its controls move but nothing re-draws.
- :class:`PrerenderedExplorer` draws the figure once for every combination of
  a small grid of values, stores the PNGs in nested ``ipywidgets.Stack``
  containers and connects each control to the stacks with ``jslink``. The
  links run in the browser, so the controls keep working in the static HTML
  page (when the widget state is embedded, as the book build does).

Both take a ``render(**values) -> matplotlib.figure.Figure`` function and a
mapping ``{name: sequence of values}``; :func:`concept_explorer` builds the
``render`` function of the book's concept explorer (image, concept map,
ground-truth parts, attribution map).

ipywidgets and matplotlib are imported inside the functions that need them.

Example
-------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import matplotlib.pyplot as plt
>>> def render(k):
...     fig, ax = plt.subplots(figsize=(1, 1))
...     ax.plot(range(k))
...     return fig
>>> ex = PrerenderedExplorer(render, {"k": [2, 3]})
>>> len(ex.images)
2
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..attribution import explain, upsample_map
from ..concepts import upsample_labels
from ..plotting import DIVERGING_CMAP, concept_colors, part_colors, plot_explanations, short_label, to_numpy_image

__all__ = [
    "ConceptViews",
    "LiveExplorer",
    "PrerenderedExplorer",
    "concept_explorer",
    "explorer",
    "figure_to_png",
]

RenderFn = Callable[..., Any]  # (**values) -> matplotlib.figure.Figure


def figure_to_png(fig: Any, *, dpi: int = 80, close: bool = True) -> bytes:
    """Encode a matplotlib figure as PNG bytes (and close it by default).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to encode.
    dpi : int, default 80
        Resolution; low values keep pre-rendered pages small.
    close : bool, default True
        Close the figure afterwards so that notebooks do not also show it.

    Returns
    -------
    bytes
        The PNG file's content.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()


def _as_png(result: Any, dpi: int) -> tuple[bytes, str | None]:
    """PNG bytes and optional caption from what a render function returned.

    Accepted: a matplotlib figure, PNG ``bytes``, an ``(H, W, 3)`` array
    (uint8, or float in [0, 1]), or a pair ``(one of those, caption)``.
    """
    caption = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        result, caption = result
    if isinstance(result, (bytes, bytearray)):
        return bytes(result), caption
    if hasattr(result, "savefig"):
        return figure_to_png(result, dpi=dpi), caption
    import numpy as np

    arr = np.asarray(result)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        from PIL import Image

        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0.0, 1.0) * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue(), caption
    raise TypeError(
        "render must return a matplotlib figure, PNG bytes, an (H, W, 3) image array, or a pair "
        f"(one of those, caption string); got {type(result).__name__}"
    )


def _check_options(options: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    if not isinstance(options, Mapping) or not options:
        raise ValueError(
            "options must be a non-empty mapping {name: sequence of values}, "
            f"got {options!r}"
        )
    checked: dict[str, list[Any]] = {}
    for name, values in options.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"option names are passed to render() as keywords; {name!r} is not a valid name"
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError(
                f"options[{name!r}] must be a sequence of values (e.g. a list), got {values!r}"
            )
        values = list(values)
        if not values:
            raise ValueError(f"options[{name!r}] is empty; give at least one value")
        checked[name] = values
    return checked


def _make_control(
    name: str, values: list[Any], value: Any, description: str | None
) -> Any:
    """A selection control with a synced ``index`` trait (jslink-able)."""
    import ipywidgets as widgets

    labels = [str(v) for v in values]
    index = values.index(value)
    desc = description if description is not None else name
    style = {"description_width": "initial"}
    numeric = all(isinstance(v, (int, float)) for v in values)
    if not numeric and len(values) <= 6:
        control = widgets.ToggleButtons(
            options=labels, index=index, description=desc, style=style
        )
    elif not numeric:  # many labels: a drop-down shows them in full
        control = widgets.Dropdown(options=labels, index=index, description=desc, style=style)
    else:
        control = widgets.SelectionSlider(
            options=labels,
            index=index,
            description=desc,
            continuous_update=False,
            style=style,
        )
    return control


def _initial(options: dict[str, list[Any]], value: Mapping[str, Any] | None) -> dict[str, Any]:
    chosen = {name: values[0] for name, values in options.items()}
    for name, v in (value or {}).items():
        if name not in options:
            raise ValueError(f"value names unknown option {name!r}; options are {list(options)}")
        if v not in options[name]:
            raise ValueError(f"value[{name!r}]={v!r} is not one of {options[name]}")
        chosen[name] = v
    return chosen


class _Explorer:
    """What both explorers share: the checked options, the initial values and one control per option.

    Subclasses build their view in ``_build(widgets, render, initial)``.
    """

    def __init__(
        self,
        render: RenderFn,
        options: Mapping[str, Sequence[Any]],
        *,
        value: Mapping[str, Any] | None = None,
        dpi: int = 80,
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        import ipywidgets as widgets

        self.options = _check_options(options)
        self.dpi = dpi
        initial = _initial(self.options, value)
        descriptions = dict(descriptions or {})
        self.controls = {
            name: _make_control(name, values, initial[name], descriptions.get(name))
            for name, values in self.options.items()
        }
        self._build(widgets, render, initial)

    def _build(self, widgets: Any, render: RenderFn, initial: dict[str, Any]) -> None:
        raise NotImplementedError


class LiveExplorer(_Explorer):
    """Controls and an image that Python re-draws whenever a control changes.

    Needs a running kernel: in a static HTML page the controls move but the
    image stays as it was when the page was built. Pair it with a static
    figure or use :class:`PrerenderedExplorer` there.

    Parameters
    ----------
    render : callable
        ``render(**values)`` returns a matplotlib figure for one choice of
        every option (or PNG bytes, an ``(H, W, 3)`` array, or a pair
        ``(picture, caption)`` whose caption is shown above it as HTML).
    options : mapping of str to sequence
        ``{name: values}``; one control per name (toggle buttons for up to
        six labels, a drop-down for more, a selection slider for numbers).
    value : mapping, optional
        Initial choice (defaults to the first value of each option).
    dpi : int, default 80
        Resolution of the drawn figure.
    descriptions : mapping of str to str, optional
        Labels shown beside the controls (defaults to the option names).

    Attributes
    ----------
    controls : dict of str to ipywidgets widget
        One control per option.
    view : ipywidgets.Image
        The current figure as a PNG.
    caption : ipywidgets.HTML
        The current caption (empty when ``render`` gives none).
    widget : ipywidgets.VBox
        Controls above the view; what the notebook displays.
    n_renders : int
        How many times ``render`` was called.
    """

    def _build(self, widgets: Any, render: RenderFn, initial: dict[str, Any]) -> None:
        self.render = render
        self.view = widgets.Image(format="png")
        self.caption = widgets.HTML()
        self.n_renders = 0
        for control in self.controls.values():
            control.observe(self.on_change, names="index")
        self.widget = widgets.VBox([*self.controls.values(), self.caption, self.view])
        self.on_change()

    def values(self) -> dict[str, Any]:
        """The option values currently selected by the controls."""
        return {name: self.options[name][c.index] for name, c in self.controls.items()}

    def on_change(self, change: Any = None) -> None:
        """Re-draw the view for the current values (the controls' callback)."""
        png, caption = _as_png(self.render(**self.values()), self.dpi)
        self.view.value = png
        self.caption.value = caption or ""
        self.n_renders += 1

    def select(self, **values: Any) -> None:
        """Set some controls from Python (the view follows through the callback)."""
        for name, v in values.items():
            if name not in self.options:
                raise ValueError(f"unknown option {name!r}; options are {list(self.options)}")
            self.controls[name].index = self.options[name].index(v)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return _widget_mimebundle(self.widget, **kwargs)


def _widget_mimebundle(widget: Any, **kwargs: Any) -> Any:
    """The display bundle of an ipywidget: ipywidgets 8 has ``_repr_mimebundle_``; 7.x (Colab's)
    only ``_ipython_display_``, whose bundle is built here the same way."""
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_(**kwargs)
    plaintext = repr(widget)
    data: dict[str, Any] = {"text/plain": plaintext[:110] + "…" if len(plaintext) > 110 else plaintext}
    if getattr(widget, "_view_name", None) is not None:
        data["application/vnd.jupyter.widget-view+json"] = {
            "version_major": 2,
            "version_minor": 0,
            "model_id": widget._model_id,
        }
        widget._handle_displayed()
    return data


class PrerenderedExplorer(_Explorer):
    """Every combination of a small grid drawn once; controls switch between them.

    The figures are PNGs in nested ``ipywidgets.Stack`` containers (one
    nesting level per option); each control's ``index`` is linked to the
    ``selected_index`` of every stack of its level with ``ipywidgets.jslink``.
    The links live in the browser, so the explorer also works in a static HTML
    page without a kernel (once the page embeds the widget state).

    Parameters
    ----------
    render : callable
        ``render(**values)`` returns a matplotlib figure (or PNG bytes, an
        ``(H, W, 3)`` array, or a pair ``(picture, caption)``).
    options : mapping of str to sequence
        ``{name: values}``; ``render`` is called once per combination, so keep
        the product of the lengths small (tens of figures).
    value : mapping, optional
        Initially selected values (default: the first of each option).
    dpi : int, default 80
        Resolution of the stored PNGs (they are embedded in the page).
    descriptions : mapping of str to str, optional
        Labels shown beside the controls.

    Attributes
    ----------
    images : dict of tuple to ipywidgets.Image
        One image per combination, keyed by the tuple of values in the order
        of ``options`` (shown under its caption when ``render`` gives one).
    controls : dict of str to ipywidgets widget
        One control per option.
    stacks : list of list of ipywidgets.Stack
        The stacks of each nesting level.
    links : list of ipywidgets.Link
        The browser-side links from controls to stacks.
    widget : ipywidgets.VBox
        What the notebook displays.
    """

    def _build(self, widgets: Any, render: RenderFn, initial: dict[str, Any]) -> None:
        names = list(self.options)
        self.images: dict[tuple[Any, ...], Any] = {}
        leaves: dict[tuple[Any, ...], Any] = {}
        for combo in itertools.product(*self.options.values()):
            png, caption = _as_png(render(**dict(zip(names, combo))), self.dpi)
            image = widgets.Image(value=png, format="png")
            self.images[tuple(combo)] = image
            leaves[tuple(combo)] = image if caption is None else widgets.VBox([widgets.HTML(caption), image])
        self.stacks: list[list[Any]] = [[] for _ in names]

        def build(depth: int, prefix: tuple[Any, ...]) -> Any:
            values = self.options[names[depth]]
            if depth == len(names) - 1:
                children = [leaves[prefix + (v,)] for v in values]
            else:
                children = [build(depth + 1, prefix + (v,)) for v in values]
            # ipywidgets >= 8 has Stack; 7.x (older Colab runtimes) only Tab, which also works
            container = getattr(widgets, "Stack", widgets.Tab)
            stack = container(children=children, selected_index=values.index(initial[names[depth]]))
            self.stacks[depth].append(stack)
            return stack

        root = build(0, ())
        self.links = [
            widgets.jslink((self.controls[name], "index"), (stack, "selected_index"))
            for depth, name in enumerate(names)
            for stack in self.stacks[depth]
        ]
        self.widget = widgets.VBox([*self.controls.values(), root])

    def select(self, **values: Any) -> None:
        """Select values from Python (sets the controls and the stacks alike)."""
        names = list(self.options)
        for name, v in values.items():
            if name not in self.options:
                raise ValueError(f"unknown option {name!r}; options are {names}")
            index = self.options[name].index(v)
            self.controls[name].index = index
            for stack in self.stacks[names.index(name)]:
                stack.selected_index = index

    def shown(self) -> Any:
        """The ``ipywidgets.Image`` that the stacks currently show."""
        node = self.widget.children[-1]
        while not hasattr(node, "format"):
            if hasattr(node, "selected_index"):
                node = node.children[node.selected_index]
            else:  # a captioned leaf: VBox([HTML, Image])
                node = node.children[-1]
        return node

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return _widget_mimebundle(self.widget, **kwargs)


def explorer(
    render: RenderFn,
    options: Mapping[str, Sequence[Any]],
    *,
    live: bool | None = None,
    max_figures: int = 48,
    **kwargs: Any,
) -> LiveExplorer | PrerenderedExplorer:
    """A pre-rendered explorer for a small grid, a live one for a large grid.

    Parameters
    ----------
    render, options, **kwargs
        As for :class:`LiveExplorer` / :class:`PrerenderedExplorer`.
    live : bool, optional
        Force one kind. By default the explorer is pre-rendered (works in the
        static HTML page too) when the grid has at most ``max_figures``
        combinations, and live (needs a kernel) otherwise.
    max_figures : int, default 48
        Largest grid that is pre-rendered by default.

    Returns
    -------
    LiveExplorer or PrerenderedExplorer
    """
    import math

    if live is None:
        n = math.prod(len(v) for v in _check_options(options).values())
        live = n > max_figures
    cls = LiveExplorer if live else PrerenderedExplorer
    return cls(render, options, **kwargs)


def _rgb(image: Any) -> Any:

    return to_numpy_image(image)


def _label_rgb(image: Any, labels: Any, colors: Sequence[Any], *, alpha: float = 0.6,
               background: bool = False) -> Any:
    """``(H, W, 3)`` float array: a label map (nearest-upsampled) blended over an image."""
    import numpy as np
    import torch

    img = _rgb(image)
    h, w = img.shape[:2]
    lab = torch.as_tensor(labels).long()

    lab = upsample_labels(lab[None], (h, w))[0]  # the registered nearest position, as everywhere
    lab = lab.cpu().numpy()
    pal = np.asarray(colors, dtype=np.float32)[:, :3]
    a = np.full((h, w, 1), alpha, dtype=np.float32)
    if background:
        a[lab == 0] = 0.0
    return (1 - a) * img + a * pal[lab]


def _heat_rgb(image: Any, heat: Any, *, alpha: float = 0.6) -> Any:
    """``(H, W, 3)`` float array: a heat map (bilinear) in the diverging colours over a grey image."""
    import matplotlib
    import numpy as np
    import torch


    img = _rgb(image)
    h, w = img.shape[:2]
    hm = upsample_map(torch.as_tensor(heat, dtype=torch.float32)[None].cpu(), (h, w))[0].numpy()
    m = float(np.abs(hm).max()) or 1.0
    col = matplotlib.colormaps[DIVERGING_CMAP]((hm / m + 1) / 2)[..., :3]
    grey = np.repeat(img.mean(-1, keepdims=True), 3, axis=-1)
    return (1 - alpha) * grey + alpha * col


def _panel_row(panels: Sequence[Any], *, scale: int = 3, gap: int = 6) -> Any:
    """Panels ``(H, W, 3)`` side by side on white, each enlarged ``scale`` times (nearest)."""
    import numpy as np

    big = [np.repeat(np.repeat(p, scale, axis=0), scale, axis=1) for p in panels]
    h = max(p.shape[0] for p in big)
    out = [np.ones((h, gap, 3), dtype=np.float32)]
    for p in big:
        out += [p.astype(np.float32), np.ones((h, gap, 3), dtype=np.float32)]
    return np.concatenate(out, axis=1)


class ConceptViews:
    """Concept maps and attribution maps of a few images, for every (level, K') pair.

    Computes everything once (one forward pass per level and per concept
    model) so that drawing a panel costs no model call; shared by
    :func:`concept_explorer` and the static figures beside it.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    images : torch.Tensor
        ``(N, 3, H, W)`` images in ``[0, 1]``.
    concept_models : mapping of (str, int) to ConceptModel
        Fitted concept models keyed by ``(level, n_concepts)``.
    classifiers : mapping of str to KMeansClassifier, optional
        A k-means classifier per level, fitted on that level's pooled
        embeddings (``concept_models[level, K].level_features_``); gives
        the attribution map of the winning prototype.
    parts : torch.Tensor, optional
        ``(N, H, W)`` ground-truth part maps.
    part_names, class_names : list of str, optional
        For legends and titles.
    labels : torch.Tensor, optional
        ``(N,)`` true classes (for titles).

    Attributes
    ----------
    levels : list of str
    ks : list of int
    concept_maps : dict of (str, int) to torch.Tensor
        ``(N, H_S, W_S)`` int64 concept maps on each level's grid.
    explanations : dict of str to GridExplanation
        Per level (when a classifier is given).
    """

    def __init__(
        self,
        model: Any,
        images: Any,
        concept_models: Mapping[tuple[str, int], Any],
        classifiers: Mapping[str, Any] | None = None,
        *,
        parts: Any = None,
        part_names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None,
        labels: Any = None,
    ) -> None:
        if not concept_models:
            raise ValueError("concept_models is empty; give {(level, K): fitted ConceptModel}")
        self.levels = list(dict.fromkeys(level for level, _ in concept_models))
        self.ks = sorted({int(k) for _, k in concept_models})
        missing = [(lv, k) for lv in self.levels for k in self.ks if (lv, k) not in concept_models]
        if missing:
            raise ValueError(
                f"concept_models must hold every (level, K) pair of its levels {self.levels} and "
                f"K values {self.ks}; missing {missing}"
            )
        self.images = images
        self.parts = parts
        self.part_names = part_names
        self.class_names = class_names
        self.labels = labels
        self.concept_maps = {key: cm.concept_map(model, images).cpu() for key, cm in concept_models.items()}
        self.explanations: dict[str, Any] = {}
        for level, clf in (classifiers or {}).items():
            if level not in self.levels:
                raise ValueError(f"classifiers names level {level!r}, which has no concept model")
            lf = concept_models[level, self.ks[0]].level_features_
            self.explanations[level] = explain(model, images, lf, clf)

    def _class(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else str(c)

    def row_labels(self) -> list[str] | None:
        """The true class of each image (or ``None`` without labels)."""
        if self.labels is None:
            return None
        return [self._class(int(c)) for c in self.labels]

    def columns(self, level: str, k: int, idx: Sequence[int] | None = None) -> tuple[dict, dict]:
        """Columns and per-panel titles of :func:`~kmexplain_utils.plotting.plot_explanations`."""
        idx = list(range(len(self.images))) if idx is None else list(idx)
        cmaps = self.concept_maps[level, int(k)]
        grid = tuple(cmaps.shape[-2:])
        name = f"{level} concepts\nK'={k}, grid {grid[0]}x{grid[1]}"
        cols = {name: cmaps[idx]}
        titles: dict[str, list[str]] = {}
        if level in self.explanations:
            e = self.explanations[level]
            att = f"attribution m* ({level})"
            cols[att] = e.attribution[idx].cpu()
            titles[att] = [
                f"→ {short_label(self._class(int(e.predicted[i])))}, mean {float(e.attribution[i].mean()):.2f}"
                for i in idx
            ]
        return cols, titles

    def panel(self, i: int, level: str, k: int, *, scale: int | None = None) -> tuple[Any, str]:
        """Image ``i``'s panels as one raster picture, and an HTML caption.

        Image | ground-truth parts | concept map | attribution map of the
        winning prototype (red = for, blue = against), drawn without
        matplotlib (fast enough to pre-render many combinations).

        Returns
        -------
        picture : ndarray, shape (H, W', 3), float in [0, 1]
        caption : str
        """
        img = self.images[i]
        size = max(img.shape[-2:])
        scale = scale if scale is not None else max(1, 192 // size)
        cmaps = self.concept_maps[level, int(k)]
        panels = [_rgb(img)]
        heads = ["image"]
        if self.parts is not None:
            n_parts = len(self.part_names) if self.part_names is not None else int(self.parts.max()) + 1
            panels.append(_label_rgb(img, self.parts[i], part_colors(n_parts), background=True))
            heads.append("parts")
        panels.append(_label_rgb(img, cmaps[i], concept_colors(int(k))))
        grid = tuple(cmaps.shape[-2:])
        heads.append(f"{level} concepts (K'={k}, grid {grid[0]}x{grid[1]})")
        pred = ""
        if level in self.explanations:
            e = self.explanations[level]
            panels.append(_heat_rgb(img, e.attribution[i]))
            heads.append("attribution m*")
            pred = (
                f" &middot; k-means prediction at {level}: <b>{self._class(int(e.predicted[i]))}</b> "
                f"(score {float(e.score[i]):.2f} = mean of m*)"
            )
        true = "" if self.labels is None else f"true class: <b>{self._class(int(self.labels[i]))}</b>"
        caption = (
            f"<div style='font-size:90%'>{true}{pred}<br>panels: {' | '.join(heads)}</div>"
        )
        return _panel_row(panels, scale=scale), caption

    def figure(self, level: str, k: int, idx: Sequence[int] | None = None, **kwargs: Any) -> Any:
        """Image, parts, concept map and attribution map of the images ``idx`` (one row each)."""
        idx = list(range(len(self.images))) if idx is None else list(idx)
        cols, titles = self.columns(level, k, idx)
        rows = self.row_labels()
        rows = None if rows is None else [short_label(r) for r in rows]
        return plot_explanations(
            self.images[idx],
            cols,
            parts=None if self.parts is None else self.parts[idx],
            part_names=self.part_names,
            row_labels=None if rows is None else [rows[i] for i in idx],
            panel_titles=titles,
            n_concepts=int(k),
            **kwargs,
        )


def concept_explorer(
    views: ConceptViews,
    *,
    live: bool | None = None,
    image_names: Sequence[str] | None = None,
    dpi: int = 72,
) -> LiveExplorer | PrerenderedExplorer:
    """Explorer of concept maps: pick a test image, a level and a number of concepts K'.

    Shows the image, its ground-truth parts, its concept map at that level
    and K', and the attribution map of the winning prototype at that level.
    Pre-rendered (works in the static HTML page) when the grid is small, live
    (needs a kernel) otherwise; see :func:`explorer`.

    Parameters
    ----------
    views : ConceptViews
        The precomputed maps (images, levels and K' values to offer).
    live : bool, optional
        Force a live or pre-rendered explorer.
    image_names : list of str, optional
        Labels of the image control (default: ``"0: <class>"`` ...).
    dpi : int, default 72
        Unused by the raster panels; kept for custom renderers.

    Returns
    -------
    LiveExplorer or PrerenderedExplorer
    """
    n = len(views.images)
    rows = views.row_labels()
    if image_names is None:
        image_names = [f"{i}: {rows[i]}" if rows is not None else str(i) for i in range(n)]
    if len(image_names) != n:
        raise ValueError(f"image_names must have one entry per image ({n}), got {len(image_names)}")
    names = list(image_names)

    def render(image: str, level: str, K: int) -> Any:
        return views.panel(names.index(image), level, K)

    options = {"image": names, "level": views.levels, "K": views.ks}
    descriptions = {"image": "test image", "level": "level", "K": "concepts K'"}
    return explorer(render, options, live=live, dpi=dpi, descriptions=descriptions)
