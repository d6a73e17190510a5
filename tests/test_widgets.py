"""Explorers build without a kernel, pre-render one image per grid value, and re-draw on change."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kmexplain_utils import widgets as kw  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Recorder:
    """A render function that remembers its calls and draws their values."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, **values):
        self.calls.append(values)
        fig, ax = plt.subplots(figsize=(1.2, 1.0))
        # a figure whose pixels depend on the values
        ax.bar(range(len(values)), [hash(str(v)) % 7 + 1 for v in values.values()])
        ax.set_title(" ".join(f"{k}={v}" for k, v in values.items()), fontsize=5)
        return fig


def _leaf_images(node) -> list:
    if isinstance(node, widgets.Image):
        return [node]
    out = []
    for child in getattr(node, "children", ()):
        out.extend(_leaf_images(child))
    return out


def test_figure_to_png_encodes_and_closes():
    fig, ax = plt.subplots()
    n_before = len(plt.get_fignums())
    png = kw.figure_to_png(fig, dpi=20)
    assert png.startswith(PNG_MAGIC)
    assert len(plt.get_fignums()) == n_before - 1


def test_prerendered_has_one_image_per_combination():
    render = Recorder()
    options = {"image": [0, 1, 2], "level": ["B4", "B234"]}
    ex = kw.PrerenderedExplorer(render, options, dpi=20)
    combos = {(c["image"], c["level"]) for c in render.calls}
    assert len(render.calls) == 6 and len(combos) == 6
    assert set(ex.images) == combos
    leaves = _leaf_images(ex.widget)
    assert len(leaves) == 6
    assert {id(x) for x in leaves} == {id(x) for x in ex.images.values()}
    assert all(bytes(img.value).startswith(PNG_MAGIC) for img in leaves)
    # figures were closed after encoding
    assert not plt.get_fignums()


def test_prerendered_links_every_stack_to_its_control():
    ex = kw.PrerenderedExplorer(
        Recorder(), {"image": [0, 1, 2], "level": ["B4", "B234"], "k": [4, 8]}, dpi=20
    )
    # 1 top stack, 3 second-level stacks, 6 innermost stacks
    assert [len(s) for s in ex.stacks] == [1, 3, 6]
    assert len(ex.links) == 1 + 3 + 6
    for link in ex.links:
        assert type(link).__name__ == "Link"
        src, tgt = link.source, link.target
        assert src[1] == "index" and tgt[1] == "selected_index"
        assert isinstance(tgt[0], widgets.Stack)
        assert src[0] in ex.controls.values()
    by_control = {name: sum(l.source[0] is c for l in ex.links) for name, c in ex.controls.items()}
    assert by_control == {"image": 1, "level": 3, "k": 6}


def test_prerendered_select_shows_the_matching_image():
    ex = kw.PrerenderedExplorer(Recorder(), {"image": [0, 1], "k": [4, 8]}, dpi=20)
    assert ex.shown() is ex.images[(0, 4)]
    ex.select(image=1, k=8)
    assert ex.shown() is ex.images[(1, 8)]
    assert ex.controls["image"].index == 1 and ex.controls["k"].index == 1
    with pytest.raises(ValueError, match="unknown option"):
        ex.select(level="B4")


def test_prerendered_initial_value():
    ex = kw.PrerenderedExplorer(Recorder(), {"image": [0, 1], "k": [4, 8]}, value={"k": 8}, dpi=20)
    assert ex.shown() is ex.images[(0, 8)]


def test_live_explorer_redraws_when_a_control_changes():
    render = Recorder()
    ex = kw.LiveExplorer(render, {"image": [0, 1, 2], "level": ["B4", "B234"]}, dpi=20)
    assert render.calls == [{"image": 0, "level": "B4"}]
    first = bytes(ex.view.value)
    assert first.startswith(PNG_MAGIC)
    # the callback wired to the control
    ex.controls["level"].index = 1
    assert render.calls[-1] == {"image": 0, "level": "B234"}
    assert bytes(ex.view.value) != first
    # calling the handler directly re-draws with the current values
    n = ex.n_renders
    ex.on_change({"name": "index", "new": 1})
    assert ex.n_renders == n + 1
    ex.select(image=2)
    assert render.calls[-1] == {"image": 2, "level": "B234"}
    assert ex.values() == {"image": 2, "level": "B234"}


def test_controls_kinds():
    ex = kw.LiveExplorer(Recorder(), {"level": ["B4", "B234"], "k": [2, 4, 8]}, dpi=20)
    assert isinstance(ex.controls["level"], widgets.ToggleButtons)
    assert isinstance(ex.controls["k"], widgets.SelectionSlider)


@pytest.mark.parametrize(
    "options, match",
    [
        ({}, "non-empty mapping"),
        ({"k": []}, "is empty"),
        ({"k": "abc"}, "sequence of values"),
        ({"not a name": [1]}, "not a valid name"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        kw.PrerenderedExplorer(Recorder(), options)


def test_bad_initial_value():
    with pytest.raises(ValueError, match="is not one of"):
        kw.LiveExplorer(Recorder(), {"k": [1, 2]}, value={"k": 3})


def test_explorer_picks_kind_by_grid_size():
    small = kw.explorer(Recorder(), {"k": [1, 2]}, dpi=20)
    assert isinstance(small, kw.PrerenderedExplorer)
    big = kw.explorer(Recorder(), {"k": list(range(10))}, max_figures=5, dpi=20)
    assert isinstance(big, kw.LiveExplorer)
    assert isinstance(kw.explorer(Recorder(), {"k": [1]}, live=True, dpi=20), kw.LiveExplorer)


def test_displays_as_a_widget():
    ex = kw.PrerenderedExplorer(Recorder(), {"k": [1, 2]}, dpi=20)
    bundle = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
