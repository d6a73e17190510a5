"""Serve the widget renderer and MathJax from local files, so the site works offline.

``scripts/fetch_widget_js.sh`` (run by ``make book``) takes
``@jupyter-widgets/html-manager`` (``embed-amd.js``), ``requirejs``
(``require.js``) and MathJax 3 from the npm registry into the git-ignored
folder ``_widgets_js/`` at the book root. When that folder is there, this
extension

- adds it to ``html_static_path`` (its files are copied to ``_static/``),
- points myst-nb's ``nb_ipywidgets_js`` at the local ``require.js`` and
  ``embed-amd.js`` (replacing the CDN defaults, so they load once), and
- points ``mathjax_path`` at the local MathJax.

When it is missing, the build keeps the CDN defaults and says so in an
info line (not a warning: the strict build ``-W`` must still pass).

It never serves outputs computed by another version of the package: in every
execution mode (``force`` included) it discards Sphinx's saved environment
(``<doctrees>/environment.pickle``) when the package (``kmexplain_utils/``,
``pyproject.toml``) or ``KMEX_PROFILE`` changed since the last build, so that
Sphinx re-reads, and myst-nb re-executes, every chapter. (Sphinx alone
re-reads a chapter only when the chapter's own file changed.) The key of the
last build is kept in ``<doctrees>/kmex_package_key``.

It also lets a local build reuse executed outputs: ``KMEX_BOOK_EXECUTE=cache``
(``make book BOOK_EXECUTE=cache``) switches ``execute_notebooks`` from
``force`` to ``cache``, and the cache is wiped whenever the package
(``kmexplain_utils/``, ``pyproject.toml``) or ``KMEX_PROFILE`` changed, because
jupyter-cache keys on the code cells only.

The folder is deliberately not called ``_static``: Jupyter Book adds a
``_static`` folder by itself, and the widget scripts would then load twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

logger = logging.getLogger(__name__)

FOLDER = "_widgets_js"
MATHJAX = "mathjax/es5/tex-mml-chtml.js"


def _local_assets(root: Path) -> Path | None:
    folder = root / FOLDER
    needed = ("require.js", "embed-amd.js")
    if all((folder / name).is_file() for name in needed):
        return folder
    return None


def package_key(root: Path) -> str:
    """Hash of the package's files, ``pyproject.toml`` and ``KMEX_PROFILE``."""
    digest = hashlib.sha256()
    digest.update(os.environ.get("KMEX_PROFILE", "quick").encode())
    # every file of the package (modules and any data files it ships), not the bytecode caches
    package = [
        p for p in (root / "kmexplain_utils").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    ]
    files = sorted(package) + [root / "pyproject.toml"]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


ENV_KEY_FILE = "kmex_package_key"


def _refresh_environment(app: Sphinx) -> None:
    """Drop Sphinx's saved environment when the package key changed: every chapter is re-read."""
    doctrees = Path(app.doctreedir)
    stamp = doctrees / ENV_KEY_FILE
    key = package_key(Path(app.srcdir))
    if stamp.is_file() and stamp.read_text().strip() == key:
        return
    env_file = doctrees / "environment.pickle"
    if env_file.is_file():
        env_file.unlink()
        logger.info("[kmex_assets] package or profile changed: every chapter is re-read and re-executed")
    doctrees.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")


def _configure_execution(app: Sphinx, config: Config) -> None:
    mode = os.environ.get("KMEX_BOOK_EXECUTE", "").strip()
    if not mode:
        return
    if mode not in {"force", "cache", "auto", "off"}:
        raise ValueError(f"KMEX_BOOK_EXECUTE={mode!r}: use force, cache, auto or off.")
    config.nb_execution_mode = mode
    if mode == "off":
        # nothing is executed, so nothing is glued: the cross-page glue of the results at a glance
        # (book/intro.md <- 05_evaluation) has no value to paste; that is expected, not an error
        # (and the chapter headers' own compute and reading times, glued by each chapter's last cell)
        config.suppress_warnings = [*(config.suppress_warnings or []), "mystnb.glue_ref", "mystnb.glue"]
    if mode != "cache":
        return
    cache = config.nb_execution_cache_path or str(Path(app.outdir).parent / ".jupyter_cache")
    cache_path = Path(cache)
    if not cache_path.is_absolute():
        cache_path = Path(app.srcdir) / cache_path
    key = package_key(Path(app.srcdir))
    stamp = cache_path.parent / ".kmex_package_key"
    if stamp.is_file() and stamp.read_text().strip() == key:
        logger.info("[kmex_assets] execution cache %s is current", cache_path)
        return
    if cache_path.exists():
        shutil.rmtree(cache_path)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(key + "\n")
    logger.info("[kmex_assets] package or profile changed: cleared the execution cache %s", cache_path)


def _on_config_inited(app: Sphinx, config: Config) -> None:
    _configure_execution(app, config)
    if getattr(app, "doctreedir", None):
        _refresh_environment(app)
    folder = _local_assets(Path(app.srcdir))
    if folder is None:
        logger.info(
            "[kmex_assets] %s/ not found (run scripts/fetch_widget_js.sh, needs npm): "
            "widgets and math load their scripts from the CDN.",
            FOLDER,
        )
        return
    static = list(config.html_static_path or [])
    if str(folder) not in static:
        static.append(str(folder))
    config.html_static_path = static
    # Relative paths are served from _static/ (where html_static_path is copied).
    config.nb_ipywidgets_js = {"require.js": {}, "embed-amd.js": {}}
    if (folder / MATHJAX).is_file():
        config.mathjax_path = MATHJAX
    logger.info("[kmex_assets] using the local widget renderer and MathJax from %s/", FOLDER)


def setup(app: Sphinx) -> dict[str, Any]:
    # Run before myst-nb and sphinx.ext.mathjax read these values.
    app.connect("config-inited", _on_config_inited, priority=100)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
