"""Colab readiness: the set-up cell, one install line, no cross-chapter files, CPU fallback."""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
import types
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
# the repository's address lives in pyproject.toml ([project.urls] Repository); Colab installs its main branch
PACKAGE_URL = f"git+{tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['urls']['Repository']}@main"
COLAB_CELL = (
    "# Colab set-up: installs this book's package; does nothing elsewhere.\n"
    "import sys\n"
    "\n"
    'if "google.colab" in sys.modules:\n'
    f'    %pip install --quiet "kmexplain-utils[real] @ {PACKAGE_URL}"'
)
SETUP_CELL = "from kmexplain_utils.chapters.notebook import setup_notebook\n\ncfg = setup_notebook()"
# line magics a chapter may use besides the install line (all harmless in Colab)
ALLOWED_MAGICS = {"matplotlib", "time", "timeit", "config", "load_ext", "autoreload"}


def _params():
    return [pytest.param(p, id=p.stem) for p in CHAPTERS] or [pytest.param(None, id="no-chapters")]


def _code_cells(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _require(path):
    if path is None:
        pytest.fail("no chapter notebooks in book/")


# ----------------------------------------------------------------------------- the set-up cells

@pytest.mark.parametrize("path", _params())
def test_first_code_cells_are_the_standard_ones(path):
    _require(path)
    cells = _code_cells(path)
    assert len(cells) >= 2, f"{path.name} has fewer than two code cells"
    assert cells[0] == COLAB_CELL, (
        f"{path.name}: the first code cell must be exactly the Colab set-up cell:\n{COLAB_CELL}\n"
        f"--- found:\n{cells[0]}"
    )
    assert cells[1] == SETUP_CELL, f"{path.name}: the second code cell must be exactly:\n{SETUP_CELL}"


class _RecordingShell:
    """Stands in for IPython's shell: records magics and shell commands instead of running them."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []

    def run_line_magic(self, name, line, _stack_depth=1):
        self.calls.append(("line_magic", name, line))

    def run_cell_magic(self, name, line, cell):
        self.calls.append(("cell_magic", name, line))

    def system(self, cmd):
        self.calls.append(("system", "!", cmd))

    getoutput = system


def _run_as_ipython(source: str, colab: bool) -> list[tuple[str, str, str]]:
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(source)
    shell = _RecordingShell()
    saved = {k: sys.modules.get(k) for k in ("google", "google.colab")}
    try:
        if colab:
            google = types.ModuleType("google")
            google.colab = types.ModuleType("google.colab")
            sys.modules["google"] = google
            sys.modules["google.colab"] = google.colab
        else:
            sys.modules.pop("google.colab", None)
        exec(compile(python, "<colab-cell>", "exec"), {"get_ipython": lambda: shell, "__name__": "__main__"})
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return shell.calls


@pytest.mark.parametrize("path", _params())
def test_in_colab_the_chapter_issues_exactly_one_install(path):
    _require(path)
    cells = _code_cells(path)
    calls = _run_as_ipython(cells[0], colab=True)
    assert calls == [("line_magic", "pip", f'install --quiet "kmexplain-utils[real] @ {PACKAGE_URL}"')], calls
    assert _run_as_ipython(cells[0], colab=False) == [], "outside Colab the set-up cell must do nothing"
    # no other cell installs, shells out or uses a magic Colab would not know
    others = []
    for i, src in enumerate(cells[1:], start=2):
        for line in src.splitlines():
            s = line.strip()
            if s.startswith("!"):
                others.append((i, s))
            elif s.startswith("%"):
                name = s.lstrip("%").split()[0] if s.lstrip("%") else ""
                if name not in ALLOWED_MAGICS:
                    others.append((i, s))
            elif re.search(r"\b(pip|conda)\s+install\b|subprocess|os\.system", s):
                others.append((i, s))
    assert not others, f"{path.name}: code cell(s) that Colab would run as shell/magic/install: {others}"


def test_the_install_line_names_this_package_and_keeps_colab_torch():
    args = shlex.split(COLAB_CELL.splitlines()[-1].strip().removeprefix("%pip "))
    assert args[:2] == ["install", "--quiet"] and len(args) == 3
    req = Requirement(args[2])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert canonicalize_name(req.name) == canonicalize_name(project["name"])
    assert req.url == PACKAGE_URL
    # Colab ships torch, torchvision, numpy: the package must accept them as they are
    for dep in project["dependencies"]:
        r = Requirement(dep)
        if canonicalize_name(r.name) in {"torch", "torchvision", "numpy"}:
            assert all(s.operator in (">=", ">") for s in r.specifier), (
                f"{dep}: only lower bounds, or Colab would re-install {r.name}"
            )
    assert SpecifierSet(project["requires-python"]).contains("3.12"), "Colab runs Python 3.12"


# ----------------------------------------------------------------------------- independence

FILE_LITERAL = re.compile(
    r"""(?P<q>['"])(?P<path>[^'"\n]*\.(?:pt|pth|ckpt|npz|npy|csv|json|pkl|pickle|png|jpe?g|h5|txt|parquet|ya?ml))(?P=q)"""
)
# a hard-coded device (a conditional like `"cuda" if cfg.device.type == "cuda" else "cpu"` is fine)
FORBIDDEN = re.compile(
    r"""os\.chdir|__file__|['"]\.\./|['"]\./|\.cuda\(\)"""
    r"""|(?:\.to\(|device\s*=\s*|torch\.device\()\s*['"]cuda(?::\d+)?['"](?!\s+if\b)"""
)


@pytest.mark.parametrize("path", _params())
def test_chapter_reads_and_writes_no_relative_files(path):
    """Everything a chapter keeps goes through the package's cache, never next to the notebooks."""
    _require(path)
    problems = []
    for i, src in enumerate(_code_cells(path), start=1):
        for m in FILE_LITERAL.finditer(src):
            problems.append(f"code cell {i}: file path literal {m.group('path')!r}")
        for m in FORBIDDEN.finditer(src):
            problems.append(f"code cell {i}: {m.group(0)!r}")
    assert not problems, (
        f"{path.name} uses files or devices directly (use the package's cache API and device='auto'): {problems}"
    )


def test_the_static_check_can_fail(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = np.load('features.npz')\nmodel.to('cuda')")]
    bad = tmp_path / "bad.ipynb"
    nbformat.write(nb, bad)
    with pytest.raises(AssertionError, match=r"features\.npz.*to.*cuda"):
        test_chapter_reads_and_writes_no_relative_files(bad)
    nb.cells = [nbformat.v4.new_code_cell('device = "cuda" if cfg.device.type == "cuda" else "cpu"')]
    good = tmp_path / "good.ipynb"
    nbformat.write(nb, good)
    test_chapter_reads_and_writes_no_relative_files(good)


# ----------------------------------------------------------------------------- device

def test_device_falls_back_to_cpu(monkeypatch):
    import torch

    from kmexplain_utils.config import resolve_device
    from kmexplain_utils.chapters.notebook import setup_notebook

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("KMEX_DEVICE", raising=False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    ctx = setup_notebook("smoke", style=False, verbose=False)
    assert ctx.device == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
