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

__all__ = [
    "figure_to_png",
    "LiveExplorer",
    "PrerenderedExplorer",
    "explorer",
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
            raise ValueError(
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
    if len(values) <= 6 and not all(isinstance(v, (int, float)) for v in values):
        control = widgets.ToggleButtons(
            options=labels, index=index, description=desc, style=style
        )
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


class LiveExplorer:
    """Controls and an image that Python re-draws whenever a control changes.

    Needs a running kernel: in a static HTML page the controls move but the
    image stays as it was when the page was built. Pair it with a static
    figure or use :class:`PrerenderedExplorer` there.

    Parameters
    ----------
    render : callable
        ``render(**values)`` returns a matplotlib figure for one choice of
        every option.
    options : mapping of str to sequence
        ``{name: values}``; one control per name (toggle buttons for a few
        labels, a selection slider otherwise).
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
    widget : ipywidgets.VBox
        Controls above the view; what the notebook displays.
    n_renders : int
        How many times ``render`` was called.
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

        self.render = render
        self.options = _check_options(options)
        self.dpi = dpi
        initial = _initial(self.options, value)
        descriptions = dict(descriptions or {})
        self.controls = {
            name: _make_control(name, values, initial[name], descriptions.get(name))
            for name, values in self.options.items()
        }
        self.view = widgets.Image(format="png")
        self.n_renders = 0
        for control in self.controls.values():
            control.observe(self.on_change, names="index")
        self.widget = widgets.VBox([*self.controls.values(), self.view])
        self.on_change()

    def values(self) -> dict[str, Any]:
        """The option values currently selected by the controls."""
        return {name: self.options[name][c.index] for name, c in self.controls.items()}

    def on_change(self, change: Any = None) -> None:
        """Re-draw the view for the current values (the controls' callback)."""
        self.view.value = figure_to_png(self.render(**self.values()), dpi=self.dpi)
        self.n_renders += 1

    def select(self, **values: Any) -> None:
        """Set some controls from Python (the view follows through the callback)."""
        for name, v in values.items():
            if name not in self.options:
                raise ValueError(f"unknown option {name!r}; options are {list(self.options)}")
            self.controls[name].index = self.options[name].index(v)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


class PrerenderedExplorer:
    """Every combination of a small grid drawn once; controls switch between them.

    The figures are PNGs in nested ``ipywidgets.Stack`` containers (one
    nesting level per option); each control's ``index`` is linked to the
    ``selected_index`` of every stack of its level with ``ipywidgets.jslink``.
    The links live in the browser, so the explorer also works in a static HTML
    page without a kernel (once the page embeds the widget state).

    Parameters
    ----------
    render : callable
        ``render(**values)`` returns a matplotlib figure.
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
        of ``options``.
    controls : dict of str to ipywidgets widget
        One control per option.
    stacks : list of list of ipywidgets.Stack
        The stacks of each nesting level.
    links : list of ipywidgets.Link
        The browser-side links from controls to stacks.
    widget : ipywidgets.VBox
        What the notebook displays.
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
        names = list(self.options)
        initial = _initial(self.options, value)
        descriptions = dict(descriptions or {})
        self.images: dict[tuple[Any, ...], Any] = {}
        for combo in itertools.product(*self.options.values()):
            png = figure_to_png(render(**dict(zip(names, combo))), dpi=dpi)
            self.images[tuple(combo)] = widgets.Image(value=png, format="png")
        self.stacks: list[list[Any]] = [[] for _ in names]

        def build(depth: int, prefix: tuple[Any, ...]) -> Any:
            values = self.options[names[depth]]
            if depth == len(names) - 1:
                children = [self.images[prefix + (v,)] for v in values]
            else:
                children = [build(depth + 1, prefix + (v,)) for v in values]
            stack = widgets.Stack(
                children=children, selected_index=values.index(initial[names[depth]])
            )
            self.stacks[depth].append(stack)
            return stack

        root = build(0, ())
        self.controls = {
            name: _make_control(name, self.options[name], initial[name], descriptions.get(name))
            for name in names
        }
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
            node = node.children[node.selected_index]
        return node

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


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
