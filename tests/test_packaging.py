"""The project frame: pyproject vs environment.yml, installable metadata, a strict book config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# the repository's address: its one place is pyproject.toml's [project.urls] (tests/test_release.py)
REPO_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(strings) -> dict[str, str]:
    """name -> normalised requirement (name, extras, specifier, marker)."""
    out: dict[str, str] = {}
    for s in strings:
        req = Requirement(s)
        name = canonicalize_name(req.name)
        key = f"{name}{sorted(req.extras)}{req.specifier}{req.marker or ''}"
        if name in out and out[name] != key:
            raise AssertionError(f"{name} is required twice with different specs: {out[name]} vs {key}")
        out[name] = key
    return out


def _pyproject_requirements() -> dict[str, str]:
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ("book", "test", "bench", "release"):
        reqs += project["optional-dependencies"][extra]
    return _requirements(reqs)


def _environment_pip() -> list[str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert any(str(d).replace(" ", "").startswith("python=3.11") for d in deps if isinstance(d, str)), (
        "environment.yml must pin python=3.11"
    )
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip: section"
    return [str(x) for x in pip_sections[0]]


def test_environment_yml_matches_pyproject():
    pip = _environment_pip()
    editable = [x for x in pip if x.startswith("-e")]
    assert editable == ["-e ."], f"environment.yml should install the package itself with '-e .', got {editable}"
    env_reqs = _requirements(x for x in pip if not x.startswith("-"))
    py_reqs = _pyproject_requirements()
    only_py = sorted(set(py_reqs) - set(env_reqs))
    only_env = sorted(set(env_reqs) - set(py_reqs))
    assert not only_py and not only_env, (
        f"pyproject.toml (core+book+test+bench+release) and environment.yml differ: only in pyproject {only_py}, "
        f"only in environment.yml {only_env}"
    )
    differing = {n: (py_reqs[n], env_reqs[n]) for n in py_reqs if py_reqs[n] != env_reqs[n]}
    assert not differing, f"same packages, different version specifiers: {differing}"


def test_pyproject_is_valid_and_finds_all_subpackages():
    from setuptools.config.pyprojecttoml import read_configuration

    config = read_configuration(ROOT / "pyproject.toml")  # validates against the schema
    project = config["project"]
    assert project["name"] == "kmexplain-utils"
    assert (ROOT / project["readme"]).is_file()
    import kmexplain_utils

    assert project["version"] == kmexplain_utils.__version__
    assert "jupyter-book>=1.0.4,<2" in [r.replace(" ", "") for r in project["optional-dependencies"]["book"]]


@pytest.mark.slow
def test_wheel_builds_with_all_modules_and_metadata(tmp_path):
    """Build a real wheel from a copy of the sources (nothing is written into the repository)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "kmexplain_utils", src / "kmexplain_utils", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("kmexplain_utils-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    expected = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "kmexplain_utils").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    missing = sorted(expected - names)
    assert not missing, f"modules missing from the wheel (packages.find?): {missing}"
    assert meta["Name"] == "kmexplain-utils"
    import kmexplain_utils

    assert meta["Version"] == kmexplain_utils.__version__, "the wheel's version comes from kmexplain_utils.__version__"
    assert meta["License-Expression"] == "MIT"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "LICENSE must ship in the wheel"
    core = {canonicalize_name(Requirement(r).name) for r in _pyproject()["project"]["dependencies"]}
    declared = {
        canonicalize_name(Requirement(r).name)
        for r in meta.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    assert core == declared


# ---------------------------------------------------------------------------- the book config

def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def test_config_is_strict():
    cfg = _config()
    ex = cfg["execute"]
    assert ex["execute_notebooks"] == "force", "CI builds must re-execute every chapter"
    assert ex["allow_errors"] is False
    assert ex["raise_on_error"] is True
    assert isinstance(ex["timeout"], int) and 60 <= ex["timeout"] <= 3600
    assert cfg["only_build_toc_files"] is True


def test_config_colab_launch_buttons_and_bibtex():
    cfg = _config()
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    # the address itself comes from pyproject.toml (book/_ext/kmex_release.py), not from _config.yml
    assert cfg["repository"] == {"branch": "main", "path_to_book": ""}
    assert REPO_URL.startswith("https://github.com/")
    bibs = cfg["bibtex_bibfiles"]
    assert bibs == ["book/references.bib"] and (ROOT / bibs[0]).is_file()
    # sphinxcontrib.bibtex is one of Jupyter Book 1's default extensions; make sure it is installed
    import sphinxcontrib.bibtex  # noqa: F401


def test_config_local_extension_exists_and_excludes():
    cfg = _config()
    ext = cfg["sphinx"]["local_extensions"]
    for name, path in ext.items():
        assert (ROOT / path / f"{name}.py").is_file(), f"local extension {name} not found in {path}"
    excluded = set(cfg["exclude_patterns"])
    assert {".venv", "_build", "DESIGN.md", "benchmarks", "_widgets_js"} <= excluded


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def test_toc_entries_exist():
    for f in _toc_files():
        matches = [p for p in (ROOT / f"{f}.md", ROOT / f"{f}.ipynb", ROOT / f) if p.is_file()]
        assert len(matches) == 1, f"_toc.yml entry {f!r}: expected exactly one of .md/.ipynb, found {matches}"


def test_every_chapter_notebook_is_in_the_toc():
    listed = set(_toc_files())
    chapters = sorted((ROOT / "book").glob("*.ipynb"))
    missing = [p.name for p in chapters if p.relative_to(ROOT).with_suffix("").as_posix() not in listed]
    assert not missing, f"chapters not listed in _toc.yml (they would not be built): {missing}"


def test_bibliography_has_the_required_works():
    bib = (ROOT / "book" / "references.bib").read_text()
    for needle in ("2603.28466", "Without Re-training", "2406.04933", "Discriminative Localization",
                   "Grad-{CAM}", "This Looks Like That"):
        assert needle in bib, f"references.bib lacks {needle!r}"


def test_every_cited_key_is_in_references_bib():
    import re

    bib = (ROOT / "book" / "references.bib").read_text()
    keys = set(re.findall(r"@\w+\{([^,\s]+),", bib))
    sources = list((ROOT / "book").glob("*.md")) + list((ROOT / "book").glob("*.ipynb"))
    cited: dict[str, str] = {}
    for path in sources:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text()):
            for key in group.split(","):
                cited.setdefault(key.strip(), path.name)
    unknown = {k: f for k, f in cited.items() if k not in keys}
    assert not unknown, f"cited keys missing from book/references.bib: {unknown}"


# ---------------------------------------------------------------------------- the two commands

def test_readme_ci_and_makefile_agree():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.strip().startswith("#")]
    assert (ROOT / ".ci" / "run").read_text().startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in ci
    assert ci[-1] == "make test", f".ci/run must end by running the README's test command, not {ci[-1]!r}"
    assert "make test-colab" in ci, ".ci/run must run the Colab-pins stage (make test-colab)"
    assert os.access(ROOT / ".ci" / "run", os.X_OK), ".ci/run must be executable"
    makefile = (ROOT / "Makefile").read_text()
    for target in ("book:", "test:", "install:", "test-colab:"):
        assert f"\n{target}" in makefile, f"Makefile lacks the {target[:-1]} target"
    assert "jupyter-book build . -W -n --keep-going" in makefile, "make book must build strictly"
    assert "torch==2.14.1 torchvision==0.29.1" in makefile
