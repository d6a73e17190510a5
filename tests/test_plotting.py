"""The book's plotting helpers: figures returned, axes counted, inputs untouched."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from kmexplain_utils import plotting as P
from kmexplain_utils.data import ImageSet
from kmexplain_utils.data.parts import make_parts


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def ds() -> ImageSet:
    return make_parts(32, image_size=16, seed=0)


def _narrowest_panel_px(fig: Figure, column_px: int = 736, dpi: int = 100) -> float:
    """The narrowest image panel's width on a page whose text column is ``column_px`` wide."""
    import io

    from kmexplain_utils.chapters.figure_log import image_panel_fractions, png_width

    fig.set_dpi(dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return min(image_panel_fractions(fig)) * min(png_width(buf.getvalue()), column_px)


def test_part_colors_are_fixed_and_background_grey():
    from matplotlib.colors import to_rgb

    c6, c3 = P.part_colors(6), P.part_colors(3)
    assert c6[0] == to_rgb(P.BACKGROUND_GREY)
    assert c6[:3] == c3  # a part keeps its colour whatever n is
    assert len(set(c6)) == 6
    many = P.part_colors(40)
    assert len(many) == 40 and len(set(many[:29])) == 29  # 16 fixed + 12 unused tab20 + grey
    assert P.part_colors(0) == []
    k = P.concept_colors(5)
    assert len(k) == 5 and to_rgb(P.BACKGROUND_GREY) not in k and k == P.concept_colors(7)[:5]
    with pytest.raises(ValueError):
        P.part_colors(-1)
    cmap = P.PART_CMAP  # a usable colormap: label v -> part_colors(...)[v]
    assert cmap.N == 17 and tuple(cmap(2)[:3]) == pytest.approx(c6[2])


def test_show_image_returns_figure_and_keeps_input(ds):
    img = ds.images[0].clone()
    fig = P.show_image(ds.images[0], title="one")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert fig.axes[0].get_title() == "one"
    assert torch.equal(ds.images[0], img)
    drawn = fig.axes[0].images[0].get_array()
    np.testing.assert_allclose(np.asarray(drawn), img.permute(1, 2, 0).numpy(), atol=1e-6)


def test_show_image_accepts_grey_and_channels_last():
    assert len(P.show_image(np.zeros((8, 8))).axes) == 1
    assert len(P.show_image(torch.zeros(8, 8, 3)).axes) == 1
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        P.show_image(torch.zeros(2, 3, 8, 8))


def test_image_grid_layout(ds):
    before = ds.images.clone()
    fig = P.image_grid(ds.images[:10], titles=[str(i) for i in range(10)], ncols=4)
    assert len(fig.axes) == 12  # 3 rows x 4 columns, 2 switched off
    assert sum(ax.axison for ax in fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes[:10]] == [str(i) for i in range(10)]
    assert torch.equal(ds.images, before)
    fig2, axes = plt.subplots(1, 3)
    assert P.image_grid(ds.images[:3], axes=axes) is fig2
    with pytest.raises(ValueError, match="one entry per image"):
        P.image_grid(ds.images[:3], titles=["a"])
    with pytest.raises(ValueError, match="axes"):
        P.image_grid(ds.images[:4], axes=axes)


def test_show_label_map_colours_and_legend(ds):
    img, parts = ds.images[1].clone(), ds.parts[1].clone()
    fig, ax = plt.subplots()
    out = P.show_label_map(ds.images[1], ds.parts[1], ax=ax, alpha=0.5, legend_names=ds.part_names)
    assert out is fig and len(fig.axes) == 1
    assert torch.equal(ds.images[1], img) and torch.equal(ds.parts[1], parts)
    overlay = np.asarray(ax.images[1].get_array())
    colors = P.part_colors(len(ds.part_names))
    # each pixel of the overlay has its label's colour; background is transparent
    for v in torch.unique(parts).tolist():
        sel = (parts == v).numpy()
        np.testing.assert_allclose(overlay[sel][:, :3], np.tile(colors[v], (sel.sum(), 1)), atol=1e-6)
        assert np.all(overlay[sel][:, 3] == (0.0 if v == 0 else 0.5))
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == [ds.part_names[v] for v in torch.unique(parts).tolist()]
    # underneath, the image's luminance in grey: the only colours in the panel are the labels'
    under = np.asarray(ax.images[0].get_array(), dtype=np.float64)
    rgb = ds.images[1].permute(1, 2, 0).numpy().astype(np.float64)
    assert not np.allclose(rgb[..., 0], rgb[..., 1])  # a coloured image ...
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    for c in range(3):  # ... drawn as its luma, three equal channels
        np.testing.assert_allclose(under[..., c], lum, atol=1e-5)
    fig, ax = plt.subplots()
    P.show_label_map(ds.images[1], ds.parts[1], ax=ax, grey=False)  # the colours on request
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), rgb, atol=1e-6)


