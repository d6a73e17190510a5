"""Generated part-based creatures: an offline benchmark with ground-truth parts.

Every image shows one "creature" made of five part types on a textured, noisy
background with distractor shapes. The class is fixed by three part
attributes, so a good explanation must look at the right *parts*, and the
per-pixel part label map says exactly where they are. Two designs of the
generator exist (``make_parts(..., design=...)``, default :data:`DEFAULT_DESIGN`);
they share the scenes (labels, poses, shapes of body and legs, marking phase,
distractor places) and differ in how a part looks.

Parts (label map values)
------------------------
=====  ==========  ===========================================  ====================================
label  part        design ``v2`` (second edition)               design ``v3`` (third edition)
=====  ==========  ===========================================  ====================================
0      background  smooth random colour field + pixel noise     smooth tinted field + noise
                   + 0-3 distractors (head/tail/body colours)   + 0-3 distractors (palette colours;
                                                                squares, rings, triangles: no disc)
1      body        ellipse, colour from a palette without red   ellipse, palette colour (a nuisance)
                   and blue (a nuisance)
2      head        disc with a dark eye; **red or blue**        disc with an eye; **colour from the
                                                                warm or the cool half of the palette**
3      tail        **pointed magenta triangle or round cyan     **pointed: a long thin spike (warm
                   disc**                                       colour), or round: a disc (cool)**
4      legs        2 or 4 bars, the body's colour darkened      2 or 4 bars, palette colour
5      marking     **stripes or spots**, the body's colour      **stripes or staggered spots**,
                   darkened                                     palette colour lighter or darker
                                                                than the body
=====  ==========  ===========================================  ====================================

In design ``v3`` the six colours of a creature (body, head, eye, tail, legs,
marking) are six *different* colours of one palette of eight
(:data:`PALETTE_NAMES`: four warm, four cool, light and dark in each half), and
the distractors (squares, rings and triangles: never a filled disc, the shape
of the head and of the round tail) draw from the same palette. The head's
colour is drawn from the half its class names (``warm``/``cool``), the tail's
from the half its shape goes with (pointed: warm, round: cool), the body's from
the rest; so, over the classes,
the head, the tail and the body take every palette colour equally often (the
marking, which must differ from the body by 0.2 in luminance, and the legs and
eye, which take what is left, a little less evenly). Colour therefore says
nothing about *which part* a pixel belongs to: a part is found by its shape,
texture and place on the creature; the class is then read from that part
(the hue half of the head, the shape and hue half of the tail, the marking's
pattern).

The other parts' colours are not independent of the class, though: they come
from the six colours the head and the tail leave, so a creature whose head and
tail are both warm has a cool body two times in three. Measured on 8,192
training scenes (seed 0), the share of warm bodies is 32 to 34 % in the two
warm-head pointed-tail classes, 49 to 51 % in the four mixed ones and 63 to 67 %
in the two cool-head round-tail ones; the legs, the marking and the eye lean
the same way (27 to 81 %). This is a weak cue to the head's and the tail's hue
half, a confound that an explanation pointing at the body may be reading. A
fair coin for the body's hue group removes it from the body (48 to 52 %) but
cost the marking's learnability (94.3 and 96.0 % test accuracy on model seeds
2 and 1 at the quick recipe, against 96.4 and 97.3 %); with a coin for the
marking, the legs and the eye too, 92.8 and 90.8 %. Both are left for a later
edition.

Classes (``label = 4 * head + 2 * tail + marking``)
---------------------------------------------------
=====  ====================  ====================  ============  =======  =======
label  name in v2            name in v3            head v2 / v3  tail     marking
=====  ====================  ====================  ============  =======  =======
0      red-pointed-striped   warm-pointed-striped  red / warm    pointed  striped
1      red-pointed-spotted   warm-pointed-spotted  red / warm    pointed  spotted
2      red-round-striped     warm-round-striped    red / warm    round    striped
3      red-round-spotted     warm-round-spotted    red / warm    round    spotted
4      blue-pointed-striped  cool-pointed-striped  blue / cool   pointed  striped
5      blue-pointed-spotted  cool-pointed-spotted  blue / cool   pointed  spotted
6      blue-round-striped    cool-round-striped    blue / cool   round    striped
7      blue-round-spotted    cool-round-spotted    blue / cool   round    spotted
=====  ====================  ====================  ============  =======  =======

Classes ``c`` and ``c + 4`` differ only in the head (4.9 % of the pixels on
average in both designs) and classes ``c`` and ``c + 2`` only in the tail (2.0 %
in v2, 2.2 % in v3): fine spatial detail matters. In v2 distractor shapes are
drawn in a head colour half of the time and a tail colour a quarter of the
time, so "is there red somewhere" is not enough; in v3 they are drawn from the
palette, so "is there a warm colour somewhere" is not enough either.

How well colour alone finds the parts (:func:`colour_baseline_ami`: k-means on
the RGB values of the object pixels of the first 200 test images at 64 px,
seed 0, K = 5, 6, 7, 8, against the part labels): AMI 0.58, 0.54, 0.58, 0.62 in
v2 (each part has its own colours) and 0.018, 0.019, 0.018, 0.023 in v3.

Learnability (test accuracy on 800 test images; one thread per training on
this project's shared 2-core machine, CPU time of the training alone). In v2
the tail's colour goes with its shape: with the tail in the body's colour
(shape alone), the network learned head colour (99.8 %) and marking (100 %)
but stayed at chance on the tail (52 %, whatever the schedule, width or
augmentation); with the tail colours it reaches 98.5 % (seed 0, the second
edition's quick recipe: width-16 TinyResNet, 64 px, 4,000 training images, 10
epochs, batches of 64, 65 s of CPU time) and 99.5 % with 8,000 images, 6
epochs, batches of 32. Design v3 is harder. With the second edition's recipe it
reached 83 to 89 % (the network underfits: 95 to 97 % on its own training
images). More images matter more than more epochs (4,000 x 12 epochs in
batches of 32 overfits: 99.1 % on the training images, 93.0 % on the test
images, model seed 2), and more steps more than a larger learning rate. With
the spots of the marking on a square lattice, 8,000 images x 6 epochs in
batches of 32 gave 96.5 / 95.8 / **92.9 %** (data seed 0, model seeds 0 / 1 /
2), the marking lagging (94.9 % on model seed 2): a column of spots reads as a
beaded stripe. With the spots staggered (every other row shifted by half a
period), the same recipe gives **98.1 / 97.3 / 96.4 %** (head 99.4 / 99.0 /
99.5 %, tail 98.4 / 98.1 / 97.8 %, marking 100 / 99.6 / 98.8 %; 77 to 80 s of
CPU time, 1.3x the old recipe), and that is the quick profile's recipe since
the third edition (:func:`kmexplain_utils.config.get_profile`); 8,000 x 5 gives
93.6 % on model seed 2. A thicker spike (half-width 0.45 at the base) or a ring
for the round tail did not help (87.4 % and 94.8 %, seed 0, against 88.8 % and
93.8 %). An earlier v3 with random colours for every part and the classes
carried by shape alone (round or square head, spike or disc tail) stayed at
chance on head and tail (24.5 % and 28.4 % overall, seeds 0 and 1). ``v3`` is
the default (:data:`DEFAULT_DESIGN`); ``v2`` is kept, bit for bit, for the
comparison in the data chapter.

Nuisances: position (centre within +-0.12 of the half-width), scale (x0.88 to
x1.12), rotation (+-60 degrees), horizontal flip, body shape and colour, leg
count and length, stripe/spot phase and period, per-part colour jitter, global
brightness and per-channel gain, a smooth random background, uniform pixel
noise, and distractor shapes (background, label 0): discs, squares and
triangles in v2; squares, rings and triangles in v3.
The object covers 21 % of the image on average (15 % to 29 % in v3);
3.6 % of the objects touch the border in v2, 10.5 % in v3 (the longer spike).

Generation is vectorised in torch and deterministic: item ``i`` of a split
depends only on ``(seed, split, i // 256)``, so a smaller set is a prefix of a
larger one, and the same scene is rendered at any ``image_size``. Train and
test are drawn from disjoint seed streams. Labels come in blocks of eight
holding every class once, so any ``n`` divisible by 8 is exactly balanced.
The last two generated splits are kept in memory for the process (callers
get copies).

Interventions (:func:`intervene`): because a scene is a function of
``(seed, split, i // 256)``, any generated scene can be re-rendered with a part
removed (what lay behind it shows: the body, a distractor or the background),
an attribute swapped (head, tail, marking) or the distractors removed, with
every other parameter and the pixel noise identical: pixels whose paint does
not change are bit-identical to the original image, and the new part maps
come with it.

Measured on this project's shared 2-core machine (quick profile, seed 0):

- generating 4,000 + 800 images at 64 px takes 5.4 s of CPU time on one
  thread (v2; 19 s of wall time while the machine was overloaded, load 11);
  8,000 + 800 take 5.3 to 7.7 s (v3, load 2 to 10);
  400 + 160 images at 32 px (smoke) take 0.2 s;
- logistic regression on raw pixels vs the TinyResNet: measured in the
  data chapter (``book/00_data.ipynb``) on every build.

Example
-------
>>> from kmexplain_utils.data.parts import make_parts
>>> ds = make_parts(16, image_size=32, seed=0)
>>> tuple(ds.images.shape), tuple(ds.parts.shape), ds.part_names[2]
((16, 3, 32, 32), (16, 32, 32), 'head')
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import ImageSet

__all__ = [
    "ATTRIBUTE_PARTS",
    "CLASS_NAMES",
    "DEFAULT_DESIGN",
    "DESIGNS",
    "HEAD_COLORS",
    "HEAD_GROUPS",
    "MARKINGS",
    "NUISANCE_NAMES",
    "BODY_COLOR_NAMES",
    "PALETTE",
    "PALETTE_NAMES",
    "PART_NAMES",
    "REMOVABLE_PARTS",
    "SceneSource",
    "TAIL_SHAPES",
    "class_attributes",
    "class_names",
    "colour_baseline_ami",
    "intervene",
    "make_parts",
    "render_parts",
    "sample_scenes",
    "scene_nuisances",
]

PART_NAMES = ["background", "body", "head", "tail", "legs", "marking"]
#: Generator designs: ``"v2"`` (second edition: each part has its own colours) and ``"v3"``
#: (third edition: every part's colour is drawn from one shared palette, so a part is found by its
#: shape, texture and place, not its colour; the default since the third edition).
DESIGNS = ("v2", "v3")
DEFAULT_DESIGN = "v3"

# ---- design v2 (second edition): colour-coded parts
HEAD_COLORS = {"red": (0.86, 0.16, 0.14), "blue": (0.14, 0.34, 0.90)}
TAIL_SHAPES = ("pointed", "round")
# each tail type has its own colour: shape alone (in the body's colour) proved
# unlearnable from 4,000 images by a small ResNet (tail accuracy stayed at chance)
TAIL_COLORS = {"pointed": (0.78, 0.18, 0.62), "round": (0.12, 0.70, 0.78)}
MARKINGS = ("striped", "spotted")

# body colours (a nuisance): no red and no blue, so that the head colour is the cue
BODY_COLOR_NAMES = ("tan", "olive", "grey", "green", "yellow", "brown", "off-white")
#: The generator's nuisance variables exposed as ``ImageSet.attributes`` by :func:`make_parts`.
NUISANCE_NAMES = ("facing", "legs", "body_colour", "rotation_deg", "size", "position_x", "position_y")
_BODY_PALETTE = torch.tensor(
    [
        [0.80, 0.66, 0.42],  # tan
        [0.52, 0.56, 0.26],  # olive
        [0.62, 0.62, 0.60],  # grey
        [0.32, 0.62, 0.36],  # green
        [0.90, 0.80, 0.32],  # yellow
        [0.58, 0.38, 0.22],  # brown
        [0.86, 0.86, 0.80],  # off-white
    ]
)
_HEAD = torch.tensor(list(HEAD_COLORS.values()))
_TAIL = torch.tensor(list(TAIL_COLORS.values()))

# ---- design v3 (third edition): one shared palette; a part is found by shape, texture and place
#: The head attribute of design v3: the hue group of the head's colour.
HEAD_GROUPS = ("warm", "cool")
#: The shared palette of design v3 (four warm, then four cool colours, light and dark in each group):
#: every part's colour (and every distractor's) is drawn from it (see the module docstring).
PALETTE_NAMES = ("red", "orange", "yellow", "brown", "blue", "cyan", "violet", "teal")
#: The RGB values (in [0, 1]) of the shared palette of design v3, keyed by :data:`PALETTE_NAMES` in
#: that order: the first four are the warm half, the last four the cool half (before the per-part
#: jitter, brightness and gain of each image).
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.14),
    "orange": (0.95, 0.58, 0.14),
    "yellow": (0.94, 0.88, 0.30),
    "brown": (0.60, 0.36, 0.16),
    "blue": (0.14, 0.30, 0.88),
    "cyan": (0.24, 0.78, 0.84),
    "violet": (0.52, 0.30, 0.88),
    "teal": (0.14, 0.56, 0.62),
}
_PALETTE = torch.tensor([PALETTE[name] for name in PALETTE_NAMES])
_GROUP = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])  # 0 warm, 1 cool
_LUMA = _PALETTE @ torch.tensor([0.299, 0.587, 0.114])
# per scene, six distinct palette colours in this order (legs, tail, body, marking, head, eye)
_V3_SLOTS = ("legs", "tail", "body", "marking", "head", "eye")

#: The part that carries each class attribute (the same in both designs).
ATTRIBUTE_PARTS = {"head": "head", "tail": "tail", "marking": "marking"}
#: Parts that :func:`intervene` can remove (removing the body removes the marking painted on it).
REMOVABLE_PARTS = ("body", "head", "tail", "legs", "marking")

_CHUNK = 256  # items sharing one random stream; a multiple of the 8 classes
_SPLIT_CODES = {"train": 0, "test": 1}


def _check_design(design: str | None) -> str:
    design = DEFAULT_DESIGN if design is None else str(design)
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    return design


def _attribute_values(design: str) -> dict[str, tuple[str, ...]]:
    heads = tuple(HEAD_COLORS) if design == "v2" else HEAD_GROUPS
    return {"head": heads, "tail": TAIL_SHAPES, "marking": MARKINGS}


def class_names(design: str | None = None) -> list[str]:
    """The eight class names ``"<head>-<tail>-<marking>"`` of a design (label ``4 head + 2 tail + marking``).

    >>> class_names("v3")[:2]
    ['warm-pointed-striped', 'warm-pointed-spotted']
    """
    v = _attribute_values(_check_design(design))
    return [f"{h}-{t}-{m}" for h in v["head"] for t in v["tail"] for m in v["marking"]]


CLASS_NAMES = class_names(DEFAULT_DESIGN)


def class_attributes(label: int, design: str | None = None) -> dict[str, str]:
    """The part attributes that define a class, e.g. ``{"head": "red", "tail": "pointed", "marking": "striped"}``.

    Parameters
    ----------
    label : int
        Class index in ``[0, 8)``.
    design : {"v2", "v3"}, optional
        Generator design (default :data:`DEFAULT_DESIGN`): the head attribute is a colour
        (``"red"``/``"blue"``) in v2 and the hue group of its colour (``"warm"``/``"cool"``) in v3.
    """
    names = class_names(design)
    if not 0 <= int(label) < len(names):
        raise ValueError(f"label must be in [0, {len(names)}), got {label}")
    h, t, m = names[int(label)].split("-")
    return {"head": h, "tail": t, "marking": m}


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), _SPLIT_CODES[split], int(chunk), 0x6B6D6578]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _u(g: torch.Generator, n: int, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, *shape, generator=g)


def sample_scenes(n: int, g: torch.Generator, design: str | None = None) -> dict[str, torch.Tensor]:
    """Draw the parameters of ``n`` scenes (labels balanced in blocks of 8).

    All geometry is in *object units* (the body is about 2 units long) and
    image units (the image spans ``[-1, 1]``), so it does not depend on the
    image size. :func:`make_parts` always draws whole chunks of 256 scenes.

    Parameters
    ----------
    n : int
        Number of scenes.
    g : torch.Generator
        Source of randomness (advanced by the call).
    design : {"v2", "v3"}, optional
        Generator design, default :data:`DEFAULT_DESIGN`. A v3 scene has the key
        ``"part_colors"`` (which :func:`render_parts` uses to tell the designs apart).

    Returns
    -------
    dict of str -> tensor
        One row per scene: ``label``, the attributes ``head``, ``tail``, ``marking`` (0/1), pose,
        shape, colour, background, distractor and noise parameters.
    """
    design = _check_design(design)
    n_blocks = -(-n // 8)
    labels = torch.stack([torch.randperm(8, generator=g) for _ in range(n_blocks)]).reshape(-1)[:n]
    p: dict[str, torch.Tensor] = {"label": labels}
    p["head"] = labels // 4
    p["tail"] = (labels // 2) % 2
    p["marking"] = labels % 2
    # pose
    p["center"] = _u(g, n, -0.12, 0.12, 2)
    p["scale"] = 0.52 * _u(g, n, 0.88, 1.12)
    p["angle"] = _u(g, n, -math.pi / 3, math.pi / 3)
    p["flip"] = torch.rand(n, generator=g) < 0.5
    # shape nuisances
    p["body_a"] = _u(g, n, 0.90, 1.02)
    p["body_b"] = _u(g, n, 0.60, 0.70)
    p["head_r"] = _u(g, n, 0.44, 0.52)
    p["n_legs4"] = torch.rand(n, generator=g) < 0.5
    p["leg_len"] = _u(g, n, 0.30, 0.48)
    p["period"] = _u(g, n, 0.50, 0.60)  # stripe / spot period
    p["phase"] = _u(g, n, 0.0, 1.0, 2)
    k = 3  # distractor slots
    if design == "v3":
        return _sample_v3_rest(p, n, k, g)
    # colours
    p["body_index"] = torch.randint(len(_BODY_PALETTE), (n,), generator=g)
    p["body_color"] = _BODY_PALETTE[p["body_index"]] + 0.05 * torch.randn(n, 3, generator=g)
    p["head_color"] = _HEAD[p["head"]] + 0.05 * torch.randn(n, 3, generator=g)
    p["tail_color"] = _TAIL[p["tail"]] + 0.05 * torch.randn(n, 3, generator=g)
    p["mark_shade"] = _u(g, n, 0.30, 0.45)
    p["brightness"] = _u(g, n, 0.85, 1.15)
    p["gain"] = _u(g, n, 0.92, 1.08, 3)
    # background
    p["bg_base"] = _u(g, n, 0.25, 0.75, 3)
    p["bg_field"] = 0.12 * torch.randn(n, 3, 5, 5, generator=g) / (1 + torch.arange(5.0)[:, None] + torch.arange(5.0))
    # distractors: 3 slots, each present with probability 0.6
    p["d_on"] = torch.rand(n, k, generator=g) < 0.6
    p["d_kind"] = torch.randint(3, (n, k), generator=g)  # disc, square, triangle
    p["d_center"] = _u(g, n, -0.9, 0.9, k, 2)
    p["d_size"] = _u(g, n, 0.12, 0.24, k)
    p["d_angle"] = _u(g, n, 0.0, 2 * math.pi, k)
    # distractor colours: a head colour (1/2), a tail colour (1/4) or a body colour (1/4)
    pick = torch.rand(n, k, generator=g)
    head_pick = _HEAD[torch.randint(2, (n, k), generator=g)]
    tail_pick = _TAIL[torch.randint(2, (n, k), generator=g)]
    other = _BODY_PALETTE[torch.randint(len(_BODY_PALETTE), (n, k), generator=g)]
    d_color = torch.where((pick < 0.5)[..., None], head_pick, torch.where((pick < 0.75)[..., None], tail_pick, other))
    p["d_color"] = d_color + 0.05 * torch.randn(n, k, 3, generator=g)
    p["noise_std"] = _u(g, n, 0.02, 0.06)
    return p


def _pick(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Per row, the allowed palette index with the highest random score (a uniform pick among the allowed)."""
    return torch.where(allowed, scores, torch.full_like(scores, -1.0)).argmax(1)


