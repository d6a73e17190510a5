"""``scripts/book_times.py``: each chapter's execution time from the build's Sphinx environment."""

from __future__ import annotations

import importlib.util
import json
import pickle
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("book_times", ROOT / "scripts" / "book_times.py")
book_times = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book_times)


def _write_env(build: Path, nb_metadata: dict) -> None:
    """A stand-in for Sphinx's environment.pickle: only the attribute the script reads."""
    (build / ".doctrees").mkdir(parents=True)
    env = types.SimpleNamespace(nb_metadata=nb_metadata)
    (build / ".doctrees" / "environment.pickle").write_bytes(pickle.dumps(env))


def _exec(runtime, succeeded=True, method="force"):
    return {"exec_data": {"runtime": runtime, "method": method, "succeeded": succeeded, "mtime": 1.7e9}}


def test_table_total_and_json(tmp_path, capsys):
    _write_env(tmp_path, {"book/00_data": _exec(61.5), "book/05_evaluation": _exec(200.25),
                          "book/intro": {}})  # a markdown page has no execution record
    out_json = tmp_path / "times.json"
    assert book_times.main(["--build", str(tmp_path), "--json", str(out_json), "--budget", "600"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[1:]] == ["book/00_data", "book/05_evaluation", "total"]
    assert printed[-1].split()[1] == "261.8"  # 61.5 + 200.25, one decimal
    saved = json.loads(out_json.read_text())
    assert saved["total_seconds"] == pytest.approx(261.75)
    assert [c["docname"] for c in saved["chapters"]] == ["book/00_data", "book/05_evaluation"]


def test_over_budget_and_failed_chapters_are_reported(tmp_path, capsys):
    _write_env(tmp_path, {"book/00_data": _exec(400.0), "book/01_cnn": _exec(250.0, succeeded=False)})
    assert book_times.main(["--build", str(tmp_path), "--budget", "600"]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "over the budget of 600 s" in captured.err
    assert book_times.main(["--build", str(tmp_path), "--budget", "700"]) == 0


def test_missing_or_corrupt_environment_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="build the book first"):
        book_times.read_exec_data(tmp_path)
    (tmp_path / ".doctrees").mkdir()
    (tmp_path / ".doctrees" / "environment.pickle").write_bytes(b"not a pickle")
    with pytest.raises(SystemExit, match="cannot read .* rebuild the book"):
        book_times.read_exec_data(tmp_path)


def test_no_execution_recorded_is_an_error(tmp_path, capsys):
    _write_env(tmp_path, {"book/intro": {}})
    assert book_times.main(["--build", str(tmp_path)]) == 1
    assert "no notebook execution recorded" in capsys.readouterr().err