def test_show_label_map_coarse_concept_map_is_upsampled():
    img = torch.rand(3, 16, 16)
    cmap = torch.tensor([[0, 1], [2, 3]])
    fig = P.show_label_map(img, cmap, background=False)
    overlay = np.asarray(fig.axes[0].images[1].get_array())
    assert overlay.shape == (16, 16, 4)
    assert np.all(overlay[..., 3] == 0.5)  # concept 0 is not transparent
    np.testing.assert_allclose(overlay[9, 2, :3], P.concept_colors(4)[2])
    # a grid that does not tile the image: each pixel takes the nearest registered position
    from kmexplain_utils.resample import infer_geometry, resample_labels
    odd = torch.arange(9).view(3, 3)
    fig = P.show_label_map(img, odd, background=False)
    shown = np.asarray(fig.axes[0].images[1].get_array())[..., :3]
    expected = resample_labels(odd, infer_geometry((3, 3), (16, 16)), (16, 16)).numpy()
    np.testing.assert_allclose(shown, np.asarray(P.concept_colors(9))[expected][..., :3], atol=1e-6)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        P.show_label_map(img, torch.zeros(1, 4, 4, dtype=torch.long))


def test_show_heatmap_diverging_is_centred(ds):
    heat = torch.tensor([[-2.0, 0.5], [1.0, 0.0]])
    keep = heat.clone()
    fig = P.show_heatmap(ds.images[0], heat, diverging=True, colorbar=True)
    im = fig.axes[0].images[-1]
    assert im.get_clim() == (-2.0, 2.0)
    assert im.get_cmap().name == P.DIVERGING_CMAP
    assert len(fig.axes) == 2  # image + colour bar
    assert torch.equal(heat, keep)
    fig = P.show_heatmap(None, heat)
    assert fig.axes[0].images[-1].get_clim() == (-2.0, 1.0)
    assert fig.axes[0].images[-1].get_cmap().name == P.HEATMAP_CMAP
    with pytest.raises(ValueError, match="NaN"):
        P.show_heatmap(None, torch.tensor([[float("nan")]]))


def test_dataset_gallery(ds):
    before = ds.images.clone()
    fig = P.plot_dataset_gallery(ds, n_per_class=2, show_parts=True)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == ds.n_classes * 4
    assert fig.axes[0].get_ylabel() == ds.class_names[0]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ds.part_names[1:]
    assert torch.equal(ds.images, before)
    fig = P.plot_dataset_gallery(ds, n_per_class=3, show_parts=False, classes=[0, 5])
    assert len(fig.axes) == 6 and not fig.legends
    no_parts = ImageSet(torch.rand(3, 3, 8, 8), [0, 1, 1], ["a", "b"])
    fig = P.plot_dataset_gallery(no_parts, n_per_class=2)  # class "a" has one image only
    assert len(fig.axes) == 4 and sum(ax.axison for ax in fig.axes) == 3


