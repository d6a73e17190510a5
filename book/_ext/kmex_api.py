"""Generate the API reference of ``kmexplain_utils`` from ``__all__`` at build time.

The pages are never edited by hand: at every build (Sphinx ``config-inited``,
before ``sphinx_external_toc`` reads ``_toc.yml``) this extension imports
``kmexplain_utils`` and every public sub-module that :mod:`pkgutil` finds
(any dotted part starting with ``_`` is private and skipped), and writes one
reStructuredText page per module that has an ``__all__`` into
``book/api/generated/`` (git-ignored). ``_toc.yml`` lists that folder with a
glob under ``book/api/index``, so a new module or a new public name appears in
the navigation without editing the docs.

Each page has the module docstring (``automodule``), a summary table of its
``__all__`` (``autosummary``) and the full entries (``autofunction``,
``autoclass``, ``autoexception``, ``autodata``); the NumPy-style sections
(Parameters, Returns, Raises, Example...) are rendered by
``sphinx.ext.napoleon``. An object exported by several modules (a re-export,
or the lazily loaded names of ``kmexplain_utils.__all__``) is documented once,
in its *home* module (the one that defines it when that module exports it,
else the first public module that does), and the other tables link there.
Cross-references to the other public spellings (``kmexplain_utils.KMeans``,
a re-export ``kmexplain_utils.kmeans.NotFittedError``) are resolved to the
home entry by a ``missing-reference`` handler.

A module that fails to import is a build warning (the strict build fails),
never silently left out. Regenerate by hand (what the build does)::

    .venv/bin/python book/_ext/kmex_api.py [OUTDIR]
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "kmexplain_utils"
OUTDIR = "book/api/generated"  # relative to the Sphinx source directory (the repository root)


@dataclass
class ApiModel:
    """What the generator found: public modules, their ``__all__`` and each object's home."""

    modules: dict[str, list[str]] = field(default_factory=dict)  # module -> its __all__
    home: dict[str, str] = field(default_factory=dict)  # "module.name" -> documented full name
    kinds: dict[str, str] = field(default_factory=dict)  # documented full name -> autodoc directive
    bases: dict[str, bool] = field(default_factory=dict)  # documented class -> has bases besides object
    errors: list[str] = field(default_factory=list)  # import problems (build warnings)


def _is_private(modname: str) -> bool:
    return any(part.startswith("_") for part in modname.split("."))


def public_modules(package: str = PACKAGE, errors: list[str] | None = None) -> list[str]:
    """The package and every sub-module found by pkgutil, private ones (``_x``) skipped."""
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.", onerror=(
        lambda name: errors.append(f"{name}: could not be imported while walking the package")
        if errors is not None else None
    )):
        if not _is_private(info.name):
            names.append(info.name)
    return sorted(set(names))


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return "autofunction"
    return "autodata"


