"""CUB-200-2011 (200 bird species), downloaded or from a folder, with keypoint parts.

Where the data come from, in order: ``root=``, else ``$KMEX_CUB_ROOT`` (the
``CUB_200_2011`` folder or the folder holding it), else ``cache_dir()/"data"``.
When that place holds no CUB at all and ``download=True`` (the default),
:func:`download_cub` fetches ``CUB_200_2011.tgz`` (1.1 GB) from CaltechDATA
(:data:`CUB_ARCHIVE_URL`), checks its MD5 and extracts it there. Object masks
need ``segmentations.tgz`` from the Caltech data page
(https://www.vision.caltech.edu/datasets/cub_200_2011/), extracted beside
``CUB_200_2011``; without it the bounding boxes are the masks.

Files read
----------
- required: ``images.txt`` (``id path``), ``image_class_labels.txt``
  (``id class``), ``train_test_split.txt`` (``id is_train``), ``images/``;
- optional: ``classes.txt`` (names), ``bounding_boxes.txt``
  (``id x y w h``), ``parts/parts.txt`` and ``parts/part_locs.txt``
  (``id part x y visible``), ``segmentations/<path>.png`` (inside the root or
  beside it).

Parts from keypoints
--------------------
CUB marks 15 keypoints per bird. Left and right are merged ("left eye" and
"right eye" -> "eye"), giving 12 part names after ``"background"`` in the
order of ``parts.txt``. Each *visible* keypoint becomes a disc of radius
``part_radius x sqrt(box area)`` (the bird's bounding box, mapped into the
output image; the whole image without boxes), and a pixel covered by several
discs takes the part of the nearest keypoint. With segmentations, parts are
cut to the object mask. The part maps are thus coarse, documented
approximations of the real part extents; the keypoints themselves, mapped the
same way, are returned by ``CubImageSet.keypoints_at`` (visible ones inside
the crop only; see :meth:`kmexplain_utils.data.base.ImageSet.keypoints_at`),
for keypoint-based measurements (:mod:`kmexplain_utils.evaluation.keypoints`).

Object masks are ``segmentation >= 128`` (CUB's masks are soft), else the
bounding box (the whole image for an item that has neither while others
do), else unknown (``None``). Images are cut to their centred
square (``crop="center"``) or to a square around the bounding box
(``crop="bbox"``) and resized to ``image_size``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import cache_dir
from ._imageio import (
    crop_resize,
    map_points,
    open_mask,
    open_rgb,
    square_box,
    to_image_tensor,
)
from .base import LazyImageSet, balanced_order

__all__ = [
    "CUB_ARCHIVE_MD5",
    "CUB_ARCHIVE_URL",
    "CUB_URL",
    "CubImageSet",
    "default_cub_root",
    "download_cub",
    "find_cub_root",
    "load_cub",
    "merge_part_names",
]

#: The data set's page (archives, segmentations, licence).
CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
#: CaltechDATA's copy of ``CUB_200_2011.tgz`` (images, labels, split, boxes, parts).
CUB_ARCHIVE_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
#: MD5 of that archive.
CUB_ARCHIVE_MD5 = "97eceeb196236b17998738112f37df78"
_REQUIRED = ("images.txt", "image_class_labels.txt", "train_test_split.txt")


def find_cub_root(root: str | os.PathLike | None = None) -> Path:
    """The ``CUB_200_2011`` folder from ``root`` or ``$KMEX_CUB_ROOT``.

    Accepts the folder itself or its parent. Raises ``FileNotFoundError``
    listing the missing files and how to get them.
    """
    given = root if root is not None else os.environ.get("KMEX_CUB_ROOT")
    if not given:
        raise FileNotFoundError(
            "CUB-200-2011 needs a folder: pass root=... or set KMEX_CUB_ROOT to the extracted "
            f"CUB_200_2011 folder (CUB_200_2011.tgz from {CUB_URL}), or load it with download=True."
        )
    path = Path(given).expanduser()
    if not (path / "images.txt").is_file() and (path / "CUB_200_2011" / "images.txt").is_file():
        path = path / "CUB_200_2011"
    missing = [f for f in _REQUIRED if not (path / f).is_file()]
    if not (path / "images").is_dir():
        missing.append("images/")
    if missing:
        raise FileNotFoundError(
            f"CUB-200-2011 folder {path} lacks {', '.join(missing)}. Point root= (or KMEX_CUB_ROOT) at the "
            f"extracted CUB_200_2011 folder; download CUB_200_2011.tgz from {CUB_URL} and extract it."
        )
    return path


def default_cub_root() -> Path:
    """``cache_dir()/"data"``: where :func:`download_cub` puts ``CUB_200_2011/`` by default."""
    return cache_dir() / "data"


def _holds_cub(path: Path) -> bool:
    return (path / "images.txt").is_file() or (path / "CUB_200_2011" / "images.txt").is_file()


def download_cub(
    root: str | os.PathLike | None = None, *, url: str = CUB_ARCHIVE_URL, md5: str | None = CUB_ARCHIVE_MD5
) -> Path:
    """Download ``CUB_200_2011.tgz``, check its MD5, extract it into ``root``; return the ``CUB_200_2011`` folder.

    Nothing is downloaded when ``root`` already holds CUB. The download and
    the check are torchvision's (``download_and_extract_archive``); the
    archive is deleted once extracted.

    Parameters
    ----------
    root : path, optional
        Folder to extract into; default :func:`default_cub_root`.
    url, md5 : str
        Where the archive is and its MD5 (default CaltechDATA's; ``md5=None``
        skips the check).

    Raises
    ------
    RuntimeError
        If the download, the MD5 check or the extraction fails: the message
        says how to get the archive by hand.
    """
    from torchvision.datasets.utils import download_and_extract_archive

    base = Path(root).expanduser() if root is not None else default_cub_root()
    if not _holds_cub(base):
        try:
            download_and_extract_archive(url, download_root=str(base), filename="CUB_200_2011.tgz", md5=md5,
                                         remove_finished=True)
        except Exception as exc:
            raise RuntimeError(
                f"Could not download CUB-200-2011 from {url} into {base} ({type(exc).__name__}: {exc}). "
                f"Download CUB_200_2011.tgz by hand ({CUB_URL}), extract it into {base}, or set KMEX_CUB_ROOT "
                "to the extracted CUB_200_2011 folder; then call again with download=False."
            ) from exc
    return find_cub_root(base)


def _table(path: Path, n_fields: int, what: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    with open(path) as f:
        for k, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < n_fields:
                raise ValueError(f"{path}, line {k}: expected {what}, got {line.strip()!r}; the file is damaged.")
            out[int(fields[0])] = fields[1:]
    return out


def merge_part_names(names: list[str]) -> tuple[list[str], dict[int, int]]:
    """Merge left/right keypoints: ``(part_names with background, {cub_part_index: label})``.

    ``names`` are CUB's part names in order (index ``i`` is CUB part ``i + 1``).
    """
    merged = ["background"]
    mapping: dict[int, int] = {}
    for i, raw in enumerate(names):
        base = raw.strip()
        for side in ("left ", "right "):
            if base.lower().startswith(side):
                base = base[len(side) :]
        if base not in merged:
            merged.append(base)
        mapping[i + 1] = merged.index(base)
    return merged, mapping


def keypoint_parts(
    points: np.ndarray, labels: np.ndarray, size: int, radius: float
) -> torch.Tensor:
    """Part map ``(size, size)`` int64 from keypoints: discs, nearest keypoint wins.

    Parameters
    ----------
    points : (P, 2) float
        Keypoints (x, y) in output pixels.
    labels : (P,) int
        Part label of each keypoint (> 0).
    size : int
        Side of the map.
    radius : float
        Disc radius in pixels.
    """
    out = torch.zeros(size, size, dtype=torch.int64)
    if len(points) == 0:
        return out
    c = torch.arange(size, dtype=torch.float64) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = torch.as_tensor(points, dtype=torch.float64)
    d2 = (xx[None] - p[:, 0, None, None]) ** 2 + (yy[None] - p[:, 1, None, None]) ** 2  # (P, S, S)
    best, arg = d2.min(dim=0)
    lab = torch.as_tensor(labels, dtype=torch.int64)[arg]
    return torch.where(best <= radius**2, lab, out)


class CubImageSet(LazyImageSet):
    """CUB-200-2011 images with keypoint part maps, read on demand (see :mod:`kmexplain_utils.data.cub`)."""

    def __init__(
        self,
        root: Path,
        records: list[dict],
        labels: list[int],
        class_names: list[str],
        part_names: list[str] | None,
        image_size: int,
        split: str,
        *,
        crop: str,
        part_radius: float,
        has_objects: bool,
    ):
        super().__init__(
            torch.as_tensor(labels, dtype=torch.int64),
            class_names,
            part_names=part_names,
            image_size=image_size,
            name=f"cub-{split}",
            has_objects=has_objects,
            has_keypoints=part_names is not None,
        )
        self.root = root
        self.records = records
        self.crop = crop
        self.part_radius = float(part_radius)

    def image_path(self, j: int) -> Path:
        """File of underlying item ``j``."""
        return self.root / "images" / self.records[j]["path"]

    def _crop_box(self, j: int, image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """The square crop box of underlying item ``j`` (original pixels) for an image of size ``(W, H)``."""
        bbox = self.records[j].get("bbox")
        return square_box(*image_wh, bbox=bbox if self.crop == "bbox" else None)

    def _keypoints(self, j: int) -> np.ndarray:
        """Visible keypoints of item ``j`` mapped into the output image; those outside the crop dropped."""
        kp = self.records[j].get("keypoints")
        if kp is None or len(kp) == 0:
            return np.zeros((0, 3), dtype=np.float64)
        from PIL import Image

        path = self.image_path(j)
        if not path.is_file():
            open_rgb(path)  # raises the package's FileNotFoundError, naming the fix
        with Image.open(path) as img:  # the header only: the size
            wh = img.size
        s = self.image_size
        pts = map_points(kp[:, :2], self._crop_box(j, wh), s)
        keep = np.all((pts >= 0) & (pts < s), axis=1)
        return np.column_stack([pts[keep], kp[keep, 2]]).astype(np.float64)

    def _load(self, j: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        rec, s = self.records[j], self.image_size
        path = self.image_path(j)
        img = open_rgb(path)
        bbox = rec.get("bbox")
        box = self._crop_box(j, img.size)
        image = to_image_tensor(crop_resize(img, box, s))
        obj = None
        if rec.get("seg") is not None:
            seg = np.asarray(crop_resize(open_mask(rec["seg"], img.size, path), box, s, nearest=True))
            obj = torch.from_numpy(seg >= 128 if seg.max() > 1 else seg > 0)
        elif bbox is not None:
            (x0, y0), (x1, y1) = map_points(np.array([[bbox[0], bbox[1]], [bbox[0] + bbox[2], bbox[1] + bbox[3]]]), box, s)
            c = torch.arange(s, dtype=torch.float64) + 0.5
            obj = ((c[:, None] >= y0) & (c[:, None] <= y1)) & ((c[None] >= x0) & (c[None] <= x1))
        elif self._has_objects:  # this image has neither a mask nor a box: the whole image
            obj = torch.ones(s, s, dtype=torch.bool)
        parts = None
        if self.part_names is not None:
            kp = rec.get("keypoints")
            if kp is None or len(kp) == 0:
                parts = torch.zeros(s, s, dtype=torch.int64)
            else:
                pts = map_points(kp[:, :2], box, s)
                if bbox is not None:
                    corners = map_points(np.array([[bbox[0], bbox[1]], [bbox[0] + bbox[2], bbox[1] + bbox[3]]]), box, s)
                    extent = float(np.sqrt(np.prod(np.abs(corners[1] - corners[0]))))
                else:
                    extent = float(s)
                parts = keypoint_parts(pts, kp[:, 2].astype(np.int64), s, self.part_radius * extent)
            if obj is not None and rec.get("seg") is not None:
                parts = torch.where(obj, parts, torch.zeros_like(parts))
        return image, parts, obj


def _find_segmentations(root: Path) -> Path | None:
    for cand in (root / "segmentations", root.parent / "segmentations"):
        if cand.is_dir():
            return cand
    return None


def load_cub(
    split: str,
    image_size: int = 224,
    n: int = 0,
    seed: int = 0,
    *,
    root: str | os.PathLike | None = None,
    crop: str = "center",
    part_radius: float = 0.12,
    download: bool = True,
) -> CubImageSet:
    """One split of CUB-200-2011 as a lazy :class:`ImageSet`.

    Parameters
    ----------
    split : {"train", "test"}
        The official split of ``train_test_split.txt`` (5,994 / 5,794).
    image_size : int, default 224
        Side of the returned square images.
    n : int, default 0
        Number of images (class-balanced prefix of a seeded shuffle); 0 = all.
    seed : int, default 0
        Seed of the order.
    root : path, optional
        The ``CUB_200_2011`` folder or its parent; default ``$KMEX_CUB_ROOT``,
        else :func:`default_cub_root`.
    crop : {"center", "bbox"}
        Centred square of the image, or a square around the bird's box.
    part_radius : float, default 0.12
        Keypoint disc radius as a fraction of the box's side (geometric mean).
    download : bool, default True
        When that folder holds no CUB at all, :func:`download_cub` it there
        (a folder that holds an incomplete CUB raises instead, naming the
        missing files).

    Returns
    -------
    CubImageSet
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if crop not in ("center", "bbox"):
        raise ValueError(f"crop must be 'center' or 'bbox', got {crop!r}")
    given = root if root is not None else os.environ.get("KMEX_CUB_ROOT")
    if given is None and download:
        given = default_cub_root()
    if download and given is not None and not _holds_cub(Path(given).expanduser()):
        path = download_cub(given)
    else:
        path = find_cub_root(given)
    images = _table(path / "images.txt", 2, "'image_id path'")
    classes = _table(path / "image_class_labels.txt", 2, "'image_id class_id'")
    is_train = _table(path / "train_test_split.txt", 2, "'image_id is_training_image'")
    for fname, table in (("image_class_labels.txt", classes), ("train_test_split.txt", is_train)):
        missing = sorted(set(images) - set(table))
        if missing:
            raise ValueError(
                f"{path / fname} has no line for image id(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                f"listed in {path / 'images.txt'}; the folder mixes files of different versions: re-extract it."
            )
    if crop == "bbox" and not (path / "bounding_boxes.txt").is_file():
        raise FileNotFoundError(f"crop='bbox' needs {path / 'bounding_boxes.txt'}; re-extract CUB_200_2011 or use crop='center'.")
    boxes = _table(path / "bounding_boxes.txt", 5, "'image_id x y w h'") if (path / "bounding_boxes.txt").is_file() else {}
    n_classes = max(int(v[0]) for v in classes.values()) if classes else 0
    if (path / "classes.txt").is_file():
        raw = _table(path / "classes.txt", 2, "'class_id name'")
        class_names = [raw[c][0].split(".", 1)[-1].replace("_", " ") if c in raw else str(c) for c in range(1, n_classes + 1)]
    else:
        class_names = [str(c) for c in range(1, n_classes + 1)]
    part_names, keypoints = None, {}
    parts_file, locs_file = path / "parts" / "parts.txt", path / "parts" / "part_locs.txt"
    if parts_file.is_file() and locs_file.is_file():
        raw_parts = _table(parts_file, 2, "'part_id name'")
        part_names, mapping = merge_part_names([" ".join(raw_parts[k]) for k in sorted(raw_parts)])
        locs = np.loadtxt(locs_file, ndmin=2)
        if locs.size and locs.shape[1] != 5:
            raise ValueError(f"{locs_file} must have 5 columns 'image_id part_id x y visible', got {locs.shape[1]}")
        for row in locs[locs[:, 4] > 0] if locs.size else []:
            keypoints.setdefault(int(row[0]), []).append((row[2], row[3], mapping[int(row[1])]))
    elif parts_file.is_file() or locs_file.is_file():
        warnings.warn(f"Only one of {parts_file} and {locs_file} exists; part maps are disabled.", stacklevel=2)
    seg_root = _find_segmentations(path)
    want = 1 if split == "train" else 0
    ids = [i for i in sorted(images) if int(is_train[i][0]) == want]
    records, labels = [], []
    for i in ids:
        rel = images[i][0]
        seg = None
        if seg_root is not None:
            cand = seg_root / Path(rel).with_suffix(".png")
            seg = cand if cand.is_file() else None
        kp = keypoints.get(i)
        records.append(
            {
                "id": i,
                "path": rel,
                "bbox": tuple(float(v) for v in boxes[i][:4]) if i in boxes else None,
                "keypoints": np.array(kp, dtype=np.float64) if kp else None,
                "seg": seg,
            }
        )
        labels.append(int(classes[i][0]) - 1)
    y = np.asarray(labels, dtype=np.int64)
    order = balanced_order(y, seed=seed).numpy() if len(y) else np.zeros(0, dtype=np.int64)
    if n:
        if n > len(order):
            warnings.warn(f"CUB {split} has {len(order)} images; using all of them instead of n={n}.", stacklevel=2)
        order = order[:n]
    has_objects = bool(seg_root is not None or boxes)
    return CubImageSet(
        path,
        [records[i] for i in order],
        y[order].tolist(),
        class_names,
        part_names,
        int(image_size),
        split,
        crop=crop,
        part_radius=part_radius,
        has_objects=has_objects,
    )