def test_set_book_style_changes_rcparams():
    import matplotlib as mpl

    with mpl.rc_context():
        mpl.rcParams["image.interpolation"] = "antialiased"
        P.set_book_style()
        assert mpl.rcParams["image.interpolation"] == "nearest"
        assert mpl.rcParams["image.cmap"] == P.HEATMAP_CMAP


def test_helpers_never_call_show(monkeypatch, ds):
    def boom(*a, **k):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", boom)
    P.show_image(ds.images[0])
    P.image_grid(ds.images[:2])
    P.show_label_map(ds.images[0], ds.parts[0])
    P.show_heatmap(ds.images[0], torch.rand(4, 4))
    P.plot_dataset_gallery(ds, n_per_class=1)


# ----------------------------------------------------------------- chapter figures
def test_short_label():
    assert P.short_label("cat") == "cat"
    assert P.short_label("red-pointed-striped") == "red-poi-str"
    # a word of four letters stays whole: "warm", not "war"
    assert P.short_label("warm-pointed-striped") == "warm-poi-str"
    assert P.short_label("cool-round-spotted") == "cool-rou-spo"
    assert P.short_label("warm-round-striped") == "warm-rou-str"
    assert all(len(P.short_label(n)) <= 12 for n in ("warm-pointed-striped", "cool-round-spotted"))
    assert P.short_label("Black footed Albatross", max_len=12) == "Bla foo Alb"
    assert P.short_label("abcdefghijklmnop", max_len=5) == "abcde"


def test_image_heatmap_grid_shares_one_scale(ds):
    heats = torch.stack([torch.full((4, 4), float(v)) for v in range(-2, 3)])
    keep = heats.clone()
    fig = P.image_heatmap_grid(ds.images[:5], heats, titles=list("abcde"), heat_label="CAM", title="t", ncols=3)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 5 and sum(ax.axison for ax in fig.axes[:6]) == 5
    assert {ax.images[-1].get_clim() for ax in panels} == {(-2.0, 2.0)}
    assert fig.axes[-1].get_ylabel() == "CAM"  # the colour bar
    assert torch.equal(heats, keep)
    fig = P.image_heatmap_grid(ds.images[:2], heats[:2], diverging=True)
    assert fig.axes[0].images[-1].get_clim() == (-2.0, 2.0)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        P.image_heatmap_grid(ds.images[:2], heats[:3])