def _identity(obj: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` of a class or function, None for plain data."""
    if inspect.isclass(obj) or inspect.isfunction(obj):
        mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if isinstance(mod, str) and isinstance(qual, str) and "<" not in qual:
            return mod, qual
    return None


def collect(package: str = PACKAGE) -> ApiModel:
    """Import every public module and read its ``__all__``."""
    model = ApiModel()
    objects: dict[str, Any] = {}
    for modname in public_modules(package, model.errors):
        try:
            module = importlib.import_module(modname)
        except Exception as exc:  # noqa: BLE001 -- reported as a build warning, never skipped silently
            model.errors.append(f"{modname}: import failed: {type(exc).__name__}: {exc}")
            continue
        names = getattr(module, "__all__", None)
        if names is None:
            continue
        model.modules[modname] = [str(n) for n in names]
        for name in model.modules[modname]:
            try:
                objects[f"{modname}.{name}"] = getattr(module, name)
            except Exception as exc:  # noqa: BLE001
                model.errors.append(f"{modname}: __all__ lists {name!r} but getting it failed: {exc}")

    # home of a class/function: its defining module when that exports it, else the first
    # public module (package page last, so a sub-module wins) that exports it
    exporters: dict[tuple[str, str], list[str]] = {}
    order = sorted(model.modules, key=lambda m: (m == package, m))
    for modname in order:
        for name in model.modules[modname]:
            full = f"{modname}.{name}"
            if full not in objects:
                continue
            ident = _identity(objects[full])
            if ident is not None:
                exporters.setdefault(ident, []).append(full)
    for modname in order:
        for name in model.modules[modname]:
            full = f"{modname}.{name}"
            if full not in objects:
                continue
            obj = objects[full]
            ident = _identity(obj)
            home = full
            if ident is not None:
                candidates = exporters[ident]
                own = [c for c in candidates if c == f"{ident[0]}.{ident[1]}"]
                home = own[0] if own else candidates[0]
            model.home[full] = home
            model.kinds.setdefault(home, _kind(objects[home]))
            if inspect.isclass(objects[home]):
                # a private base (e.g. a shared set-up class) has no page to link to: shown only if public
                model.bases[home] = any(b is not object and not b.__name__.startswith("_")
                                        for b in objects[home].__bases__)
    return model


def _title(text: str, char: str = "=") -> list[str]:
    return [text, char * len(text), ""]


def render_module(model: ApiModel, modname: str) -> str:
    """The reStructuredText page of one module."""
    names = model.modules[modname]
    lines = [
        ".. This page is generated by book/_ext/kmex_api.py from __all__ at every build: do not edit.",
        "",
        # short titles keep the navigation readable (sem, data.base); the entries show full names
        *_title(f"``{modname.split('.', 1)[1] if '.' in modname else modname}``"),
        f".. automodule:: {modname}",
        "   :no-members:",
        "",
        f".. currentmodule:: {modname}",
        "",
    ]
    if not names:
        lines += ["This module exports no names (its ``__all__`` is empty).", ""]
        return "\n".join(lines)
    lines += [".. rubric:: Public names", "", ".. autosummary::", "   :nosignatures:", ""]
    here, elsewhere = [], []
    for name in names:
        full = f"{modname}.{name}"
        if full not in model.home:
            continue
        home = model.home[full]
        if home == full:
            here.append(name)
            lines.append(f"   {name}")
        else:
            elsewhere.append((name, home))
            # autosummary wants names below the current module relative to it
            rel = home[len(modname) + 1:] if home.startswith(f"{modname}.") else home
            lines.append(f"   ~{rel}")
    lines.append("")
    if elsewhere:
        lines += ["The names shown without an entry below are documented in the module that defines them "
                  "(the links in the table lead there).", ""]
    for name in here:
        kind = model.kinds[f"{modname}.{name}"]
        lines.append(f".. {kind}:: {name}")
        if kind in ("autoclass", "autoexception"):
            lines.append("   :members:")
            if model.bases.get(f"{modname}.{name}"):
                lines.append("   :show-inheritance:")
        lines.append("")
    return "\n".join(lines)


#: how the index groups the modules: (folder or None for the package's top, heading); order of the tree
TREE_SECTIONS: tuple[tuple[str | None, str], ...] = (
    (None, "The method (the modules at the top of the package)"),
    ("kmeans", "``kmeans/`` -- the k-means engine and its benchmark"),
    ("data", "``data/`` -- the book's data sets"),
    ("chapters", "``chapters/`` -- the book's machinery: models, pretrained weights, training, notebooks"),
    ("evaluation", "``evaluation/`` -- the quantitative evaluation and its command line"),
)


def _section(modname: str) -> str | None:
    """The folder a module lives in (``None``: the top of the package, or a folder without a section)."""
    parts = modname.split(".")
    folders = {f for f, _ in TREE_SECTIONS if f}
    return parts[1] if len(parts) > 1 and parts[1] in folders else None


def render_index(model: ApiModel) -> str:
    """The table of every public module (included by ``book/api/index.md``), one section per folder of the tree."""
    lines = [
        ".. This file is generated by book/_ext/kmex_api.py from __all__ at every build: do not edit.",
        "",
    ]
    for folder, heading in TREE_SECTIONS:
        mods = sorted(m for m in model.modules if _section(m) == folder)
        if not mods:
            continue
        lines += [f".. rubric:: {heading}", "", ".. autosummary::", "", *(f"   {m}" for m in mods), ""]
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False  # unchanged: keep the mtime, so Sphinx does not re-read the page
    path.write_text(text, encoding="utf-8")
    return True


def write_pages(outdir: str | Path, package: str = PACKAGE, model: ApiModel | None = None) -> ApiModel:
    """Write one page per public module (``<module>.rst``) and ``_modules.rst.inc`` into *outdir*.

    Pages of modules that no longer exist are removed. Returns the model (with its
    ``errors``: the caller decides how to report them).
    """
    model = model or collect(package)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"{m}.rst": render_module(model, m) for m in model.modules}
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for filename, text in wanted.items():
        _write_if_changed(out / filename, text)
    _write_if_changed(out / "_modules.rst.inc", render_index(model))
    return model


# ------------------------------------------------------------------------------- Sphinx glue

def _generate(app, config) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    outdir = Path(app.srcdir) / config.kmex_api_outdir
    model = write_pages(outdir, config.kmex_api_package)
    app.env_kmex_api = model  # for the missing-reference handler
    for problem in model.errors:
        logger.warning("[kmex_api] %s", problem, type="kmex_api", subtype="import")
    logger.info("[kmex_api] %d API pages in %s", len(model.modules), config.kmex_api_outdir)


def _targets(model: ApiModel, package: str, target: str, modname: str | None) -> list[str]:
    """Documented full names that *target* (as written in *modname*) can mean, best first."""
    target = target.lstrip(".~")
    spellings = [target]
    if modname:
        spellings.append(f"{modname}.{target}")
    if not target.startswith(f"{package}."):
        spellings.append(f"{package}.{target}")
    out = [model.home[s] for s in spellings if s in model.home and model.home[s] != s]
    if not out and "." not in target:
        # a bare name that autodoc could not qualify (an annotation imported under
        # TYPE_CHECKING, say): the one documented public object of that name, if unique
        same = sorted({home for home in model.kinds if home.rsplit(".", 1)[-1] == target})
        if len(same) == 1:
            out = same
    if not out and "." in target:
        # a member of such a name: LevelFeatures.position_features written in another module
        head, rest = target.split(".", 1)
        out = [f"{home}.{rest}" for home in _targets(model, package, head, modname)]
    return out


def _resolve_alias(app, env, node, contnode):
    """Resolve the other public spellings of a documented object to its entry.

    ``kmexplain_utils.KMeans`` (a lazy name of the package), a re-export such as
    ``kmexplain_utils.kmeans.NotFittedError``, or a bare public name such as
    ``ImageSet`` in a signature all lead to the one entry that documents the object.
    """
    if node.get("refdomain") != "py":
        return None
    model: ApiModel | None = getattr(app, "env_kmex_api", None)
    if model is None:
        return None
    domain = env.get_domain("py")
    for home in _targets(model, app.config.kmex_api_package, node.get("reftarget", ""), node.get("py:module")):
        new = node.deepcopy()
        new["reftarget"] = home
        new["refspecific"] = False
        resolved = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], home, new, contnode)
        if resolved is not None:
            return resolved
    return None


def _skip_foreign_member(app, what, name, obj, skip, options):
    """Leave out class members that another library put there, with its docstring.

    scikit-learn adds ``set_fit_request``/``set_score_request`` to every estimator
    class (metadata routing); they are scikit-learn's API, documented there, and
    their docstrings use scikit-learn's own glossary and labels.
    """
    if what not in ("class", "exception") or skip:
        return None
    func = obj.fget if isinstance(obj, property) else obj
    module = getattr(func, "__module__", None)
    package = app.config.kmex_api_package
    if (inspect.isfunction(func) or inspect.ismethod(func)) and isinstance(module, str):
        if module != package and not module.startswith(f"{package}."):
            return True
    return None


_DATA_DOCS: dict[str, list[str]] = {}


def _data_doc_before_napoleon(app, what, name, obj, options, lines) -> None:
    """Module-level data: keep its ``#:`` comment as written, drop a docstring of its type.

    napoleon reads ``#: Default module of each block: ...`` as ``type: description``
    (an inline attribute type), and an undocumented ``dict`` constant would show
    ``dict``'s own docstring. Runs before napoleon; :func:`_data_doc_after_napoleon`
    puts the text back.
    """
    if what != "data" or not name.startswith(f"{app.config.kmex_api_package}."):
        return
    type_doc = inspect.getdoc(type(obj)) or ""
    text = "\n".join(lines).strip()
    if text and type_doc and text == type_doc.strip():
        lines[:] = []  # the type's docstring, not the constant's
    _DATA_DOCS[name] = list(lines)


def _data_doc_after_napoleon(app, what, name, obj, options, lines) -> None:
    if what == "data" and name in _DATA_DOCS:
        lines[:] = _DATA_DOCS.pop(name)


def _patch_autosummary_summary() -> None:
    """Do not cut an autosummary summary inside an inline literal.

    autosummary ends the summary at the first ". ", also inside ````s_c = w_c . a````,
    which leaves an unclosed literal (a warning). Where that happens, cut at the first
    sentence end outside a literal instead (or keep the whole first paragraph).
    """
    from sphinx.ext import autosummary

    original = autosummary.extract_summary
    if getattr(original, "_kmex", False):
        return

    def extract_summary(doc: list[str], document) -> str:
        summary = original(doc, document)
        if summary.count("``") % 2 == 0:
            return summary
        para = []
        for line in doc:
            if not line.strip():
                if para:
                    break
                continue
            para.append(line.strip())
        text = " ".join(para)
        parts = text.split("``")
        pos = 0
        for i, part in enumerate(parts):
            if i % 2 == 0:  # outside a literal
                cut = part.find(". ")
                if cut >= 0:
                    return text[: pos + cut + 1]
            pos += len(part) + 2
        return text

    extract_summary._kmex = True
    autosummary.extract_summary = extract_summary


def setup(app) -> dict[str, Any]:
    app.add_config_value("kmex_api_package", PACKAGE, "env")
    app.add_config_value("kmex_api_outdir", OUTDIR, "env")
    # before sphinx_external_toc (priority 900) expands the glob in _toc.yml
    app.connect("config-inited", _generate, priority=100)
    app.connect("missing-reference", _resolve_alias)
    app.connect("autodoc-skip-member", _skip_foreign_member)
    app.connect("autodoc-process-docstring", _data_doc_before_napoleon, priority=400)
    app.connect("autodoc-process-docstring", _data_doc_after_napoleon, priority=600)
    _patch_autosummary_summary()
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else root / OUTDIR
    result = write_pages(target)
    for problem in result.errors:
        print(f"warning: {problem}", file=sys.stderr)
    print(f"{len(result.modules)} API pages in {target}")
    sys.exit(1 if result.errors else 0)
