"""Every exercise checker accepts the reference solution and rejects a wrong one, saying why."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kmexplain_utils.chapters import exercises
from kmexplain_utils.chapters.notebook import STRICT_CHECKS_ENV


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    monkeypatch.delenv(STRICT_CHECKS_ENV, raising=False)


# ----------------------------------------------------------------------------- solutions

def pixels_ok(x, grid=16):
    return F.adaptive_avg_pool2d(x, grid).flatten(1).numpy()


def pixels_wrong(x, grid=16):  # keeps only the top-left pixel of each cell
    return F.interpolate(x, size=grid, mode="nearest").flatten(1).numpy()


def largest_ok(parts):
    counts = torch.stack([(parts == k).flatten(1).sum(1) for k in range(1, int(parts.max()) + 1)], 1)
    return counts.argmax(1) + 1


def largest_wrong(parts):  # counts the background too
    return torch.stack([torch.bincount(p.flatten()).argmax() for p in parts])


def diff_ok(s, logits, n):
    w, r = logits[n].topk(2).indices.tolist()
    return w, r, s[n, w] - s[n, r]


def diff_wrong(s, logits, n):  # the two *smallest* logits
    w, r = (-logits[n]).topk(2).indices.tolist()
    return w, r, s[n, w] - s[n, r]


def alpha_ok(w, Z):
    alphas = torch.linspace(0, 20, 20001)
    d = torch.cdist(alphas[:, None] * w[None], Z).min(1).values
    return alphas[d.argmin()].item()


def alpha_wrong(w, Z):  # projection of the mean, may be negative
    return (Z.mean(0) @ w / w.dot(w)).item()


def cams_ok(W, bias, Z_train):
    z_bar = Z_train.mean(0)
    t = 10 * ((W @ z_bar).abs().max() + bias.abs().max()) / z_bar.pow(2).sum()
    return W - t * z_bar


def cams_wrong(W, bias, Z_train):  # a different shift per row changes predictions
    return W + torch.arange(len(W))[:, None].float() * Z_train.mean(0)


def linear_ok(mu):
    return 2 * mu, -mu.pow(2).sum(1)


def linear_wrong(mu):  # forgets the factor 2
    return mu, -mu.pow(2).sum(1)


def nearest_mean_ok(Z_train, y_train, Z):
    classes = torch.unique(y_train)
    means = torch.stack([Z_train[y_train == c].mean(0) for c in classes])
    return classes[torch.cdist(Z, means).argmin(1)]


def nearest_mean_wrong(Z_train, y_train, Z):  # returns column indices, not labels
    classes = torch.unique(y_train)
    means = torch.stack([Z_train[y_train == c].mean(0) for c in classes])
    return torch.cdist(Z, means).argmin(1)


def break_ok(Z_train, y_train):
    s = torch.ones(Z_train.shape[1])
    sep = [abs(Z_train[y_train == 0, j].mean() - Z_train[y_train == 1, j].mean()) /
           Z_train[:, j].std() for j in range(Z_train.shape[1])]
    s[int(np.argmin(sep))] = 100.0  # amplify the least separating coordinate
    return s


def break_wrong(Z_train, y_train):  # a uniform scaling changes no nearest mean
    return torch.full((Z_train.shape[1],), 100.0)


def contrastive_ok(m, proto_class, c, c2):
    return m[proto_class == c].max(0).values - m[proto_class == c2].max(0).values


def contrastive_wrong(m, proto_class, c, c2):  # mean instead of the best prototype
    return m[proto_class == c].mean(0) - m[proto_class == c2].mean(0)


def shuffle_ok(A, seed):
    g = torch.Generator().manual_seed(seed)
    flat = A.flatten(1)
    perm = torch.randperm(flat.shape[1], generator=g)
    while bool((perm == torch.arange(len(perm))).all()):
        perm = torch.randperm(flat.shape[1], generator=g)
    return flat[:, perm].reshape(A.shape)


def shuffle_wrong(A, seed):  # shuffles every channel on its own: mixes the vectors
    g = torch.Generator().manual_seed(seed)
    flat = A.flatten(1)
    return torch.stack([row[torch.randperm(len(row), generator=g)] for row in flat]).reshape(A.shape)


def contributions_ok(m, kappa, K):
    return torch.stack([(m * (kappa == k)).sum() for k in range(K)]) / m.numel()


def contributions_wrong(m, kappa, K):  # the mean over each concept's positions, not weighted
    return torch.stack([m[kappa == k].mean() if (kappa == k).any() else m.new_zeros(())
                        for k in range(K)])


def scale_ok(blocks):
    return [b / b.pow(2).sum(1).mean().sqrt() for b in blocks]


def scale_wrong(blocks):  # per channel, not per block
    return [b / b.std(0) for b in blocks]


CASES = [
    (exercises.check_pixels, pixels_ok, pixels_wrong, "differs"),
    (exercises.check_largest_part, largest_ok, largest_wrong, "background"),
    (exercises.check_difference_map, diff_ok, diff_wrong, "winner, runner-up"),
    (exercises.check_best_alpha, alpha_ok, alpha_wrong, "alpha"),
    (exercises.check_negative_cams, cams_ok, cams_wrong, "same vector"),
    (exercises.check_linear_from_prototypes, linear_ok, linear_wrong, "weight"),
    (exercises.check_nearest_mean_predict, nearest_mean_ok, nearest_mean_wrong, "labels 3, 5, 7"),
    (exercises.check_break_kmeans, break_ok, break_wrong, "not broken"),
    (exercises.check_contrastive_map, contrastive_ok, contrastive_wrong, "differs"),
    (exercises.check_shuffle_positions, shuffle_ok, shuffle_wrong, "not vectors of the original"),
    (exercises.check_concept_contributions, contributions_ok, contributions_wrong, "not by n_k"),
    (exercises.check_block_scaling, scale_ok, scale_wrong, "sigma_b"),
]
IDS = [c[0].__name__ for c in CASES]


def test_every_checker_is_tested():
    assert sorted(IDS) == sorted(n for n in exercises.__all__), "a checker without a test (or vice versa)"


@pytest.mark.parametrize("checker, right, wrong, why", CASES, ids=IDS)
def test_reference_solution_passes(checker, right, wrong, why, capsys):
    assert checker(right) is True
    out = capsys.readouterr().out
    assert "cases pass" in out or "the one case passes" in out


@pytest.mark.parametrize("checker, right, wrong, why", CASES, ids=IDS)
def test_wrong_solution_fails_and_says_why(checker, right, wrong, why, capsys):
    assert checker(wrong) is False
    out = capsys.readouterr().out
    assert "fail" in out and why in out, out


@pytest.mark.parametrize("checker, right, wrong, why", CASES, ids=IDS)
def test_wrong_solution_raises_in_the_book_build(checker, right, wrong, why, monkeypatch):
    monkeypatch.setenv(STRICT_CHECKS_ENV, "1")
    with pytest.raises(AssertionError, match="fail"):
        checker(wrong)


@pytest.mark.parametrize("checker", [c[0] for c in CASES], ids=IDS)
def test_the_template_is_reported_as_not_written(checker, capsys):
    def template(*args, **kwargs):
        ...

    assert checker(template) is False
    assert "not written yet" in capsys.readouterr().out


def test_a_stub_that_raises_not_implemented_is_not_written(capsys):
    def stub(*args):
        raise NotImplementedError("Exercise: pixels")

    assert exercises.check_pixels(stub) is False
    assert "not written yet" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the chapters call them

import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKED_CHAPTERS = ["00_data", "01_cnn_is_sem", "02_kmeans_classifier", "03_explaining_b4",
                    "04_multiblock"]


def _student(nb):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from make_student_notebooks import make_student_notebook
    finally:
        sys.path.pop(0)
    return make_student_notebook(nb)


@pytest.mark.parametrize("chapter", CHECKED_CHAPTERS)
def test_every_coding_solution_is_checked_in_the_book_and_the_student_copy(chapter):
    nb = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
    cells = nb.cells
    checked = 0
    for i, cell in enumerate(cells):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type != "code" or "solution" not in tags:
            continue
        assert "hide-cell" in tags, f"{chapter} cell {i}: a solution folds with its output (hide-cell)"
        defined = re.findall(r"^def (\w+)\(", cell.source, re.M)
        assert defined, f"{chapter} cell {i}: a coding solution defines the function the exercise asks for"
        name = defined[0]
        template = cells[i - 1].source
        assert re.search(rf"^def {name}\(", template, re.M), f"{chapter} cell {i - 1}: no template of {name}"
        after = cells[i + 1]
        assert "solution" not in after.get("metadata", {}).get("tags", [])
        assert re.search(rf"exercises\.check_\w+\({name}\)", after.source), (
            f"{chapter} cell {i + 1}: the cell after the solution must call its checker on {name}")
        checked += 1
    assert checked, f"{chapter}: no checked coding exercise"
    student = _student(nb)
    calls = [c.source for c in student.cells if c.cell_type == "code" and "exercises.check_" in c.source]
    assert len(calls) == checked, "the student copy keeps every checker call"
