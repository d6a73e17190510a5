"""The appendix's fit/explain table is read from the newest saved run, and says what it measures."""

from __future__ import annotations

import json

from kmexplain_utils.chapters.speed_report import fit_explain_report, ratio_words


def _run(date: str, explain_b234: float) -> dict:
    return {
        "date_utc": date, "complete": True, "cpu_model": "test CPU", "cpu_count": 2, "torch_threads": 2,
        "torch": "2.x", "grad_cam": "1.x", "load_average_start": [1.0], "load_average_end": [2.0],
        "setup": {"n_fit": 200, "n_explain": 16, "levels": ["B4", "B234"]},
        "targets": {"fit_over_forward_max": 1.2, "explain_over_forward_max": 1.1, "gradcam_over_explain_min": 2.0},
        "forward_fit_images": {"best_s": 20.0}, "forward_explain_images": {"best_s": 2.0},
        "fit": {"B4": {"best_s": 22.0, "ratio_bracketed": 1.05}, "B234": {"best_s": 30.0}},
        "explain": {"B4": {"best_s": 2.1}, "B234": {"best_s": explain_b234}},
        "gradcam": {"best_s": 5.0},
    }


def test_newest_run_targets_and_words(tmp_path):
    (tmp_path / "fit_explain_a.json").write_text(json.dumps(_run("2026-12-01T00:00:00", 2.0)))
    (tmp_path / "fit_explain_b.json").write_text(json.dumps(_run("2026-12-07T00:00:00", 3.0)))
    rep = fit_explain_report(tmp_path)
    assert rep.run["date_utc"] == "2026-12-07T00:00:00"
    t = rep.table.set_index("method")
    assert t.loc["Explainer.fit, B4", "x forward pass"] == 1.05            # the bracketed ratio wins
    assert abs(t.loc["Explainer.fit, B234", "x forward pass"] - 1.5) < 1e-12
    assert t.loc["Explainer.fit, B234", "met"] == "NO"                     # 1.5 > 1.2: a miss is a miss
    assert t.loc["Explainer.explain, B234", "met"] == "NO"                 # 3.0 / 2.0 = 1.5 > 1.1
    assert t.loc["Explainer.explain, B4", "met"] == "yes"
    assert "B234 is 1.67 x faster" in rep.lines[1] and rep.lines[1].endswith("NOT met")


def test_no_saved_run(tmp_path):
    rep = fit_explain_report(tmp_path)
    assert rep.table is None and rep.run is None and "No fit/explain benchmark saved" in rep.lines[0]


def test_ratio_words():
    assert ratio_words(0.64) == "1.56 x slower" and ratio_words(3.0) == "3.00 x faster" and ratio_words(1.0) == "as fast"