def _registrations() -> dict:
    from kmexplain_utils.architectures import BlockRegistration

    return {f"B{b}": BlockRegistration(f"B{b}", f"layer{b}", (16 // 2**b,) * 2, (2.0**b,) * 2, (0.0, 0.0), 8,
                                       (3.0, 3.0)) for b in range(1, 5)}


def test_plot_block_centres_wraps_into_rows_with_the_legend_below(ds):
    reg = _registrations()
    one_row = P.plot_block_centres(ds.images[0], reg, ncols=4)
    panels = [ax for ax in one_row.axes if ax.images]
    assert len(panels) == 4 and len({round(ax.get_position().y0, 3) for ax in panels}) == 1
    assert len(one_row.legends) == 1  # one legend, under the row
    grid = P.plot_block_centres(ds.images[0], reg)  # the default: 2 x 2
    panels = [ax for ax in grid.axes if ax.images]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["B1", "B2", "B3", "B4"]
    rows = sorted({round(ax.get_position().y0, 3) for ax in panels})
    assert len(rows) == 2 and len({round(ax.get_position().x0, 3) for ax in panels}) == 2
    assert len(grid.legends) == 1 and not any(ax.get_legend() for ax in panels)
    grid.canvas.draw()  # the legend sits below the lowest panel, not beside the panels
    legend_top = grid.legends[0].get_window_extent().y1
    assert legend_top <= min(ax.get_window_extent().y0 for ax in panels) + 1
    wide = [ax.get_window_extent().width for ax in one_row.axes if ax.images]
    assert min(ax.get_window_extent().width for ax in panels) >= 0.9 * min(wide)
    # the image is drawn in grey, so a red cross shows on a red stripe
    under = np.asarray(panels[0].images[0].get_array(), dtype=np.float64)
    assert under.shape[-1] == 3 and np.allclose(under[..., 0], under[..., 1])
    assert np.allclose(under[..., 1], under[..., 2])
    three = P.plot_block_centres(ds.images[0], reg, ncols=3)
    assert sum(ax.get_visible() for ax in three.axes if ax.images) == 4 and len(three.axes) == 6
    with pytest.raises(ValueError, match="ncols"):
        P.plot_block_centres(ds.images[0], reg, ncols=0)


def test_nearest_images_grid_frames_other_classes(ds):
    labels = ds.labels
    same = torch.nonzero(labels == 0).flatten()[:2]
    other = torch.nonzero(labels != 0).flatten()[:1]
    idx = torch.stack([torch.cat([same, other]), torch.cat([same, other])])
    fig = P.nearest_images_grid(ds, {"A": idx, "B": idx}, row_classes=[0, 0], row_labels=["r0", "r1"], title="T")
    axes = [ax for sub in fig.subfigs for ax in sub.axes]
    assert len(axes) == 12
    framed = [ax for ax in axes if any(s.get_visible() for s in ax.spines.values())]
    assert len(framed) == 4  # the third image of every row, in both groups
    assert all(ax.spines["left"].get_edgecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=1e-2) for ax in framed)
    assert fig.subfigs[0].axes[0].get_ylabel() == "r0"
    single = P.nearest_images_grid(ds, idx.numpy())
    assert len([ax for sub in single.subfigs for ax in sub.axes]) == 6
    with pytest.raises(ValueError, match="row_classes"):
        P.nearest_images_grid(ds, idx, row_classes=[0])


def test_plot_accuracy_vs_k_and_training_history():
    fig = P.plot_accuracy_vs_k([1, 2, 4, 8], [0.9, 0.92, 0.95, 0.95], reference=0.96, reference_label="linear head")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [90, 92, 95, 95])
    assert ax.lines[1].get_ydata()[0] == pytest.approx(96)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["k-means classifier", "linear head"]
    with pytest.raises(ValueError, match="differ in length"):
        P.plot_accuracy_vs_k([1, 2], [0.5])
    hist = [
        {"epoch": 1, "loss": 2.0, "train_acc": 0.3, "lr": 0.1},
        {"epoch": 2, "loss": 1.0, "train_acc": 0.6, "lr": 0.1, "test_acc": 0.55},
    ]
    fig = P.plot_training_history(hist)
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 1.0])
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), [55.0])
    with pytest.raises(ValueError, match="empty"):
        P.plot_training_history([])


def test_plot_explanations_layout(ds):
    n = 3
    concepts = torch.randint(0, 4, (n, 4, 4))
    attribution = torch.randn(n, 4, 4)
    keep = attribution.clone()
    fig = P.plot_explanations(
        ds.images[:n],
        {"concepts": concepts, "attribution": attribution},
        parts=ds.parts[:n],
        part_names=ds.part_names,
        row_labels=["a", "b", "c"],
        panel_titles={"attribution": ["x", "y", "z"]},
        n_concepts=4,
    )
    assert len(fig.axes) == n * 4 + 1  # + the colour bar of the one heat-map column
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "parts", "concepts", "attribution"]
    assert fig.axes[4].get_ylabel() == "b" and fig.axes[7].get_xlabel() == "y"
    m = float(attribution.abs().max())
    assert fig.axes[3].images[-1].get_clim() == pytest.approx((-m, m))
    assert torch.equal(attribution, keep)
    with pytest.raises(ValueError, match="column 'bad'"):
        P.plot_explanations(ds.images[:n], {"bad": torch.zeros(2, 4, 4)})


