#!/usr/bin/env python
"""Every chapter in the paper profile on a CUB-200-2011 stand-in of full size, timed (issue 17).

The paper profile (ResNet34 from torchvision's ImageNet weights, KMEx's fine-tuning recipe, CUB at
224 px, three seeds) is what a Colab user with a GPU runs. Here nothing can be downloaded, so the
script builds what the profile would download: a generated copy of CUB's file layout with CUB's
sizes (200 classes, 30 training and 29 test images each: 6,000 / 5,800 against CUB's 5,994 /
5,794, with 15 keypoints per bird) and a stand-in ResNet34 weights file where torchvision looks
for it (``tests/paper_standin.py``). Then it executes every chapter in a fresh kernel, one after
the other, and writes after each one ``OUT/gpu_paper_chapters.json``: the device, each chapter's
seconds, whether it ran through, and how many hidden checks only warned (the chapters' claims are
about the book's data, not about a stand-in, so ``KMEX_STRICT_CHECKS`` is off and a failed check
warns instead of raising).

Usage (from the repository root)::

    python benchmarks/gpu_paper_chapters.py --out /tmp/out                 # on a GPU: full size
    python benchmarks/gpu_paper_chapters.py --out /tmp/out --size tiny     # anywhere: a 3-class check of the script
    python benchmarks/gpu_paper_chapters.py --out /tmp/out --chapters 00,05 --budget 540

``--size tiny`` runs the ``paper-smoke`` profile on a 3-class stand-in (about a minute per chapter
on a CPU). ``--budget`` stops starting chapters once that many seconds have passed, so that a
lent machine's time limit still returns the chapters that finished. The stand-in and the cache
are kept in ``OUT`` between calls: a second call reuses the trained networks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9A][0-9]_*.ipynb"))
SIZES = {
    "full": {"profile": "paper", "n_classes": 200, "n_train_per_class": 30, "n_test_per_class": 29},
    "tiny": {"profile": "paper-smoke", "n_classes": 3, "n_train_per_class": 4, "n_test_per_class": 2},
}


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def make_standin(base: Path, size: str) -> Path:
    """The CUB stand-in and the weights file under ``base`` (reused when already there)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from paper_standin import make_cub_standin, make_resnet34_weights

    spec = {k: v for k, v in SIZES[size].items() if k != "profile"}
    marker = base / "standin.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == spec):
        make_cub_standin(base, **spec)
        make_resnet34_weights(base / "cache")
        marker.write_text(json.dumps(spec))
    return base


def run_chapter(path: Path, workdir: Path, timeout: int) -> dict:
    """Execute one chapter in a fresh kernel; its seconds, success, warned checks and profile line."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    error = None
    try:
        client.execute()
    except Exception as exc:  # a cell raised or timed out: keep the chapter's record
        error = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(exc).__name__}: {exc}")[-2000:]
    seconds = time.perf_counter() - start
    text = "\n".join(
        out.get("text", "") if isinstance(out.get("text", ""), str) else "".join(out["text"])
        for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    profile_line = next((line.strip() for line in text.splitlines() if "profile=" in line), None)
    return {"chapter": path.stem, "seconds": round(seconds, 1), "succeeded": error is None,
            "checks_warned": text.count("Check failed:"), "profile_line": profile_line, "error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--chapters", default="", help="comma-separated prefixes, e.g. 00,05 (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="start no chapter after this many seconds")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)

    wanted = [c.strip() for c in args.chapters.split(",") if c.strip()]
    chapters = [p for p in CHAPTERS if not wanted or any(p.stem.startswith(w) for w in wanted)]
    if not chapters:
        parser.error(f"no chapter matches {args.chapters!r}; chapters: {', '.join(p.stem for p in CHAPTERS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base = make_standin(args.out / "standin", args.size)
    from paper_standin import standin_env

    weights = base / "cache" / "weights"
    (args.out / "cache" / "weights").mkdir(parents=True, exist_ok=True)
    for f in weights.iterdir():  # the stand-in weights where the package's loader looks
        shutil.copy(f, args.out / "cache" / "weights" / f.name)
    os.environ.update({
        "KMEX_PROFILE": SIZES[args.size]["profile"], "KMEX_CUB_ROOT": str(base),
        "KMEX_CACHE": str(args.out / "cache"), "KMEX_PROGRESS": "0", "MPLBACKEND": "Agg",
        **standin_env(next(weights.iterdir())),
    })
    os.environ.pop("KMEX_STRICT_CHECKS", None)  # a stand-in is not the book's data: checks warn
    report = {"device": _device(), "size": args.size, "profile": SIZES[args.size]["profile"],
              "standin": {k: v for k, v in SIZES[args.size].items() if k != "profile"},
              "standin_seconds": round(time.perf_counter() - t0, 1), "chapters": []}
    out_file = args.out / "gpu_paper_chapters.json"
    for path in chapters:
        if args.budget is not None and time.perf_counter() - t0 > args.budget:
            report["chapters"].append({"chapter": path.stem, "skipped": "over the budget"})
            continue
        record = run_chapter(path, args.out / "cwd" / path.stem, args.timeout)
        report["chapters"].append(record)
        report["total_seconds"] = round(sum(c.get("seconds", 0.0) for c in report["chapters"]), 1)
        out_file.write_text(json.dumps(report, indent=1))
        print(f"{record['chapter']:<24} {record['seconds']:8.1f} s  {'ok' if record['succeeded'] else 'FAILED'}"
              f"  checks warned: {record['checks_warned']}", flush=True)
    out_file.write_text(json.dumps(report, indent=1))
    print(f"{'total':<24} {report.get('total_seconds', 0.0):8.1f} s on {report['device']} -> {out_file}")
    return 0 if all(c.get("succeeded", True) for c in report["chapters"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
