"""The fit/explain speed benchmark read back for appendix A1.

``benchmarks/fit_explain.py`` times, in one run on the same network and images, a plain forward
pass, ``Explainer.fit``, ``Explainer.explain``,
pytorch-grad-cam's GradCAM and Score-CAM, and writes ``fit_explain_<host>_<date>.json`` (Score-CAM
may have its own ``scorecam_*.json``) into ``benchmarks/results/``. :func:`fit_explain_report`
reads the newest saved run and returns the appendix's table, its sentences and the run itself;
the book never re-runs the benchmark.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..kmeans.bench import default_results_dir

__all__ = ["SpeedReport", "fit_explain_report", "ratio_words"]


@dataclass
class SpeedReport:
    """The newest fit/explain run, as a table and as sentences.

    Attributes
    ----------
    table : pandas.DataFrame or None
        One row per measurement: ``method``, ``images``, ``best of runs (s)``,
        ``x forward pass``, ``target``, ``met`` (``None`` when no run is saved).
    lines : list of str
        The sentences printed under the table (targets met or not, the machine).
    run : dict or None
        The newest ``fit_explain_*.json`` record.
    scorecam : dict or None
        The newest separate ``scorecam_*.json`` record, if any.
    """

    table: Any = None
    lines: list[str] = field(default_factory=list)
    run: dict[str, Any] | None = None
    scorecam: dict[str, Any] | None = None


def ratio_words(speedup: float) -> str:
    """``"2.10 x faster"``, ``"1.57 x slower"`` or ``"as fast"`` for a ratio ``other / ours``.

    Example
    -------
    >>> ratio_words(2.1), ratio_words(0.64), ratio_words(1.001)
    ('2.10 x faster', '1.56 x slower', 'as fast')
    """
    if round(speedup, 2) == 1.0:
        return "as fast"
    return f"{speedup:.2f} x faster" if speedup > 1 else f"{1 / speedup:.2f} x slower"


def _newest(folder: Path | None, pattern: str) -> dict[str, Any] | None:
    if folder is None or not folder.is_dir():
        return None
    runs = [json.loads(f.read_text(encoding="utf-8")) for f in folder.glob(pattern)]
    return max(runs, key=lambda r: r["date_utc"]) if runs else None


def fit_explain_report(folder: str | os.PathLike | None = None) -> SpeedReport:
    """The appendix's table of the newest saved fit/explain benchmark run.

    Parameters
    ----------
    folder : path, optional
        Where the JSON files are (default: ``benchmarks/results`` of this checkout).

    Returns
    -------
    SpeedReport
        Empty (``table is None``) when no run is saved, e.g. in an installed package.

    Notes
    -----
    ``fit``'s ratio is to the mean of the forward passes timed just before and just after it
    (``ratio_bracketed``) when the run has it, else to the best forward pass; ``explain``'s and
    Grad-CAM's to the best forward pass over the same images; Score-CAM's per image.
    """
    import pandas as pd

    path = Path(folder) if folder is not None else default_results_dir()
    fe = _newest(path, "fit_explain_*.json")
    sc = _newest(path, "scorecam_*.json")
    if fe is None:
        return SpeedReport(lines=["No fit/explain benchmark saved: run `python benchmarks/fit_explain.py`."])
    s, tg = fe["setup"], fe["targets"]
    fwd_fit, fwd_exp = fe["forward_fit_images"]["best_s"], fe["forward_explain_images"]["best_s"]
    rows: list[tuple] = [("forward pass", s["n_fit"], fwd_fit, 1.0, "", "")]
    for lv in s["levels"]:
        ratio = fe["fit"][lv].get("ratio_bracketed", fe["fit"][lv]["best_s"] / fwd_fit)
        rows.append((f"Explainer.fit, {lv}", s["n_fit"], fe["fit"][lv]["best_s"], ratio,
                     f"<= {tg['fit_over_forward_max']}", "yes" if ratio <= tg["fit_over_forward_max"] else "NO"))
    rows.append(("forward pass", s["n_explain"], fwd_exp, 1.0, "", ""))
    for lv in s["levels"]:
        ratio = fe["explain"][lv]["best_s"] / fwd_exp
        rows.append((f"Explainer.explain, {lv}", s["n_explain"], fe["explain"][lv]["best_s"], ratio,
                     f"<= {tg['explain_over_forward_max']}",
                     "yes" if ratio <= tg["explain_over_forward_max"] else "NO"))
    rows.append(("GradCAM (pytorch-grad-cam)", s["n_explain"], fe["gradcam"]["best_s"],
                 fe["gradcam"]["best_s"] / fwd_exp, "", ""))
    if "scorecam" in fe:
        rows.append(("ScoreCAM (pytorch-grad-cam), per image", 1, fe["scorecam"]["best_s"],
                     fe["scorecam"]["best_s"] / (fwd_exp / s["n_explain"]), "", ""))
    elif sc is not None:  # its own run: its ratio is to a forward pass of the same single image
        rows.append(("ScoreCAM (pytorch-grad-cam), per image", 1, sc["scorecam"]["best_s"],
                     sc["scorecam"]["ratio_to_one_image_forward_best"], "", ""))
    table = pd.DataFrame(rows, columns=["method", "images", "best of runs (s)", "x forward pass", "target", "met"])
    lines = []
    for lv in s["levels"]:
        speedup = fe["gradcam"]["best_s"] / fe["explain"][lv]["best_s"]
        met = speedup >= tg["gradcam_over_explain_min"]
        lines.append(f"explain {lv} is {ratio_words(speedup)} than GradCAM on the same {s['n_explain']} images "
                     f"(target: at least {tg['gradcam_over_explain_min']:g} x faster): {'met' if met else 'NOT met'}")
    lines.append(f"run of {fe['date_utc']} on {fe['cpu_model']} ({fe['cpu_count']} cores, {fe['torch_threads']} "
                 f"torch threads), torch {fe['torch']}, grad-cam {fe['grad_cam']}; load average "
                 f"{fe['load_average_start'][0]:.1f} at the start, {fe['load_average_end'][0]:.1f} at the end")
    if "scorecam" not in fe and sc is not None:
        lines.append(f"Score-CAM: separate run of {sc['date_utc']} (same model and images, {sc['torch_threads']} "
                     f"torch threads), load average {sc['load_average_start'][0]:.1f} at the start, "
                     f"{sc['load_average_end'][0]:.1f} at the end")
    return SpeedReport(table=table, lines=lines, run=fe, scorecam=sc if "scorecam" not in fe else None)
