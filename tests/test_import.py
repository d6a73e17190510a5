"""Importing the package has no side effects: no socket, no file written, no global state changed."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter: an audit hook records sockets and writes, then imports each of
# MODULES in turn and reports, per module, what its import did.
PROBE = r"""
import json, os, sys, warnings, importlib

MODULES = sys.argv[1].split(",")
PRELOAD = sys.argv[2].split(",") if sys.argv[2] else []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
events = []
armed = False

def hook(event, args):
    if not armed:
        return
    if event.startswith("socket."):
        events.append(f"{event} {args!r}"[:200])
    elif event == "open":
        path, mode, flags = args
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = bool((flags or 0) & WRITE_FLAGS)
        if writes:
            events.append(f"open for writing: {path!r} mode={mode!r} flags={flags!r}")
    elif event in ("os.mkdir", "os.remove", "os.rename", "os.rmdir", "os.symlink", "os.link",
                   "os.truncate", "shutil.copyfile", "shutil.rmtree", "shutil.move", "os.chmod",
                   "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.fork"):
        events.append(f"{event} {args!r}"[:200])

sys.addaudithook(hook)
for name in PRELOAD:            # third-party libraries' own import effects are not ours
    importlib.import_module(name)
report = {}
for module in MODULES:
    events.clear()
    filters_before = list(warnings.filters)
    showwarning_before = warnings.showwarning
    modules_before = set(sys.modules)
    mpl_before = None
    if "matplotlib" in sys.modules:
        import matplotlib
        mpl_before = dict(matplotlib.rcParams)
    armed = True
    importlib.import_module(module)
    armed = False
    mpl_changed = None
    if mpl_before is not None:
        import matplotlib
        mpl_changed = dict(matplotlib.rcParams) != mpl_before
    report[module] = {
        "events": list(events),
        "filters_changed": list(warnings.filters) != filters_before,
        "showwarning_changed": warnings.showwarning is not showwarning_before,
        "matplotlib_imported": "matplotlib" in sys.modules,
        "mpl_style_changed": mpl_changed,
        "new_modules": sorted(m for m in set(sys.modules) - modules_before if "." not in m),
    }
print("KMEX_PROBE" + json.dumps(report))
"""


def _probe(modules: list[str], preload: tuple[str, ...] = (), tmp_path: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMEX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # .pyc caches are Python's, not the package's
    env["OMP_NUM_THREADS"] = "1"
    if tmp_path is not None:
        env["HOME"] = str(tmp_path)  # a write to a default cache would be caught, not done
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.run(
        [sys.executable, "-B", "-c", PROBE, ",".join(modules), ",".join(preload)],
        capture_output=True, text=True, cwd=str(tmp_path or ROOT), env=env, timeout=300,
    )
    assert proc.returncode == 0, f"import of {modules} failed:\n{proc.stderr[-3000:]}"
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("KMEX_PROBE"))
    return json.loads(line[len("KMEX_PROBE"):])


def test_import_package_is_pure(tmp_path):
    """`python -c "import kmexplain_utils"`: nothing at all happens but the import."""
    result = _probe(["kmexplain_utils"], tmp_path=tmp_path)["kmexplain_utils"]
    assert result["events"] == [], f"import kmexplain_utils opened sockets or wrote files: {result['events']}"
    assert not result["filters_changed"], "import kmexplain_utils changed warnings.filters"
    assert not result["showwarning_changed"]
    assert not result["matplotlib_imported"], "import kmexplain_utils imported matplotlib"
    heavy = {"torch", "matplotlib", "pandas", "seaborn", "faiss", "ipywidgets", "sklearn"}
    assert not heavy & set(result["new_modules"]), (
        f"import kmexplain_utils loads heavy modules eagerly: {sorted(heavy & set(result['new_modules']))}"
    )
    assert list(tmp_path.iterdir()) == [], "import kmexplain_utils created files in the working directory"


def test_probe_detects_a_write_and_a_socket(tmp_path):
    """The audit hook really sees writes and sockets (so the test above can fail)."""
    mod = tmp_path / "naughty_mod.py"
    mod.write_text(
        "import socket, warnings\n"
        "open('written.txt', 'w').close()\n"
        "socket.socket().close()\n"
        "warnings.simplefilter('ignore')\n"
    )
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env_path}" if env_path else str(tmp_path)
    try:
        result = _probe(["naughty_mod"], tmp_path=tmp_path)["naughty_mod"]
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            del os.environ["PYTHONPATH"]
    assert any("written.txt" in e for e in result["events"])
    assert any(e.startswith("socket.") for e in result["events"])
    assert result["filters_changed"]


def _submodules() -> list[str]:
    import kmexplain_utils

    names = []
    for info in pkgutil.walk_packages(kmexplain_utils.__path__, "kmexplain_utils."):
        if info.name.split(".")[-1] in {"__main__"}:
            continue
        names.append(info.name)
    return sorted(names)


@pytest.mark.slow
def test_import_every_submodule_is_pure(tmp_path):
    """Every module: no socket, no file write, no warnings filter, no matplotlib style change.

    Third-party libraries are imported first, so that only the package's own effects count
    (torchvision, for one, creates a directory in /tmp when its models are imported).
    """
    preload = ("torch", "torchvision", "torchvision.models", "torch.distributed", "numpy", "scipy",
               "matplotlib", "matplotlib.pyplot", "sklearn", "sklearn.cluster", "sklearn.metrics",
               "PIL.Image", "tqdm.auto")
    report = _probe(_submodules(), preload=preload, tmp_path=tmp_path)
    problems = {}
    for name, r in report.items():
        bad = []
        if r["events"]:
            bad.append(f"side effects {r['events']}")
        if r["filters_changed"]:
            bad.append("changed warnings.filters")
        if r["mpl_style_changed"]:
            bad.append("changed matplotlib.rcParams")
        if bad:
            problems[name] = bad
    assert not problems, f"modules with import-time side effects: {problems}"