def test_plot_explanations_keeps_panels_wide_under_legends_and_colour_bars(ds):
    # the explorer's static figure: 4 rows x 3 maps, legends and a colour bar under the columns
    n = 4
    names = [f"C{k}: background 52 %, head 37 %" for k in range(8)]
    fig = P.plot_explanations(
        ds.images[:n], {"concepts": torch.randint(0, 8, (n, 8, 8)), "attribution": torch.randn(n, 8, 8)},
        parts=ds.parts[:n], part_names=ds.part_names, row_labels=list("abcd"),
        panel_titles={"attribution": ["x"] * n}, n_concepts=8, size=2.2, with_image=False,
        concept_names=names, title="t",
    )
    # the height holds the legends: the square panels are as wide as the figure allows
    assert _narrowest_panel_px(fig) >= 190
    width = [ax.get_position().width * fig.get_figwidth() for ax in fig.axes if ax.images]
    assert min(width) >= 0.9 * 2.2


def _fake_registration(blocks: int = 4, size: int = 16) -> dict:
    from types import SimpleNamespace

    reg = {}
    for b in range(blocks):
        s, g = 2 ** (b + 1), size // 2 ** (b + 1)
        centres = (lambda s=s, g=g: (torch.arange(g) * s + s / 2 - 0.5, torch.arange(g) * s + s / 2 - 0.5))
        reg[f"B{b + 1}"] = SimpleNamespace(stride=(s, s), offset=(s / 2 - 0.5, s / 2 - 0.5), grid_size=(g, g),
                                           centres=centres)
    return reg


def test_plot_block_centres_wraps_into_a_grid(ds):
    reg = _fake_registration()
    fig = P.plot_block_centres(ds.images[0], reg)
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split(":")[0] for ax in panels] == ["B1", "B2", "B3", "B4"]
    # default two per row: a 2 x 2 grid, every panel wider than 160 px on a 736 px column
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 2
    assert len({round(ax.get_position().x0, 3) for ax in panels}) == 2
    assert _narrowest_panel_px(fig) >= 170
    assert len(fig.legends) == 1  # one legend, under the grid
    row = P.plot_block_centres(ds.images[0], reg, ncols=4)
    assert len({round(ax.get_position().y0, 3) for ax in row.axes if ax.images}) == 1
    odd = P.plot_block_centres(ds.images[0], _fake_registration(3), ncols=2)
    assert sum(ax.get_visible() and ax.axison for ax in odd.axes) == 3  # the fourth cell is switched off
    with pytest.raises(ValueError, match="ncols must be a positive"):
        P.plot_block_centres(ds.images[0], reg, ncols=0)


# ---------------------------------------------------------------- chapters 3-4: contributions, block scaling, patches, grids
def test_plot_concept_contributions_bars_and_sum():
    c = torch.tensor([0.5, -0.25, 1.0])
    fig = P.plot_concept_contributions(c, score=1.25, title="t")
    ax = fig.axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([0.5, -0.25, 1.0])
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "sum = 1.250" in texts and "score = 1.250" in texts
    with pytest.raises(ValueError, match="3 entries"):
        P.plot_concept_contributions(c, concept_names=["a"])


def test_plot_block_scaling_shares():
    fig = P.plot_block_scaling({"B3": 1.0, "B4": 3.0}, {"B3": 1.0, "B4": 1.0})
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == pytest.approx([0.25, 0.75, 0.5, 0.5])
    with pytest.raises(ValueError, match="same blocks"):
        P.plot_block_scaling({"B3": 1.0}, {"B4": 1.0})


