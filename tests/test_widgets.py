"""Explorers build without a kernel, pre-render one image per grid value, and re-draw on change."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from kmexplain_utils.chapters import widgets as kw# noqa: E402

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
    fig, _ = plt.subplots()
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
    many = kw.PrerenderedExplorer(Recorder(), {"image": [f"img{i}" for i in range(8)]}, dpi=20)
    assert isinstance(many.controls["image"], widgets.Dropdown)
    assert all(link.source[1] == "index" for link in many.links)
    many.select(image="img5")
    assert many.shown() is many.images[("img5",)]


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
    error = TypeError if "sequence" in match else ValueError
    with pytest.raises(error, match=match):
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


# ---------------------------------------------------------------- render results other than figures
def test_render_may_return_an_array_with_a_caption():
    import numpy as np

    def render(k):
        img = np.zeros((4, 6, 3), dtype=np.float32)
        img[..., 0] = k / 10
        return img, f"<b>k = {k}</b>"

    ex = kw.PrerenderedExplorer(render, {"k": [1, 5]})
    assert len(ex.images) == 2
    stack = ex.widget.children[-1]
    captions = [leaf.children[0].value for leaf in stack.children]
    assert captions == ["<b>k = 1</b>", "<b>k = 5</b>"]
    assert ex.shown() is ex.images[(1,)]
    assert bytes(ex.images[(5,)].value).startswith(PNG_MAGIC)
    assert ex.images[(1,)].value != ex.images[(5,)].value
    live = kw.LiveExplorer(render, {"k": [1, 5]})
    assert live.caption.value == "<b>k = 1</b>"
    live.select(k=5)
    assert live.caption.value == "<b>k = 5</b>"


def test_render_returning_something_else_is_named():
    with pytest.raises(TypeError, match="render must return"):
        kw.LiveExplorer(lambda k: 42, {"k": [1]})


# ---------------------------------------------------------------- the concept explorer on a tiny model
@pytest.fixture(scope="module")
def tiny_views():
    import torch

    from kmexplain_utils.classifier import KMeansClassifier
    from kmexplain_utils.concepts import ConceptModel
    from kmexplain_utils.config import get_profile
    from kmexplain_utils.data.parts import make_parts
    from kmexplain_utils.features import LevelFeatures
    from kmexplain_utils.chapters.models import build_model

    torch.manual_seed(0)
    train = make_parts(32, image_size=32, seed=0)
    test = make_parts(8, image_size=32, seed=0, split="test")
    model = build_model(get_profile("smoke"), 8).eval()
    cms, clfs = {}, {}
    for level in ("B4", "B34"):
        lf = LevelFeatures(level).fit(model, train.images)
        clfs[level] = KMeansClassifier(1, device="cpu").fit(lf.pooled(model, train.images), train.labels)
        for k in (2, 3):
            cms[level, k] = ConceptModel(k, level=level, positions_per_image=4, device="cpu").fit(
                model, train.images, level_features=lf
            )
    x = test.images[:3]
    views = kw.ConceptViews(
        model, x, cms, clfs, parts=test.parts[:3], part_names=test.part_names,
        class_names=test.class_names, labels=test.labels[:3],
    )
    return views, model, cms, clfs, x


def test_concept_views_hold_every_map(tiny_views):
    views, model, cms, _, x = tiny_views
    assert views.levels == ["B4", "B34"] and views.ks == [2, 3]
    g4 = tuple(cms["B4", 2].concept_map(model, x).shape[-2:])
    g34 = tuple(cms["B34", 2].concept_map(model, x).shape[-2:])
    assert g34[0] == 2 * g4[0]  # B3's grid is twice as fine as B4's
    for (level, k), maps in views.concept_maps.items():
        assert maps.shape == (3, *(g4 if level == "B4" else g34))
        assert int(maps.max()) < k
    # the attribution of each level averages to the winning prototype's score
    for e in views.explanations.values():
        assert torch_allclose(e.attribution.mean((1, 2)), e.score)


def torch_allclose(a, b):
    import torch

    return bool(torch.allclose(a, b, atol=1e-4))


def test_concept_views_need_every_pair(tiny_views):
    _, model, cms, clfs, x = tiny_views
    partial = {k: v for k, v in cms.items() if k != ("B34", 3)}
    with pytest.raises(ValueError, match=r"missing \[\('B34', 3\)\]"):
        kw.ConceptViews(model, x, partial)
    with pytest.raises(ValueError, match="has no concept model"):
        kw.ConceptViews(model, x, {("B4", 2): cms["B4", 2]}, {"B34": clfs["B34"]})


def test_concept_panel_layout(tiny_views):
    views = tiny_views[0]
    pic, caption = views.panel(0, "B4", 2, scale=2)
    assert pic.shape[0] == 64  # 32 px images enlarged twice
    assert pic.shape[1] == 4 * 64 + 5 * 6  # image | parts | concepts | attribution, with gaps
    assert float(pic.min()) >= 0.0 and float(pic.max()) <= 1.0
    assert "image | parts | B4 concepts (K'=2" in caption and "attribution" in caption
    assert views.class_names[int(views.labels[0])] in caption


def test_concept_explorer_prerendered_and_live(tiny_views):
    views = tiny_views[0]
    ex = kw.concept_explorer(views)
    assert isinstance(ex, kw.PrerenderedExplorer)
    assert len(ex.images) == 3 * 2 * 2
    png = {key: bytes(img.value) for key, img in ex.images.items()}
    names = sorted({key[0] for key in png})
    for level in ("B4", "B34"):  # different images give different pictures
        assert len({png[name, level, 2] for name in names}) == 3
    for name in names:  # B4's 2x2 grid and B34's 4x4 grid give different concept maps
        assert png[name, "B4", 2] != png[name, "B34", 2]
    live = kw.concept_explorer(views, live=True)
    first = bytes(live.view.value)
    live.select(level="B34")
    assert bytes(live.view.value) != first
    assert "B34 concepts" in live.caption.value
    with pytest.raises(ValueError, match="one entry per image"):
        kw.concept_explorer(views, image_names=["a"])


def test_concept_views_static_figure(tiny_views):
    views = tiny_views[0]
    fig = views.figure("B34", 3, [0, 2])
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2 * 4  # two rows: image | parts | concepts | attribution
    titles = [ax.get_title() for ax in shown[:4]]
    assert titles[0] == "image" and titles[1] == "parts" and titles[2].startswith("B34 concepts")
    cols, panel_titles = views.columns("B34", 3, [0, 2])
    (_, maps), (att_name, att) = cols.items()
    assert maps.shape[0] == 2 and not maps.is_floating_point() and att.is_floating_point()
    e = views.explanations["B34"]
    assert f"mean {float(e.attribution[2].mean()):.2f}" in panel_titles[att_name][1]
    import matplotlib.pyplot as plt

    plt.close(fig)
