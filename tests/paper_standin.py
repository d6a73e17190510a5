"""Stand-ins for what the paper profile downloads: CUB-200-2011's folder and ResNet34's weights.

:func:`make_cub_standin` writes a tiny folder with the file layout of the extracted
``CUB_200_2011.tgz`` (the same file names, columns and formats: ``images/<class folder>/<name>.jpg``,
``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``, ``classes.txt``,
``bounding_boxes.txt``, ``parts/parts.txt`` with CUB's 15 part names, ``parts/part_locs.txt``
with invisible keypoints as ``0.0 0.0 0``, ``attributes.txt`` and ``README`` beside it), with
generated "birds" whose class sets the colours of the body and the head, so that the tiny model
has something to learn. :func:`make_resnet34_weights` writes a ResNet34 ``state_dict`` where the
package's one pretrained loader looks (``<cache>/weights/resnet34-b627a593.pth``, with
``KMEX_CACHE=<cache>``), so that :func:`kmexplain_utils.chapters.models.resnet34_classifier` loads it
through the real loading code (:func:`kmexplain_utils.chapters.pretrained.resnet34_imagenet_state_dict`,
hash check included: :func:`standin_env` gives ``KMEX_RESNET34_SHA256``, the stand-in's hash) instead
of downloading.

Used by the paper-profile smoke stage (``pytest -m paper_smoke``, tests/test_notebooks.py)::

    python tests/paper_standin.py OUT_DIR    # writes OUT_DIR/CUB_200_2011 and OUT_DIR/cache/weights
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

#: CUB-200-2011's ``parts/parts.txt``, in order.
CUB_PARTS = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
    "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat",
)
#: the first classes of CUB's ``classes.txt``
CUB_CLASSES = (
    "001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross",
    "004.Groove_billed_Ani", "005.Crested_Auklet", "006.Least_Auklet",
    "007.Parakeet_Auklet", "008.Rhinoceros_Auklet",
)
# where each part sits on a bird facing right, in units of the bird's box (x, y in [0, 1])
_PART_XY = {
    "back": (0.45, 0.30), "beak": (0.97, 0.22), "belly": (0.50, 0.70), "breast": (0.70, 0.55),
    "crown": (0.82, 0.08), "forehead": (0.90, 0.12), "left eye": (0.85, 0.18),
    "left leg": (0.45, 0.95), "left wing": (0.40, 0.45), "nape": (0.72, 0.20),
    "right eye": (0.86, 0.19), "right leg": (0.55, 0.95), "right wing": (0.42, 0.47),
    "tail": (0.03, 0.45), "throat": (0.82, 0.35),
}


def make_cub_standin(
    out: str | os.PathLike,
    *,
    n_classes: int = 5,
    n_train_per_class: int = 8,
    n_test_per_class: int = 4,
    seed: int = 0,
) -> Path:
    """Write a tiny ``CUB_200_2011`` folder under ``out`` and return it.

    Image sizes vary (CUB's do), ids follow class order as in CUB, and the split interleaves
    training and test images within each class.
    """
    from PIL import Image, ImageDraw

    if not 1 <= n_classes <= 200:
        raise ValueError(f"n_classes must be in 1..200 (CUB has 200 classes), got {n_classes}")
    folders = [_class_folder(c) for c in range(n_classes)]
    rng = np.random.default_rng(seed)
    root = Path(out) / "CUB_200_2011"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "parts").mkdir(exist_ok=True)
    hues = rng.permutation(np.linspace(0, 1, n_classes, endpoint=False))
    images, labels, split, boxes, locs = [], [], [], [], []
    image_id = 0
    for c, folder in enumerate(folders):
        (root / "images" / folder).mkdir(exist_ok=True)
        species = folder.split(".", 1)[1]
        n_images = n_train_per_class + n_test_per_class
        train_flags = np.array([1] * n_train_per_class + [0] * n_test_per_class)
        rng.shuffle(train_flags)
        body = tuple(int(v) for v in 255 * _hsv(hues[c], 0.8, 0.9))
        head = tuple(int(v) for v in 255 * _hsv((hues[c] + 0.5) % 1, 0.9, 0.6))
        for k in range(n_images):
            image_id += 1
            w, h = int(rng.integers(90, 140)), int(rng.integers(80, 120))
            bg = rng.integers(60, 200, size=3)
            pixels = np.clip(bg + rng.normal(0, 25, size=(h, w, 3)), 0, 255).astype(np.uint8)
            img = Image.fromarray(pixels)
            draw = ImageDraw.Draw(img)
            bw, bh = rng.uniform(0.45, 0.7) * w, rng.uniform(0.45, 0.7) * h
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            flip = bool(rng.integers(2))
            draw.ellipse([x0 + 0.05 * bw, y0 + 0.25 * bh, x0 + 0.9 * bw, y0 + 0.85 * bh], fill=body)
            hx, hy = (x0 + (0.15 if flip else 0.85) * bw, y0 + 0.2 * bh)
            r = 0.14 * min(bw, bh) + 2
            draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=head)
            name = f"{species}_{k + 1:04d}_{int(rng.integers(1, 999999))}.jpg"
            img.save(root / "images" / folder / name, quality=90)
            images.append(f"{image_id} {folder}/{name}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(train_flags[k])}")
            boxes.append(f"{image_id} {x0:.1f} {y0:.1f} {bw:.1f} {bh:.1f}")
            for p, part in enumerate(CUB_PARTS, 1):
                px, py = _PART_XY[part]
                px = 1 - px if flip else px
                visible = int(rng.random() > 0.2)
                if visible:
                    locs.append(f"{image_id} {p} {x0 + px * bw:.1f} {y0 + py * bh:.1f} 1")
                else:
                    locs.append(f"{image_id} {p} 0.0 0.0 0")
    _write(root / "images.txt", images)
    _write(root / "image_class_labels.txt", labels)
    _write(root / "train_test_split.txt", split)
    _write(root / "bounding_boxes.txt", boxes)
    _write(root / "classes.txt", [f"{c + 1} {name}" for c, name in enumerate(folders)])
    _write(root / "parts" / "parts.txt", [f"{p} {name}" for p, name in enumerate(CUB_PARTS, 1)])
    _write(root / "parts" / "part_locs.txt", locs)
    _write(Path(out) / "attributes.txt", ["1 has_bill_shape::curved_(up_or_down)"])
    _write(root / "README", ["A generated stand-in of CUB-200-2011's file layout, for the tests."])
    return root


def make_resnet34_weights(cache: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded random ResNet34 ``state_dict`` where the package looks for the ImageNet one.

    The file is ``cache/weights/resnet34-b627a593.pth``; set ``KMEX_CACHE=cache`` and the
    variables of :func:`standin_env` for the code under test to find and accept it.
    """
    import torch
    from torchvision.models import resnet34

    from kmexplain_utils.chapters.pretrained import RESNET34_FILE

    torch.manual_seed(seed)
    path = Path(cache) / "weights" / RESNET34_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet34().state_dict(), path)
    return path


def standin_env(weights: str | os.PathLike) -> dict[str, str]:
    """The environment that makes the loader accept the stand-in weights file (its SHA-256 as the expected one)."""
    from kmexplain_utils.chapters.pretrained import RESNET34_SHA256_ENV, sha256_of

    return {RESNET34_SHA256_ENV: sha256_of(weights)}


def _class_folder(c: int) -> str:
    """CUB's folder name of class ``c`` (0-based): the real first ones, then numbered stand-ins."""
    return CUB_CLASSES[c] if c < len(CUB_CLASSES) else f"{c + 1:03d}.Standin_Species_{c + 1}"


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":  # pragma: no cover - a helper for looking at the stand-in by hand
    # python tests/paper_standin.py OUT_DIR [--full]: --full has CUB's sizes (200 classes, 30 + 29 images each)
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "cub_standin")
    full = "--full" in sys.argv[2:]
    print(make_cub_standin(target, **({"n_classes": 200, "n_train_per_class": 30, "n_test_per_class": 29}
                                      if full else {})))
    print(make_resnet34_weights(target / "cache"))