def test_plot_block_grids_nested_cells(ds):
    grids = {"B1": (8, 8), "B2": (4, 4), "B4": (1, 1)}
    fig = P.plot_block_grids(ds.images[0], grids, point=(3.0, 13.0))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["B1: 8x8 grid", "B2: 4x4 grid", "B4: 1x1 grid"]
    # panel j outlines its own cell and those of the coarser blocks: 3, 2, 1 rectangles
    assert [len(ax.patches) for ax in axes] == [3, 2, 1]
    r = axes[0].patches[0]  # B1's cell holding pixel (3, 13) of a 16 px image: row 1, column 6
    assert (r.get_x(), r.get_y(), r.get_width()) == pytest.approx((12 - 0.5, 2 - 0.5, 2.0))


def test_plot_concept_patches_rows_and_boxes():
    from kmexplain_utils.concepts import ConceptModel
    from kmexplain_utils.config import get_profile
    from kmexplain_utils.chapters.models import build_model

    train = make_parts(16, image_size=32, seed=0)
    torch.manual_seed(0)
    model = build_model(get_profile("smoke"), 8).eval()
    cm = ConceptModel(3, level="B34", positions_per_image=4, device="cpu").fit(model, train.images)
    fig = P.plot_concept_patches(train, cm, k=4)
    axes = np.asarray(fig.axes).reshape(3, 4)
    assert [axes[r, 0].get_ylabel() for r in range(3)] == ["concept 0", "concept 1", "concept 2"]
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 12 and all(len(ax.patches) == 1 for ax in shown)
    # every panel is the same square window (context x stride), also for a patch at the border:
    # the panels keep their size on the page (issue 25: no panel under 160 px)
    spans = {(round(np.ptp(ax.get_xlim()), 6), round(np.ptp(ax.get_ylim()), 6)) for ax in shown}
    assert len(spans) == 1 and len(set(next(iter(spans)))) == 1, spans
    fig.canvas.draw()
    widths = {round(ax.get_window_extent().width, 3) for ax in shown}
    assert len(widths) == 1, widths


def _qualitative_examples(n: int = 3, levels=("B4", "B34", "B234", "B1234", "B4@B234-grid")) -> dict:
    """Showcase maps shaped like run_evaluation's: concept maps per level, attributions per "level/method"."""
    g = np.random.default_rng(0)
    maps = lambda: {lv: g.integers(0, 4, (n, 8, 8)) for lv in levels}  # noqa: E731
    atts = {f"{lv}/kmeans": g.random((n, 8, 8)) for lv in levels}
    atts.update({k: g.random((n, 8, 8)) for k in ("B4/cam", "B3/gradcam", "pixel/occlusion", "pixel/random")})
    return {"images": g.random((n, 3, 8, 8)).astype(np.float32), "parts": g.integers(0, 3, (n, 8, 8)),
            "concept_maps": maps(), "concept_parts": maps(), "attributions": atts}


def _grids(fig) -> list[tuple[str, list[list]]]:
    """(section title, rows of the axes left in the grid, left to right) for every sub-figure."""
    out = []
    for sub in fig.subfigs:
        rows: dict[float, list] = {}
        for ax in sub.axes:
            rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
        ordered = [sorted(r, key=lambda a: a.get_position().x0) for _, r in sorted(rows.items(), reverse=True)]
        out.append((sub.get_suptitle(), ordered))
    return out


