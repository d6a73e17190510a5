"""The book's categorical palettes stay distinguishable under simulated colour-vision deficiencies.

Parts, concepts and methods are told apart by colour alone in many figures. Each palette's first
colours (as many as the quick and paper profiles draw in one figure) must keep a minimum CIEDE2000
distance between every pair, for normal vision and for deuteranopia, protanopia and tritanopia
simulated with the matrices of Machado, Oliveira & Fernandes (2009) at severity 1.0; and no concept
may be drawn in a part's colour.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from kmexplain_utils import plotting

skimage_color = pytest.importorskip("skimage.color")

#: Machado, Oliveira & Fernandes (2009), "A Physiologically-based Model for Simulation of Color
#: Vision Deficiency", IEEE TVCG 15(6):1291-1298, table of matrices, severity 1.0; they act on
#: linear RGB. Each row sums to 1, so white and black stay white and black.
MACHADO_2009 = {
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779],
                            [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
VISIONS = ["normal", *MACHADO_2009]
MIN_DELTA_E = 10.0  # CIEDE2000; about 2.3 is a just-noticeable difference, 10 is clearly apart
N_PARTS = 8  # labels 0..7: the background grey and the seven Okabe-Ito colours (quick: 6 labels)
N_CONCEPTS = 10  # quick profile: 8 concepts, paper profile: 10
N_METHODS = 8


def simulate_cvd(rgb: np.ndarray, deficiency: str) -> np.ndarray:
    """Colours as seen with a colour-vision deficiency (Machado et al. 2009, severity 1.0).

    Parameters
    ----------
    rgb : (..., 3) array
        sRGB colours in ``[0, 1]``.
    deficiency : {"normal", "deuteranopia", "protanopia", "tritanopia"}

    Returns
    -------
    (..., 3) array
        The simulated sRGB colours in ``[0, 1]``: sRGB is linearised (IEC 61966-2-1), multiplied by
        the deficiency's matrix, clipped to the gamut and encoded back.

    References
    ----------
    G. M. Machado, M. M. Oliveira and L. A. F. Fernandes, "A Physiologically-based Model for
    Simulation of Color Vision Deficiency", IEEE Transactions on Visualization and Computer
    Graphics 15(6), 2009, pp. 1291-1298.
    """
    rgb = np.asarray(rgb, dtype=float)
    if deficiency == "normal":
        return rgb
    if deficiency not in MACHADO_2009:
        raise ValueError(f"unknown deficiency {deficiency!r}; use one of {VISIONS}")
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    seen = np.clip(linear @ MACHADO_2009[deficiency].T, 0.0, 1.0)
    return np.where(seen <= 0.0031308, 12.92 * seen, 1.055 * seen ** (1 / 2.4) - 0.055)


def closest_pair(colors, deficiency: str) -> tuple[float, int, int]:
    """Smallest CIEDE2000 distance between two of ``colors`` as seen with ``deficiency``."""
    lab = skimage_color.rgb2lab(simulate_cvd(np.array([to_rgb(c) for c in colors]), deficiency)[None])[0]
    return min((float(skimage_color.deltaE_ciede2000(lab[i], lab[j])), i, j)
               for i, j in itertools.combinations(range(len(colors)), 2))


def palette_problems(name: str, colors) -> list[str]:
    out = []
    for vision in VISIONS:
        d, i, j = closest_pair(colors, vision)
        if d < MIN_DELTA_E:
            out.append(f"{name}: colours {i} {colors[i]} and {j} {colors[j]} are {d:.1f} apart "
                       f"(CIEDE2000) for {vision} (< {MIN_DELTA_E})")
    return out


def test_the_simulation_is_machados():
    white, black = np.ones(3), np.zeros(3)
    for deficiency in MACHADO_2009:
        np.testing.assert_allclose(MACHADO_2009[deficiency].sum(axis=1), 1.0, atol=2e-6)
        np.testing.assert_allclose(simulate_cvd(white, deficiency), white, atol=1e-5)
        np.testing.assert_allclose(simulate_cvd(black, deficiency), black)
    red, green = np.array([0.85, 0.35, 0.1]), np.array([0.45, 0.55, 0.1])
    assert closest_pair([red, green], "normal")[0] > 40
    # red and green collapse for the red-green deficiencies, and stay apart for tritanopia
    assert closest_pair([red, green], "deuteranopia")[0] < 15
    assert closest_pair([red, green], "protanopia")[0] < 15
    assert closest_pair([red, green], "tritanopia")[0] > 30
    with pytest.raises(ValueError, match="unknown deficiency"):
        simulate_cvd(white, "achromatopsia")


def test_the_check_can_fail():
    """seaborn's default palette (the book's old line colours) is not colour-blind safe."""
    import seaborn as sns

    problems = palette_problems("seaborn deep", [tuple(c) for c in sns.color_palette("deep")])
    assert any("protanopia" in p for p in problems) and any("deuteranopia" in p for p in problems), problems


@pytest.mark.parametrize("name, colors", [
    ("parts (label 0 = background)", lambda: plotting.part_colors(N_PARTS)),
    ("concepts", lambda: plotting.concept_colors(N_CONCEPTS)),
    ("methods and levels", lambda: plotting.method_colors(N_METHODS)),
])
def test_palette_is_distinguishable_with_every_vision(name, colors):
    assert not palette_problems(name, colors())


def test_no_concept_is_drawn_in_a_part_colour():
    concepts, parts = plotting.concept_colors(N_CONCEPTS), plotting.part_colors(N_PARTS)
    assert not set(concepts) & set(parts)
    lab_c = skimage_color.rgb2lab(np.array(concepts)[None])[0]
    lab_p = skimage_color.rgb2lab(np.array(parts)[None])[0]
    d = min(float(skimage_color.deltaE_ciede2000(c, p)) for c in lab_c for p in lab_p)
    assert d > 5.0, f"a concept colour is {d:.1f} (CIEDE2000) from a part colour: it would read as that part"


def test_the_book_style_uses_the_method_colours():
    import matplotlib as mpl

    with mpl.rc_context():
        plotting.set_book_style()
        cycle = [to_rgb(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
        assert cycle == plotting.method_colors(len(cycle)) and len(cycle) == N_METHODS
        assert mpl.rcParams["savefig.facecolor"] == "white" and mpl.rcParams["figure.facecolor"] == "white"