def _assign_colours(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Palette indices (n, 6) of the slots of :data:`_V3_SLOTS`, from the scene's random scores.

    The head takes a colour of its class's hue group, the tail one of its shape's group (pointed:
    warm, round: cool), the body any other colour, the marking another colour whose luminance differs
    from the body's by at least 0.2 (lighter or darker at random), the legs and the eye two more:
    six different colours. Over the classes, every part takes every palette colour equally often.
    """
    scores = p["colour_scores"]  # (n, 6, 8) uniform random numbers
    n = scores.shape[0]
    used = torch.zeros(n, len(_PALETTE), dtype=torch.bool)
    out = torch.zeros(n, len(_V3_SLOTS), dtype=torch.int64)
    rows = torch.arange(n)

    def take(slot: str, allowed: torch.Tensor) -> torch.Tensor:
        j = _V3_SLOTS.index(slot)
        ok = allowed & ~used
        ok = torch.where(ok.any(1, keepdim=True), ok, ~used)  # never empty: fall back to any unused colour
        c = _pick(scores[:, j], ok)
        out[:, j] = c
        used[rows, c] = True
        return c

    take("head", _GROUP[None, :] == p["head"][:, None])
    take("tail", _GROUP[None, :] == p["tail"][:, None])
    body = take("body", torch.ones(n, len(_PALETTE), dtype=torch.bool))
    take("marking", (_LUMA[None, :] - _LUMA[body][:, None]).abs() >= 0.2)
    take("legs", torch.ones(n, len(_PALETTE), dtype=torch.bool))
    take("eye", torch.ones(n, len(_PALETTE), dtype=torch.bool))
    return out


def _sample_v3_rest(p: dict[str, torch.Tensor], n: int, k: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Colours, background, distractors and noise of design v3 (after the shared geometry)."""
    p["colour_scores"] = torch.rand(n, len(_V3_SLOTS), len(_PALETTE), generator=g)
    p["part_color_index"] = _assign_colours(p)  # (n, 6) in the order of _V3_SLOTS
    p["part_jitter"] = 0.04 * torch.randn(n, len(_V3_SLOTS), 3, generator=g)
    p["part_colors"] = _PALETTE[p["part_color_index"]] + p["part_jitter"]
    p["brightness"] = _u(g, n, 0.85, 1.15)
    p["gain"] = _u(g, n, 0.92, 1.08, 3)
    # background: a mid grey with a slight tint and a smooth random field
    p["bg_base"] = _u(g, n, 0.32, 0.68)[:, None] + _u(g, n, -0.07, 0.07, 3)
    p["bg_field"] = 0.10 * torch.randn(n, 3, 5, 5, generator=g) / (1 + torch.arange(5.0)[:, None] + torch.arange(5.0))
    p["d_on"] = torch.rand(n, k, generator=g) < 0.6
    p["d_kind"] = torch.randint(3, (n, k), generator=g)  # square, ring, triangle (no disc: the head's shape)
    p["d_center"] = _u(g, n, -0.9, 0.9, k, 2)
    p["d_size"] = _u(g, n, 0.12, 0.24, k)
    p["d_angle"] = _u(g, n, 0.0, 2 * math.pi, k)
    p["d_color"] = _PALETTE[torch.randint(len(_PALETTE), (n, k), generator=g)] + 0.04 * torch.randn(n, k, 3, generator=g)
    p["noise_std"] = _u(g, n, 0.02, 0.06)
    return p


def _design_of(p: Mapping[str, torch.Tensor]) -> str:
    return "v3" if "part_colors" in p else "v2"


def scene_nuisances(p: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The nuisance variables of scenes drawn by :func:`sample_scenes`, one value per scene.

    Returns
    -------
    dict of str -> (n,) numpy array
        ``facing`` ("right" or "left": the head's side before rotation, i.e. the horizontal
        flip), ``legs`` (2 or 4), ``body_colour`` (a name of :data:`BODY_COLOR_NAMES` in design
        v2, of :data:`PALETTE_NAMES` in v3), ``rotation_deg`` (degrees, counter-clockwise, in
        [-60, 60]), ``size`` (scale relative to the mean, in [0.88, 1.12]), ``position_x`` and
        ``position_y`` (centre of the creature in image units, [-1, 1] spans the image, y downwards).
    """
    if _design_of(p) == "v3":
        body = np.asarray(PALETTE_NAMES)[p["part_color_index"][:, _V3_SLOTS.index("body")].numpy()]
    else:
        body = np.asarray(BODY_COLOR_NAMES)[p["body_index"].numpy()]
    return {
        "facing": np.where(p["flip"].numpy(), "left", "right"),
        "legs": np.where(p["n_legs4"].numpy(), 4, 2),
        "body_colour": body,
        "rotation_deg": np.degrees(p["angle"].numpy()),
        "size": p["scale"].numpy() / 0.52,
        "position_x": p["center"][:, 0].numpy(),
        "position_y": p["center"][:, 1].numpy(),
    }


def _b(x: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, 1) for broadcasting against (n, H, W)."""
    return x[:, None, None]


def render_parts(
    p: dict[str, torch.Tensor], image_size: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes drawn by :func:`sample_scenes`.

    Parameters
    ----------
    p : dict of tensors
        Scene parameters for ``n`` images (either design).
    image_size : int
        Side ``S`` of the square images.
    g : torch.Generator
        Source of the pixel noise (drawn after the scene parameters).

    Returns
    -------
    images : (n, 3, S, S) float32 in [0, 1]
    parts : (n, S, S) int64, labels of :data:`PART_NAMES`
    """
    return _render(p, image_size, _noise_seed(g))


def _noise_seed(g: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=g))


def _render(
    p: Mapping[str, torch.Tensor],
    image_size: int,
    noise_seed: int,
    drop: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render scenes; ``drop`` maps a part name to a (n,) bool tensor of the scenes that lose it.

    Every operation is per pixel (or per image for the background field), so a scene's pixels
    outside the footprint of what ``drop`` or a changed parameter touches come out bit-identical.
    """
    v3 = _design_of(p) == "v3"
    n, s = p["label"].shape[0], int(image_size)
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1
    y, x = torch.meshgrid(coords, coords, indexing="ij")  # y grows downwards
    x, y = x[None], y[None]

    # image -> object coordinates (u forward, v up)
    dx, dy = x - _b(p["center"][:, 0]), -(y - _b(p["center"][:, 1]))
    cos, sin = _b(torch.cos(p["angle"])), _b(torch.sin(p["angle"]))
    u = (cos * dx + sin * dy) / _b(p["scale"])
    v = (-sin * dx + cos * dy) / _b(p["scale"])
    u = torch.where(_b(p["flip"]), -u, u)

    a, bb = _b(p["body_a"]), _b(p["body_b"])
    body = (u / a) ** 2 + (v / bb) ** 2 <= 1.0
    hr = _b(p["head_r"])
    hx, hy = a + 0.18, 0.30 + 0.0 * a
    head = (u - hx) ** 2 + (v - hy) ** 2 <= hr**2
    eye = (u - hx - 0.45 * hr) ** 2 + (v - hy - 0.25 * hr) ** 2 <= (0.24 * hr) ** 2
    if v3:  # a long thin spike pointing back, or a disc
        base, apex, half = -a + 0.25, -a - 0.95, 0.34
    else:  # tails of about equal area: a triangle pointing back, or a disc
        base, apex, half = -a + 0.25, -a - 0.62, 0.40
    t = (u - apex) / (base - apex)
    pointed = (t >= 0) & (t <= 1) & ((v - 0.08).abs() <= half * t)
    round_ = (u + a + 0.22) ** 2 + (v - 0.08) ** 2 <= 0.36**2
    tail = torch.where(_b(p["tail"] == 0), pointed, round_)
    # legs: 2 bars at u = +-0.62 a, or 4 bars at u = +-0.22 a and +-0.62 a
    q = u.abs() / a
    four = (((q - 0.42).abs() - 0.20).abs() * a <= 0.075) & _b(p["n_legs4"])
    two = (q - 0.62).abs() * a <= 0.075
    legs = (four | two) & (v <= 0) & (v >= -bb - _b(p["leg_len"]))
    # marking on the body: vertical stripes or a lattice of spots (v3: staggered, every other row
    # shifted by half a period, so that a column of spots never reads as a beaded stripe)
    per = _b(p["period"])
    fu = torch.remainder(u / per + _b(p["phase"][:, 0]), 1.0)
    fv = torch.remainder(v / per + _b(p["phase"][:, 1]), 1.0)
    stripes = fu < 0.45
    if v3:
        odd_row = torch.remainder(torch.floor(v / per + _b(p["phase"][:, 1])), 2.0)
        fu_spots = torch.remainder(fu + 0.5 * odd_row, 1.0)
    else:
        fu_spots = fu
    spots = (fu_spots - 0.5) ** 2 + (fv - 0.5) ** 2 <= 0.32**2
    if drop is not None:  # interventions: a removed part is not drawn (what lay behind it shows)
        keep = {k: ~_b(drop[k]) for k in REMOVABLE_PARTS if k in drop}
        body = body & keep["body"] if "body" in keep else body
        head = head & keep["head"] if "head" in keep else head
        tail = tail & keep["tail"] if "tail" in keep else tail
        legs = legs & keep["legs"] if "legs" in keep else legs
        if "marking" in keep:
            stripes, spots = stripes & keep["marking"], spots & keep["marking"]
    marking = body & torch.where(_b(p["marking"] == 0), stripes, spots)

    # ---- paint-index map: 0 background, 1-3 distractors, then the creature back to front
    paint = torch.zeros(n, s, s, dtype=torch.int64)
    for k in range(p["d_on"].shape[1]):
        ddx = x - _b(p["d_center"][:, k, 0])
        ddy = y - _b(p["d_center"][:, k, 1])
        c, sn = _b(torch.cos(p["d_angle"][:, k])), _b(torch.sin(p["d_angle"][:, k]))
        r = _b(p["d_size"][:, k])
        ru, rv = (c * ddx + sn * ddy) / r, (c * ddy - sn * ddx) / r
        kind = _b(p["d_kind"][:, k])
        disc = ru.square() + rv.square() <= 1.0
        square = torch.maximum(ru.abs(), rv.abs()) <= 0.85
        tri = (rv >= -1.0) & (rv <= 1.0) & (ru.abs() <= 0.55 * (1.0 - rv))
        if v3:  # square, ring, triangle: no disc, the shape of the head and of the round tail
            ring = disc & (ru.square() + rv.square() > 0.25)
            shape = (square & (kind == 0)) | (ring & (kind == 1)) | (tri & (kind == 2))
        else:  # disc, square, triangle
            shape = (disc & (kind == 0)) | (square & (kind == 1)) | (tri & (kind == 2))
        paint.masked_fill_(shape & _b(p["d_on"][:, k]), 1 + k)
    for code, mask in ((4, legs), (5, tail), (6, body), (7, marking), (8, head), (9, head & eye)):
        paint.masked_fill_(mask, code)
    lut = torch.tensor([0, 0, 0, 0, 4, 3, 1, 5, 2, 2])  # paint code -> part label
    parts = lut[paint]

    # ---- colours: one table per image, looked up once
    if v3:  # paint codes 4-9 are the slots of _V3_SLOTS: legs, tail, body, marking, head, eye
        table = torch.cat([torch.zeros(n, 1, 3), p["d_color"], p["part_colors"]], dim=1)
    else:
        body_c = p["body_color"]
        table = torch.cat(
            [
                torch.zeros(n, 1, 3),
                p["d_color"],
                (0.75 * body_c)[:, None],
                p["tail_color"][:, None],
                body_c[:, None],
                (p["mark_shade"][:, None] * body_c)[:, None],
                p["head_color"][:, None],
                torch.full((n, 1, 3), 0.06),
            ],
            dim=1,
        )  # (n, 10, 3)
    flat = paint.reshape(n, 1, s * s).expand(n, 3, s * s)
    img = torch.gather(table.transpose(1, 2), 2, flat).reshape(n, 3, s, s)
    # background: base colour + a smooth random field (a 5 x 5 cosine series)
    freq = torch.arange(5, dtype=torch.float32)
    basis = torch.cos(math.pi * freq[None, :] * (coords[:, None] + 1) / 2)  # (S, 5)
    field = basis @ p["bg_field"] @ basis.T + p["bg_base"][:, :, None, None]
    img = torch.where((paint == 0)[:, None], field, img)

    # ---- global colour jitter and pixel noise
    img.mul_(_b(p["brightness"])[:, None] * p["gain"][:, :, None, None])
    # uniform pixel noise from NumPy's PCG64 (much faster than torch's CPU generator)
    rng = np.random.default_rng(int(noise_seed))
    noise = torch.from_numpy(rng.random((n, 3, s, s), dtype=np.float32)).sub_(0.5)
    img.add_(noise.mul_(math.sqrt(12.0) * _b(p["noise_std"])[:, None]))
    return img.clamp_(0.0, 1.0).float(), parts


@dataclasses.dataclass(frozen=True)
class SceneSource:
    """Where the scenes of a generated split come from: enough to re-render any of them.

    Item ``i`` of the split is scene ``i % 256`` of chunk ``i // 256``, drawn from
    ``(seed, split, chunk)`` alone, so :func:`intervene` regenerates its parameters (and its pixel
    noise) instead of storing them. :func:`make_parts` sets it as ``ImageSet.scene_source``.
    """

    seed: int
    split: str
    image_size: int
    design: str = DEFAULT_DESIGN

    def __post_init__(self) -> None:
        if self.split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {self.split!r}")
        if int(self.image_size) < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if int(self.seed) < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        _check_design(self.design)


def _chunk_scenes(source: SceneSource, chunk: int) -> tuple[dict[str, torch.Tensor], int]:
    """The parameters of the 256 scenes of one chunk and the seed of its pixel noise."""
    g = _chunk_generator(source.seed, source.split, chunk)
    p = sample_scenes(_CHUNK, g, source.design)
    return p, _noise_seed(g)


@functools.lru_cache(maxsize=2)
def _generate(
    n: int, image_size: int, seed: int, split: str, design: str = DEFAULT_DESIGN
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """Images, parts, labels and nuisances of a split, kept for the process (a train and a test set)."""
    source = SceneSource(seed, split, image_size, design)
    images, parts, labels, nuisances = [], [], [], []
    for chunk in range(-(-n // _CHUNK)):
        p, noise_seed = _chunk_scenes(source, chunk)
        img, prt = _render(p, image_size, noise_seed)  # the whole chunk, so that prefixes agree
        m = min(_CHUNK, n - chunk * _CHUNK)
        images.append(img[:m])
        parts.append(prt[:m])
        labels.append(p["label"][:m])
        nuisances.append({k: v[:m] for k, v in scene_nuisances(p).items()})
    if n == 0:
        return (
            torch.zeros(0, 3, image_size, image_size),
            torch.zeros(0, image_size, image_size, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
            {k: np.zeros(0) for k in NUISANCE_NAMES},
        )
    attrs = {k: np.concatenate([d[k] for d in nuisances]) for k in NUISANCE_NAMES}
    return torch.cat(images), torch.cat(parts), torch.cat(labels), attrs


def make_parts(
    n: int, image_size: int = 64, seed: int = 0, split: str = "train", *, design: str | None = None
) -> ImageSet:
    """Generate ``n`` part-based creature images.

    Parameters
    ----------
    n : int
        Number of images (exactly class-balanced when divisible by 8).
    image_size : int, default 64
        Side of the square images (any size >= 8).
    seed : int, default 0
        Seed; ``train`` and ``test`` use disjoint streams of it.
    split : {"train", "test"}
        Which stream.
    design : {"v2", "v3"}, optional
        Generator design, default :data:`DEFAULT_DESIGN` (see the module docstring).

    Returns
    -------
    ImageSet
        In memory, with ``.images`` ``(n, 3, S, S)``, ``.labels`` ``(n,)``,
        ``.parts`` ``(n, S, S)`` (labels of :data:`PART_NAMES`) and
        ``.objects`` ``(n, S, S)`` (``parts > 0``), the generator's nuisance variables as
        ``.attributes`` (:data:`NUISANCE_NAMES`, see :func:`scene_nuisances`) and
        ``.scene_source`` (a :class:`SceneSource`, for :func:`intervene`).

    Example
    -------
    >>> ds = make_parts(8, image_size=16, seed=1, split="test")
    >>> sorted(ds.labels.tolist())
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
    n, image_size, seed, design = int(n), int(image_size), int(seed), _check_design(design)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    images_t, parts_t, labels_t, attrs = _generate(n, image_size, seed, split, design)
    # clones: the cached tensors stay intact whatever the caller does with these
    images_t, parts_t, labels_t = images_t.clone(), parts_t.clone(), labels_t.clone()
    ds = ImageSet(
        images_t,
        labels_t,
        class_names(design),
        parts=parts_t,
        objects=parts_t > 0,
        part_names=PART_NAMES,
        name=f"parts-{split}" if design == DEFAULT_DESIGN else f"parts-{design}-{split}",
        attributes={k: v.copy() for k, v in attrs.items()},
    )
    ds.scene_source = SceneSource(seed, split, image_size, design)  # type: ignore[attr-defined]
    return ds


# --------------------------------------------------------------------------- interventions


def _as_source(source: Any) -> SceneSource:
    if isinstance(source, SceneSource):
        return source
    if isinstance(source, Mapping):
        try:
            return SceneSource(**dict(source))
        except TypeError as exc:
            raise TypeError(
                f"a scene source given as a dict needs the keys seed, split, image_size (and optionally "
                f"design); got {sorted(source)}"
            ) from exc
    found = getattr(source, "scene_source", None)
    if isinstance(found, SceneSource):
        return found
    raise TypeError(
        "intervene needs a set made by make_parts (it carries .scene_source), a SceneSource or a dict "
        "{'seed', 'split', 'image_size', 'design'}; got "
        f"{type(source).__name__}. A subset of a generated set does not carry its scene indices: pass the "
        "SceneSource of the full set and the original indices."
    )


def intervene(
    source: ImageSet | SceneSource | Mapping[str, Any],
    idx: int | Sequence[int] | np.ndarray | torch.Tensor,
    *,
    remove: str | Iterable[str] | None = None,
    swap: Mapping[str, str] | None = None,
    remove_distractors: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-render generated scenes with a part removed, an attribute swapped or the distractors removed.

    Everything else is identical: the pose, every nuisance, the colours, the background and the
    pixel noise, so a pixel whose paint does not change comes out bit-identical to the original
    image. With no intervention the original images are reproduced exactly. A removed part is not
    drawn: what lay behind it shows (the body, a distractor or the background; removing the body
    removes the marking painted on it too). A swapped attribute redraws its part with the other
    value (and, in design v2, the colour that goes with it) and changes the label as
    :func:`class_attributes` says; removing a part keeps the label of the original scene.

    Parameters
    ----------
    source : ImageSet, SceneSource or dict
        The generated split: a set made by :func:`make_parts` (its ``.scene_source``), or its
        :class:`SceneSource` / a dict with ``seed``, ``split``, ``image_size`` and ``design``.
    idx : int or sequence of int
        Indices of the scenes in the generated split (any ``i >= 0``, also beyond the length of
        the set made: the split is an endless, deterministic stream).
    remove : str or iterable of str, optional
        Parts to remove, from :data:`REMOVABLE_PARTS` (``"body"``, ``"head"``, ``"tail"``,
        ``"legs"``, ``"marking"``).
    swap : dict, optional
        New attribute values, e.g. ``{"tail": "round"}`` or ``{"head": "square", "marking":
        "spotted"}`` (keys ``"head"``, ``"tail"``, ``"marking"``; values those of the design, see
        :func:`class_attributes`). A scene that already has the value is left as it is.
    remove_distractors : bool, default False
        Remove the distractor shapes (their pixels show the background).

    Returns
    -------
    images : (n, 3, S, S) float32 tensor in [0, 1]
    parts : (n, S, S) int64 tensor
        Part labels of the new scenes (:data:`PART_NAMES`).
    labels : (n,) int64 tensor
        Classes of the new scenes.

    Example
    -------
    >>> ds = make_parts(8, image_size=32, seed=0, design="v3")
    >>> img, prt, lab = intervene(ds, [0, 1], remove="tail")
    >>> bool((prt == PART_NAMES.index("tail")).any()), torch.equal(lab, ds.labels[:2])
    (False, True)
    """
    src = _as_source(source)
    index = torch.as_tensor(np.asarray(idx) if not isinstance(idx, torch.Tensor) else idx).reshape(-1)
    if index.numel() and (index.is_floating_point() or index.dtype == torch.bool):
        raise TypeError(f"idx must hold integer scene indices, got dtype {index.dtype}")
    index = index.to(torch.int64)
    if index.numel() and int(index.min()) < 0:
        raise IndexError(f"scene indices must be >= 0 (positions in the generated split), got {int(index.min())}")
    removed = [remove] if isinstance(remove, str) else list(remove or [])
    bad = [r for r in removed if r not in REMOVABLE_PARTS]
    if bad:
        raise ValueError(f"cannot remove {bad}: removable parts are {list(REMOVABLE_PARTS)}")
    values = _attribute_values(src.design)
    new_values: dict[str, int] = {}
    for attr, value in dict(swap or {}).items():
        if attr not in values:
            raise ValueError(f"cannot swap {attr!r}: the class attributes are {list(values)}")
        if value not in values[attr]:
            raise ValueError(f"{attr} must be one of {list(values[attr])} in design {src.design}, got {value!r}")
        new_values[attr] = values[attr].index(value)

    s = int(src.image_size)
    out_img = torch.empty(index.numel(), 3, s, s)
    out_prt = torch.empty(index.numel(), s, s, dtype=torch.int64)
    out_lab = torch.empty(index.numel(), dtype=torch.int64)
    chunks = torch.div(index, _CHUNK, rounding_mode="floor")
    for chunk in torch.unique(chunks).tolist():
        where = torch.nonzero(chunks == chunk).flatten()
        rows = index[where] - chunk * _CHUNK
        p, noise_seed = _chunk_scenes(src, chunk)
        sel = torch.zeros(_CHUNK, dtype=torch.bool)
        sel[rows] = True
        p = _apply_swaps(p, sel, new_values)
        if remove_distractors:
            p["d_on"] = p["d_on"] & ~sel[:, None]
        drop = {r: sel for r in removed} or None
        # the whole chunk is rendered, as by make_parts, so that untouched pixels are bit-identical
        img, prt = _render(p, s, noise_seed, drop)
        out_img[where], out_prt[where], out_lab[where] = img[rows], prt[rows], p["label"][rows]
    return out_img, out_prt, out_lab


def _apply_swaps(p: dict[str, torch.Tensor], sel: torch.Tensor, new_values: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Scene parameters with the attributes of the selected scenes set to ``new_values``."""
    if not new_values:
        return p
    p = dict(p)
    v2 = _design_of(p) == "v2"
    for attr, value in new_values.items():
        old = p[attr]
        new = torch.where(sel, torch.full_like(old, value), old)
        if v2 and attr in ("head", "tail"):  # in v2 the colour goes with the attribute (same jitter)
            ref = _HEAD if attr == "head" else _TAIL
            key = f"{attr}_color"
            p[key] = torch.where((new != old)[:, None], ref[new] + (p[key] - ref[old]), p[key])
        p[attr] = new
    p["label"] = 4 * p["head"] + 2 * p["tail"] + p["marking"]
    if not v2 and ("head" in new_values or "tail" in new_values):
        # the swapped head (tail) takes a colour of its new hue group that no other part of the scene
        # has, picked by the scene's own random scores; every other colour stays
        idx = p["part_color_index"].clone()
        for attr in ("head", "tail"):
            if attr not in new_values:
                continue
            j = _V3_SLOTS.index(attr)
            others = torch.zeros(idx.shape[0], len(_PALETTE), dtype=torch.bool)
            others.scatter_(1, torch.cat([idx[:, :j], idx[:, j + 1 :]], 1), True)
            allowed = (_GROUP[None, :] == p[attr][:, None]) & ~others
            allowed = torch.where(allowed.any(1, keepdim=True), allowed, _GROUP[None, :] == p[attr][:, None])
            changed = _GROUP[idx[:, j]] != p[attr]
            idx[:, j] = torch.where(changed, _pick(p["colour_scores"][:, j], allowed), idx[:, j])
        p["part_color_index"] = idx
        p["part_colors"] = _PALETTE[idx] + p["part_jitter"]
    return p


# --------------------------------------------------------------------------- colour check


def colour_baseline_ami(
    dataset: ImageSet,
    k_values: Iterable[int] = range(5, 9),
    *,
    n_images: int = 200,
    seed: int = 0,
    max_fit_pixels: int = 50_000,
) -> dict[int, float]:
    """How well colour alone finds the parts: AMI of k-means on the RGB values of object pixels.

    The object pixels of the first ``n_images`` images are clustered by their RGB values alone
    (scikit-learn's :class:`~sklearn.cluster.KMeans`, fitted on at most ``max_fit_pixels`` of them
    drawn at random, then every object pixel assigned to its nearest centroid) and the clusters are
    compared with the part labels by the adjusted mutual information (0 = no better than chance,
    1 = the parts exactly). A benchmark whose parts colour identifies scores high; one whose parts
    are recognised by shape, texture and place scores near 0.

    Parameters
    ----------
    dataset : ImageSet
        A set with part maps (``.parts``), e.g. from :func:`make_parts`.
    k_values : iterable of int, default 5..8
        Numbers of clusters.
    n_images : int, default 200
        Images used (the first ones).
    seed : int, default 0
        Seed of the pixel sample and of k-means.
    max_fit_pixels : int, default 50000
        Pixels the k-means is fitted on.

    Returns
    -------
    dict of int -> float
        The AMI for each ``K``.

    Example
    -------
    >>> ds = make_parts(64, image_size=32, seed=0, split="test")
    >>> ami = colour_baseline_ami(ds, k_values=[6], n_images=64)
    >>> sorted(ami), 0.0 <= ami[6] <= 1.0
    ([6], True)
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    if getattr(dataset, "parts", None) is None:
        raise ValueError(f"colour_baseline_ami needs a set with part maps (.parts); {dataset!r} has none")
    ks = [int(k) for k in k_values]
    if not ks or min(ks) < 2:
        raise ValueError(f"k_values must be numbers of clusters >= 2, got {ks}")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    m = min(int(n_images), len(dataset))
    images, parts = dataset.images[:m], dataset.parts[:m]
    obj = parts > 0
    rgb = images.permute(0, 2, 3, 1)[obj].double().numpy()  # (P, 3)
    truth = parts[obj].numpy()
    if len(truth) < max(ks):
        raise ValueError(f"only {len(truth)} object pixels in the first {m} images: too few for K = {max(ks)}")
    rng = np.random.default_rng(int(seed))
    fit = rgb[rng.choice(len(rgb), size=min(int(max_fit_pixels), len(rgb)), replace=False)]
    out: dict[int, float] = {}
    for k in ks:
        km = KMeans(n_clusters=k, n_init=4, random_state=int(seed)).fit(fit)
        out[k] = float(adjusted_mutual_info_score(truth, km.predict(rgb)))
    return out
