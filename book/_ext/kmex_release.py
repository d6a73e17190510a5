"""The release facts of the site, each read from the one place it lives.

- The **version** is ``__version__`` in ``kmexplain_utils/__init__.py`` (read from the source tree
  being built, without importing it; ``pyproject.toml`` reads the same line). It becomes Sphinx's
  ``version`` and ``release`` and is shown in every page's footer.
- The **repository's address** is ``Repository`` in ``pyproject.toml``'s ``[project.urls]``. It
  becomes the theme's ``repository_url``, from which sphinx-book-theme makes the repository button
  (switched on here: Jupyter Book refuses ``use_repository_button`` without a url in
  ``_config.yml``) and each chapter's Colab launch button (``_config.yml`` gives only the branch
  and the book's path). The chapters' Colab install cell cannot read it (Colab runs the notebook as it is):
  ``tests/test_release.py`` checks that the cell names the same repository.
- The **footer** names the licences: the code under MIT (``LICENSE``), the text and figures under
  CC BY 4.0 (``LICENSE-CONTENT``), the third-party material listed in ``THIRD_PARTY.md``, and how to
  cite (``CITATION.cff``), each linked to the file in the repository.

A missing version or repository address stops the build with a message that says where to put it.
"""

from __future__ import annotations

import ast
import html
import tomllib
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ConfigError
from sphinx.util import logging

logger = logging.getLogger(__name__)

VERSION_FILE = Path("kmexplain_utils") / "__init__.py"
CC_BY = "https://creativecommons.org/licenses/by/4.0/"


def read_version(root: Path) -> str:
    """``__version__`` of ``root/kmexplain_utils/__init__.py``, read without importing the package.

    Parameters
    ----------
    root : Path
        The repository root (the book's source directory).

    Returns
    -------
    str
        The version string, e.g. ``"0.2.0"``.

    Raises
    ------
    sphinx.errors.ConfigError
        When the file or its ``__version__ = "..."`` line is missing.
    """
    path = root / VERSION_FILE
    if not path.is_file():
        raise ConfigError(f"[kmex_release] {path} not found: the version lives in kmexplain_utils/__init__.py")
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    raise ConfigError(f'[kmex_release] {path} has no line __version__ = "X.Y.Z"')


def read_repository_url(root: Path) -> str:
    """``Repository`` of ``[project.urls]`` in ``root/pyproject.toml``.

    Raises
    ------
    sphinx.errors.ConfigError
        When ``pyproject.toml`` or the entry is missing.
    """
    path = root / "pyproject.toml"
    if not path.is_file():
        raise ConfigError(f"[kmex_release] {path} not found: the repository's address lives in its [project.urls]")
    urls = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {}).get("urls", {})
    url = urls.get("Repository", "").strip().rstrip("/")
    if not url.startswith("https://"):
        raise ConfigError(f'[kmex_release] {path} needs [project.urls] Repository = "https://..." '
                          "(the site's repository and Colab buttons are made from it)")
    return url


def footer_html(version: str, repo: str, branch: str = "main") -> str:
    """The footer: version, the licences of code and content, third-party material, citation."""
    def link(name: str, text: str) -> str:
        return f'<a href="{html.escape(f"{repo}/blob/{branch}/{name}")}">{text}</a>'

    return (
        f'<p class="kmex-footer">kmexplain {html.escape(version)} &middot; '
        f"Code: {link('LICENSE', 'MIT licence')} &middot; "
        f'Text and figures: <a href="{CC_BY}" rel="license">CC BY 4.0</a> '
        f"({link('LICENSE-CONTENT', 'terms')}) &middot; "
        f"Photographs, pretrained weights, data sets and scripts by others keep their own licences: "
        f"{link('THIRD_PARTY.md', 'third-party material')} &middot; "
        f"{link('CITATION.cff', 'How to cite')} &middot; {link('CHANGELOG.md', 'Changes')}</p>"
    )


def _on_config_inited(app: Sphinx, config: Config) -> None:
    root = Path(app.srcdir)
    version = read_version(root)
    repo = read_repository_url(root)
    config.version = version
    config.release = version
    options = dict(config.html_theme_options or {})
    given = options.get("repository_url", "").rstrip("/")
    if given and given != repo and "executablebooks/jupyter-book" not in given:
        logger.info("[kmex_release] repository url %s replaced by pyproject.toml's %s", given, repo)
    options["repository_url"] = repo
    options["use_repository_button"] = True
    options["extra_footer"] = footer_html(version, repo, options.get("repository_branch") or "main")
    config.html_theme_options = options


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _on_config_inited, priority=100)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