@pytest.mark.parametrize("max_images", [1, 2, 3])
def test_plot_qualitative_one_column_per_image_one_row_per_map(max_images):
    ex = _qualitative_examples()
    n_att = len(ex["attributions"])
    fig = P.plot_qualitative(ex, max_images=max_images)
    assert isinstance(fig, Figure)
    grids = _grids(fig)
    labels = []
    for name, rows in grids:
        assert all(len(r) == max_images for r in rows), name  # one column per image shown
        assert all(ax.images for r in rows for ax in r)
        labels += [row[0].get_ylabel() for row in rows]
        assert all(not ax.get_ylabel() for r in rows for ax in r[1:])  # row labels once, on the left
    for i, ax in enumerate(grids[0][1][0]):  # the first row: image i in column i
        np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), ex["images"][i].transpose(1, 2, 0),
                                   atol=1e-6)
    # every map of every level and method is shown, exactly once, after the images
    assert len(labels) == len(set(labels)) == 1 + 1 + 5 + n_att
    assert labels[:2] == ["image", "parts"]
    assert {t for t in labels if t.startswith("concepts")} == {
        "concepts\nB4", "concepts\nB34", "concepts\nB234", "concepts\nB1234", "concepts\nB4@B234 grid"}
    assert {"k-means\nB4", "k-means\nB234", "CAM", "Grad-CAM\nB3", "occlusion", "random\nmap"} <= set(labels)
    sections = [name for name, _ in grids]
    assert sections[0] == "Test images" and sections[1].startswith("Concept maps")
    assert sections[2:] == ["k-means attribution maps", "Baseline attribution maps"]
    w, h = fig.get_size_inches()
    assert w == pytest.approx(1.9 * max_images + 1.1)
    assert h > 1.9 * (2 + 5 + n_att)


def test_plot_qualitative_shows_at_most_three_images_and_checks_its_input():
    fig = P.plot_qualitative(_qualitative_examples(n=6))
    assert {len(r) for _, rows in _grids(fig) for r in rows} == {3}
    fig.canvas.draw()  # every panel at least 160 px in a 736 px text column (the book's rule)
    from kmexplain_utils.chapters.figure_log import image_panel_fractions

    natural = fig.get_tightbbox().width * fig.dpi
    assert min(image_panel_fractions(fig)) * min(736, natural) >= 160
    plain = _qualitative_examples(n=2, levels=("B4",))  # concept maps without their part colours, no baselines
    del plain["concept_parts"]
    plain["attributions"] = {"B4/kmeans": plain["attributions"]["B4/kmeans"]}
    grids = _grids(P.plot_qualitative(plain))
    assert [name for name, _ in grids] == ["Test images", "Concept maps", "k-means attribution maps"]
    assert [[r[0].get_ylabel() for r in rows] for _, rows in grids] == [["image"], ["parts", "concepts\nB4"],
                                                                        ["k-means\nB4"]]
    with pytest.raises(ValueError, match="no examples"):
        P.plot_qualitative({})
    with pytest.raises(ValueError, match="max_images"):
        P.plot_qualitative(plain, max_images=0)


def test_plot_level_maps_draws_registered_positions_at_image_size():
    """A 4 x 4 map on a 64 px image: position i is centred on pixel 16 i, so the first column
    covers pixels 0..7 (8 px), inner columns 16 px and the last 24 px -- not four 16 px cells."""
    x = torch.rand(1, 3, 64, 64)
    parts = torch.zeros(1, 64, 64, dtype=torch.long)
    cols = torch.arange(4).repeat(4, 1)  # label = column index
    fig = P.plot_level_maps(x, parts, ["bg", "a"], {"B4": cols[None]}, 4)
    ax = fig.axes[1]  # row B4, the only image
    shown = np.asarray(ax.images[0].get_array())[..., :3]
    assert shown.shape == (64, 64, 3)
    colors = np.asarray(P.concept_colors(4))[:, :3]
    drawn = np.argmin(((shown[0][:, None, :] - colors[None]) ** 2).sum(-1), axis=1)  # label per column
    widths = np.bincount(drawn, minlength=4).tolist()
    assert widths == [8, 16, 16, 24]  # the cell convention would give [16, 16, 16, 16]
    from kmexplain_utils.resample import infer_geometry, resample_labels
    expected = resample_labels(cols, infer_geometry((4, 4), (64, 64)), (64, 64)).numpy()
    np.testing.assert_allclose(shown, colors[expected], atol=1e-6)
    assert np.all(drawn[:8] == 0) and np.all(drawn[8:24] == 1)
