"""Concept colours, concept legends, the drawn map at image size and the norm strip (issue 25)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from kmexplain_utils import plotting  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rgb_set(colors):
    return {tuple(round(float(v), 3) for v in c) for c in colors}


def test_concepts_never_share_a_part_colour():
    parts = _rgb_set(plotting.part_colors(len(plotting._QUALITATIVE) + 1))  # background + every part
    concepts = _rgb_set(plotting.concept_colors(len(plotting.CONCEPT_PALETTE)))
    assert len(concepts) == len(plotting.CONCEPT_PALETTE), "two concepts share a colour"
    assert not parts & concepts


def test_concept_colours_are_stable_in_k():
    assert plotting.concept_colors(3) == plotting.concept_colors(10)[:3]
    with pytest.raises(ValueError, match="k must be >= 0"):
        plotting.concept_colors(-1)


def test_one_colormap_of_each_kind():
    assert plotting.SEQUENTIAL_CMAP == plotting.HEATMAP_CMAP
    fig = plotting.show_heatmap(None, torch.tensor([[-1.0, 3.0], [0.5, 2.0]]), diverging=True)
    im = fig.axes[0].images[-1]
    assert im.get_cmap().name == plotting.DIVERGING_CMAP
    lo, hi = im.get_clim()
    assert lo == -hi == -3.0  # centred at 0


def test_concept_names_are_the_majority_part_with_its_share():
    names_p = ["background", "head", "body"]
    parts = torch.zeros(1, 4, 4, dtype=torch.long)
    parts[0, :2, :] = 2  # top half: body
    parts[0, 1, 0] = 1  # one head pixel in it
    kappa = torch.zeros(1, 4, 4, dtype=torch.long)
    kappa[0, :2, :] = 1  # concept 1 = the top half: 7 body + 1 head
    names = plotting.concept_names(kappa, parts, names_p, 3)
    assert names == ["C0: background 100 %", "C1: body 88 %", "C2: absent"]
    # a second part holding at least 20 % of the concept's pixels is named too
    parts[0, 0, :3] = 1  # now 4 head pixels of 8
    assert plotting.concept_names(kappa, parts, names_p, 3)[1] in {"C1: body 50 %, head 50 %",
                                                                   "C1: head 50 %, body 50 %"}


def test_concept_names_count_the_map_as_drawn():
    parts = torch.zeros(1, 64, 64, dtype=torch.long)
    parts[0, 40:, :] = 1  # the last 24 rows: what the last row of 4 x 4 positions covers when drawn
    kappa = torch.zeros(1, 4, 4, dtype=torch.long)
    kappa[0, -1, :] = 1
    assert plotting.concept_names(kappa, parts, ["background", "tail"], 2) == [
        "C0: background 100 %", "C1: tail 100 %"]


def test_concept_names_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="same images"):
        plotting.concept_names(torch.zeros(2, 2, 2, dtype=torch.long), torch.zeros(1, 4, 4, dtype=torch.long),
                               ["bg"], 1)
    with pytest.raises(ValueError, match="concept labels"):
        plotting.concept_names(torch.full((1, 2, 2), 3), torch.zeros(1, 4, 4, dtype=torch.long), ["bg"], 2)
    with pytest.raises(ValueError, match="part_names"):
        plotting.concept_names(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 4, 4, dtype=torch.long),
                               ["bg"], 1)


def test_drawn_map_mean_is_not_the_grid_mean_at_registered_positions():
    grid = torch.zeros(4, 4)
    grid[-1, :] = 1.0  # only the last row of positions is 1
    drawn = plotting.drawn_map(grid, (64, 64))
    assert drawn.shape == (64, 64)
    # stride 16, offset 0: the last row of positions covers rows 40..63 (24 px), not 16
    assert drawn.mean().item() == pytest.approx(24 / 64)
    assert grid.mean().item() == pytest.approx(16 / 64)
    assert torch.equal(plotting.drawn_map(grid, (4, 4)), grid.double())
    with pytest.raises(ValueError, match="interpolation"):
        plotting.drawn_map(grid, (8, 8), interpolation="cubic")


def test_plot_explanations_names_the_concepts_in_a_legend():
    x = torch.rand(2, 3, 8, 8)
    kappa = torch.randint(0, 3, (2, 2, 2))
    parts = torch.randint(0, 3, (2, 8, 8))
    names = plotting.concept_names(kappa, parts, ["background", "head", "body"], 3)
    fig = plotting.plot_explanations(x, {"concepts": kappa}, parts=parts, part_names=["background", "head", "body"],
                                     n_concepts=3, concept_names=names)
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert set(names) <= set(texts) and "head" in texts
    fig2 = plotting.plot_explanations(x, {"B4": kappa, "B34": kappa}, concept_names={"B4": names})
    legend_texts = [t.get_text() for ax in fig2.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend_texts == names
    with pytest.raises(ValueError, match="not one of"):
        plotting.plot_explanations(x, {"B4": kappa}, concept_names={"B5": names})


def test_image_heatmap_grid_draws_blocks_by_default():
    x = torch.rand(1, 3, 8, 8)
    heat = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    fig = plotting.image_heatmap_grid(x, heat, diverging=True)
    drawn = fig.axes[0].images[-1].get_array()
    assert set(float(v) for v in torch.as_tensor(drawn.data).flatten().tolist()) == {0.0, 1.0, 2.0, 3.0}


def test_plot_norm_strip_marks_each_group():
    Z = torch.rand(40, 5) + 0.1
    y = torch.arange(40) % 2
    groups = {"top": torch.tensor([[0, 2], [1, 3]]), "near the mean": torch.tensor([[4, 6], [5, 7]])}
    fig = plotting.plot_norm_strip(Z, y, groups, ["a", "b"], title="t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["training images of the class", "top", "near the mean"]


def test_plot_explanations_can_leave_out_the_plain_image():
    x = torch.rand(2, 3, 8, 8)
    parts = torch.randint(0, 3, (2, 8, 8))
    maps = {"m*": torch.randn(2, 2, 2), "Δ": torch.randn(2, 2, 2)}
    fig = plotting.plot_explanations(x, maps, parts=parts, part_names=["bg", "a", "b"], with_image=False)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["parts", "m*", "Δ"]
    with pytest.raises(ValueError, match="nothing to draw"):
        plotting.plot_explanations(x, {}, with_image=False)


def test_plot_level_maps_draws_concepts_alone_with_one_legend_per_level():
    x = torch.rand(3, 3, 8, 8)
    parts = torch.randint(0, 3, (3, 8, 8))
    maps = {"B4": torch.randint(0, 4, (3, 2, 2)), "B34": torch.randint(0, 4, (3, 4, 4))}
    names = {lv: plotting.concept_names(m, parts, ["bg", "a", "b"], 4) for lv, m in maps.items()}
    fig = plotting.plot_level_maps(x, parts, ["bg", "a", "b"], maps, 4, concept_names=names,
                                   col_labels=["x", "y", "z"])
    titles = [ax.get_legend().get_title().get_text() for ax in fig.axes if ax.get_legend()]
    assert titles == ["parts", "B4 concepts", "B34 concepts"]
    concept_ax = fig.axes[3]  # row B4, first image: one image layer only (no photo underneath)
    assert len(concept_ax.images) == 1
    rgba = concept_ax.images[0].get_array()
    expected = {tuple(round(v, 3) for v in c) for c in plotting.concept_colors(4)}
    seen = {tuple(round(float(v), 3) for v in px[:3]) for px in rgba.reshape(-1, rgba.shape[-1])}
    assert seen <= expected  # exactly the concept colours, nothing blended
    with pytest.raises(ValueError, match="col_labels"):
        plotting.plot_level_maps(x, parts, ["bg", "a", "b"], maps, 4, col_labels=["x"])


def test_colour_maps_come_from_the_two_constants():
    """No module or chapter names a colour map of its own: DIVERGING_CMAP and HEATMAP_CMAP only."""
    import re
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parents[1]
    literal = re.compile(r"""(?:cmap\s*=|colormaps\[)\s*['"](?!(?:gray|tab20)['"])([\w.]+)['"]""")
    offenders = []
    for path in sorted((root / "kmexplain_utils").rglob("*.py")):
        for m in literal.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(root)}: {m.group(0)}")
    for path in sorted((root / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                offenders += [f"{path.name}: {m.group(0)}" for m in literal.finditer(cell.source)]
    assert not offenders, offenders
    assert literal.search('ax.imshow(x, cmap="viridis")')  # the check can fail


def test_concept_attribute_shares_say_which_heads_a_concept_covers():
    names_p = ["background", "head", "body"]
    attrs = {0: {"head": "red"}, 1: {"head": "blue"}}.__getitem__
    parts = torch.zeros(3, 4, 4, dtype=torch.long)
    parts[:, :2, :2] = 1  # a 2x2 head in every image
    kappa = torch.zeros(3, 4, 4, dtype=torch.long)
    kappa[:, :2, :] = 1  # concept 1: the top half, 4 head + 4 background pixels per image
    labels = torch.tensor([1, 1, 0])  # two blue heads, one red
    out = plotting.concept_attribute_shares(kappa, parts, labels, names_p, 3, attrs)
    assert set(out) == {1}  # concept 0 holds no head pixel, concept 2 is absent
    part, value, share = out[1]
    assert (part, value) == ("head", "blue") and share == pytest.approx(2 / 3)
    # a part under min_share of the concept's pixels describes nothing
    assert plotting.concept_attribute_shares(kappa, parts, labels, names_p, 3, attrs,
                                             min_share=0.6) == {}
    with pytest.raises(ValueError, match="same images"):
        plotting.concept_attribute_shares(kappa, parts, labels[:2], names_p, 3, attrs)
    with pytest.raises(ValueError, match="min_share"):
        plotting.concept_attribute_shares(kappa, parts, labels, names_p, 3, attrs, min_share=0)


def test_concept_contributions_leave_room_for_the_sum_above_the_bars():
    fig = plotting.plot_concept_contributions(torch.tensor([1.0, 10.0, -2.0]), score=9.0)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert hi >= 10.0 + 0.25 * (hi - lo) * 0.9  # the text sits in the top quarter, above the bars
    assert "score = 9.000" in ax.texts[0].get_text()
