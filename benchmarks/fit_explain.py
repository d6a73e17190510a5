"""Fit and explain speed against a plain forward pass, Grad-CAM and Score-CAM, in one run.

Issue 22, item 5: ``Explainer.fit`` is one pass over its training images and
``Explainer.explain`` is forward-only, so both are measured *as ratios to a plain
forward pass of the same network over the same images*, taken in the same run and
interleaved with them (the machines these run on are shared; a ratio of
neighbouring measurements is much steadier than a time).

Setup (defaults): torchvision's ResNet50 with random weights and 10 classes, 224 px
images, ``Explainer.fit`` on 200 images (levels B4 and B234, batches of 64),
``Explainer.explain`` on 16 images, pytorch-grad-cam's ``GradCAM`` (``layer4[-1]``,
the predicted class) on the same 16 images, and ``ScoreCAM`` on 1 image (it runs
the network once per channel of ``layer4``, 2,048 times per image), all on the CPU.

Targets (issue 22): fit <= 1.2 x one forward pass over its training images;
explain <= 1.1 x a forward pass over the same images and >= 2 x faster than Grad-CAM.

Usage::

    python benchmarks/fit_explain.py                      # the issue's setup, 2 threads
    python benchmarks/fit_explain.py --n-fit 20 --n-explain 4 --size 64 --scorecam-images 0 \
        --out /tmp                                        # a smoke run (seconds)

Writes ``<out>/fit_explain_<host>_<yyyymmdd>.json`` (rewritten after each section,
``"complete": false`` until the end) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def forward_pass(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> None:
    """A plain forward pass over ``x`` in batches, no gradient: the reference of every ratio."""
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            model(x[i:i + batch_size])


def summary(times: list[float]) -> dict[str, Any]:
    return {"times_s": [round(t, 4) for t in times], "best_s": round(min(times), 4),
            "median_s": round(statistics.median(times), 4)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-fit", type=int, default=200, help="training images of fit")
    p.add_argument("--n-explain", type=int, default=16, help="images explained (one batch)")
    p.add_argument("--size", type=int, default=224, help="image size in pixels")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--levels", default="B4,B234")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass in fit (and its reference)")
    p.add_argument("--fit-repeats", type=int, default=1, help="repeats of (fit, forward) per level")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the explain section")
    p.add_argument("--scorecam-images", type=int, default=1, help="images for Score-CAM (0: skip)")
    p.add_argument("--scorecam-only", action="store_true",
                   help="only Score-CAM (same model and images), into scorecam_<host>_<yyyymmdd>.json: run it "
                        "beside a main run when time is short")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                   help="folder of the JSON (or a .json path)")
    args = p.parse_args(argv)

    os.environ.setdefault("KMEX_PROGRESS", "0")
    import warnings

    from kmexplain_utils import Explainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet50(weights=None, num_classes=args.classes).eval()
    g = torch.Generator().manual_seed(args.seed)
    x_fit = torch.rand(args.n_fit, 3, args.size, args.size, generator=g)
    y_fit = torch.arange(args.n_fit) % args.classes
    x_exp = torch.rand(args.n_explain, 3, args.size, args.size, generator=g)
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]

    now = _dt.datetime.now(_dt.timezone.utc)
    host = socket.gethostname().split(".")[0] or "host"
    out = Path(args.out)
    stem = "scorecam" if args.scorecam_only else "fit_explain"
    path = out if out.suffix == ".json" else out / f"{stem}_{host}_{now:%Y%m%d}.json"
    import pytorch_grad_cam

    record: dict[str, Any] = {
        "benchmark": "fit_explain",
        "complete": False,
        "date_utc": now.isoformat(timespec="seconds"),
        "host": host,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "grad_cam": getattr(pytorch_grad_cam, "__version__", None) or _dist_version("grad-cam"),
        "git_commit": _git_commit(),
        "command": "python benchmarks/fit_explain.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "setup": {"model": "torchvision resnet50, random weights", "num_classes": args.classes,
                  "image_size": args.size, "n_fit": args.n_fit, "n_explain": args.n_explain,
                  "levels": levels, "batch_size": args.batch_size, "device": "cpu",
                  "explainer": "Explainer(model, level, device='cpu', batch_size) (4 prototypes, 8 concepts)",
                  "gradcam": "pytorch_grad_cam.GradCAM(target_layers=[layer4[-1]]), predicted class",
                  "scorecam": "pytorch_grad_cam.ScoreCAM(target_layers=[layer4[-1]]), predicted class, batch 16"},
        "targets": {"fit_over_forward_max": 1.2, "explain_over_forward_max": 1.1, "gradcam_over_explain_min": 2.0},
    }

    def write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")

    forward_pass(model, x_exp[:2], 2)  # warm-up (allocator, kernels)
    if args.scorecam_only:
        return _scorecam_only(record, model, x_exp, args.scorecam_images, write)

    # ---- fit: forward, fit B4, forward, fit B234, forward ...: every fit between two forward passes
    # over its images, so that a load that drifts during the run cancels in the bracketed ratio
    fwd_fit: list[float] = []
    fits: dict[str, list[float]] = {lv: [] for lv in levels}
    paired: dict[str, list[float]] = {lv: [] for lv in levels}
    explainers: dict[str, Any] = {}
    fwd_fit.append(timed(lambda: forward_pass(model, x_fit, args.batch_size))[0])
    for r in range(args.fit_repeats):
        for lv in levels:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. few images per class in a smoke run
                t_fit, ex = timed(lambda: Explainer(model, level=lv, device="cpu", batch_size=args.batch_size)
                                  .fit(x_fit, y_fit))
            t_f, _ = timed(lambda: forward_pass(model, x_fit, args.batch_size))
            fits[lv].append(t_fit)
            paired[lv].append(t_fit / ((fwd_fit[-1] + t_f) / 2))
            fwd_fit.append(t_f)
            explainers[lv] = ex
            print(f"[fit {r + 1}/{args.fit_repeats}] forward {fwd_fit[-2]:.2f} s, fit {lv} {t_fit:.2f} s, forward "
                  f"{t_f:.2f} s ({paired[lv][-1]:.3f} x their mean)", flush=True)
    record["forward_fit_images"] = summary(fwd_fit)
    record["fit"] = {lv: {**summary(fits[lv]), "bracketed_ratios": [round(v, 4) for v in paired[lv]],
                          "ratio_best": round(min(fits[lv]) / min(fwd_fit), 4),
                          "ratio_bracketed": round(statistics.median(paired[lv]), 4)} for lv in levels}
    record["load_average_after_fit"] = [round(v, 2) for v in os.getloadavg()]
    write()

    # ---- explain: (forward, explain each level, Grad-CAM) interleaved, on the same images
    from pytorch_grad_cam import GradCAM, ScoreCAM

    def gradcam() -> Any:
        with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
            return cam(input_tensor=x_exp, targets=None)

    fwd_exp: list[float] = []
    exps: dict[str, list[float]] = {lv: [] for lv in levels}
    gcs: list[float] = []
    for r in range(args.repeats):
        t_f, _ = timed(lambda: forward_pass(model, x_exp, args.n_explain))
        fwd_exp.append(t_f)
        for lv in levels:
            t_e, _ = timed(lambda: explainers[lv].explain(x_exp))
            exps[lv].append(t_e)
        t_g, _ = timed(gradcam)
        gcs.append(t_g)
        print(f"[explain {r + 1}/{args.repeats}] forward {t_f:.2f} s, "
              + ", ".join(f"explain {lv} {exps[lv][-1]:.2f} s" for lv in levels) + f", GradCAM {t_g:.2f} s",
              flush=True)
    model.eval()
    record["forward_explain_images"] = summary(fwd_exp)
    record["explain"] = {lv: {**summary(exps[lv]), "ratio_best": round(min(exps[lv]) / min(fwd_exp), 4),
                              "gradcam_over_explain_best": round(min(gcs) / min(exps[lv]), 4)} for lv in levels}
    record["gradcam"] = {**summary(gcs), "ratio_best": round(min(gcs) / min(fwd_exp), 4)}
    record["load_average_after_explain"] = [round(v, 2) for v in os.getloadavg()]
    record["targets_met"] = {
        **{f"fit {lv} <= 1.2 x forward": record["fit"][lv]["ratio_bracketed"] <= 1.2 for lv in levels},
        **{f"explain {lv} <= 1.1 x forward": record["explain"][lv]["ratio_best"] <= 1.1 for lv in levels},
        **{f"explain {lv} >= 2 x faster than GradCAM": record["explain"][lv]["gradcam_over_explain_best"] >= 2.0
           for lv in levels},
    }
    record["load_average_end"] = record["load_average_after_explain"]
    record["complete"] = True  # the targets are measured; Score-CAM (long) is added below when it finishes
    record["scorecam_pending"] = args.scorecam_images > 0
    write()

    # ---- Score-CAM: per image (2,048 masked forward passes each at layer4 of ResNet50)
    if args.scorecam_images > 0:
        sc: list[float] = []
        for i in range(min(args.scorecam_images, args.n_explain)):
            with ScoreCAM(model=model, target_layers=[model.layer4[-1]]) as cam:  # (its tqdm bar goes to stderr)
                t_s, _ = timed(lambda: cam(input_tensor=x_exp[i:i + 1], targets=None))
            sc.append(t_s)
            print(f"[Score-CAM] image {i + 1}: {t_s:.1f} s", flush=True)
        model.eval()
        per_image_fwd = min(fwd_exp) / args.n_explain
        record["scorecam"] = {**summary(sc), "per_image": True, "images": len(sc),
                              "ratio_to_one_image_forward_best": round(min(sc) / per_image_fwd, 1),
                              "over_explain_per_image": {lv: round(min(sc) / (min(exps[lv]) / args.n_explain), 1)
                                                         for lv in levels}}

        record["scorecam_pending"] = False
        record["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
        write()

    print(f"\n{record['cpu_model']}, {record['torch_threads']} threads, load {record['load_average_start']} -> "
          f"{record['load_average_end']}")
    print(f"forward, {args.n_fit} images: best {min(fwd_fit):.2f} s; {args.n_explain} images: {min(fwd_exp):.2f} s")
    for lv in levels:
        print(f"fit {lv}: best {min(fits[lv]):.2f} s = {record['fit'][lv]['ratio_best']:.3f} x the best forward; "
              f"{record['fit'][lv]['ratio_bracketed']:.3f} x the mean of the forward passes before and after it")
        print(f"explain {lv}: best {min(exps[lv]):.2f} s = {record['explain'][lv]['ratio_best']:.3f} x forward; "
              f"GradCAM / explain = {record['explain'][lv]['gradcam_over_explain_best']:.2f}")
    print(f"GradCAM: best {min(gcs):.2f} s = {record['gradcam']['ratio_best']:.2f} x forward")
    if "scorecam" in record:
        print(f"Score-CAM: {record['scorecam']['best_s']:.1f} s per image")
    for k, v in record["targets_met"].items():
        print(f"  {'met    ' if v else 'MISSED '} {k}")
    print(f"written {path}")
    return record


def _scorecam_only(record: dict[str, Any], model: torch.nn.Module, x: torch.Tensor, n_images: int,
                   write: Callable[[], None]) -> dict[str, Any]:
    """Score-CAM per image, each run next to a plain forward pass of the same single image."""
    from pytorch_grad_cam import ScoreCAM

    record["benchmark"] = "scorecam"
    fwd, sc = [], []
    for i in range(max(1, n_images)):
        t_f, _ = timed(lambda: forward_pass(model, x[i:i + 1], 1))
        fwd.append(t_f)
        with ScoreCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
            t_s, _ = timed(lambda: cam(input_tensor=x[i:i + 1], targets=None))
        model.eval()
        sc.append(t_s)
        print(f"[Score-CAM] image {i + 1}: {t_s:.1f} s (forward of that image {t_f:.2f} s)", flush=True)
    record["forward_one_image"] = summary(fwd)
    record["scorecam"] = {**summary(sc), "per_image": True, "images": len(sc),
                          "ratio_to_one_image_forward_best": round(min(sc) / min(fwd), 1)}
    record["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    record["complete"] = True
    write()
    print(f"written {record['scorecam']}")
    return record


def _git_commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    main(sys.argv[1:])
