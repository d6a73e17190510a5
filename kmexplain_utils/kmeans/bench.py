"""Benchmark of the k-means engine against scikit-learn and faiss.

Command line (one JSON line per engine, then one with the ratios)::

    python -m kmexplain_utils.kmeans.bench kmeans --n 200000 --d 896 --k 64 --iters 20
    python -m kmexplain_utils.kmeans.bench kmeans --device cuda --k 256
    python -m kmexplain_utils.kmeans.bench kmeans --stream --n 4700000      # streamed fit, peak RSS

Every engine starts from the same initial centroids on the same CNN-like data
(a post-ReLU Gaussian mixture), runs ``--iters`` Lloyd iterations (``tol=0``),
and the engines alternate over ``--repeats`` rounds so that load changes on a
shared machine hit all of them alike. By default each run happens in a fresh
process (``--isolate``), so that its peak extra memory is measured cleanly
(``ru_maxrss`` minus the resident size before the fit); ``--no-isolate``
runs everything in this process and samples the resident size instead.

Reported per engine: median seconds per iteration, GFLOP/s of the distance
products (``2 n d k`` per iteration), the fraction of the matrix-product peak
measured in the same run for the same shape, peak extra memory (and its
fraction of the data size), the engine's final inertia, and the exact
inertia of its final centroids (evaluated afterwards, the same way for all).

The functions are importable for the book's appendix (:func:`bench_kmeans`,
:func:`bench_stream`, :func:`make_cnn_like`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._figures import new_axes
from ._dist import cpu_has_bf16
from .estimator import POINTS_PER_CENTROID, KMeans

__all__ = [
    "ENGINES",
    "EXTRA_ENGINES",
    "make_cnn_like",
    "cnn_like_batches",
    "initial_centroids",
    "measure_matmul_peak",
    "exact_inertia",
    "run_engine",
    "bench_kmeans",
    "bench_bf16",
    "bench_stream",
    "machine_info",
    "book_sizes",
    "load_results",
    "results_table",
    "ratios_table",
    "plot_seconds_per_iter",
    "plot_distance_fraction",
    "markdown_report",
    "main",
]

ENGINES = ("project", "sklearn", "faiss")
#: Further engines for like-for-like comparisons: the project's engine without
#: Hamerly's bounds, and scikit-learn's bounded exact algorithm (Elkan).
EXTRA_ENGINES = ("project-lloyd", "sklearn-elkan")
_ALGORITHMS = {"project-lloyd": "lloyd", "sklearn": "lloyd", "sklearn-elkan": "elkan", "faiss": "lloyd"}


# --------------------------------------------------------------------------- data
def _modes(d: int, n_modes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_modes, d, generator=g)


def _cnn_like_batch(modes: torch.Tensor, b: int, seed: int, noise: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randint(modes.shape[0], (b,), generator=g)
    x = torch.randn(b, modes.shape[1], generator=g).mul_(noise)
    x.add_(modes[z])
    return x.relu_()


def make_cnn_like(
    n: int,
    d: int,
    *,
    n_modes: int = 256,
    noise: float = 1.0,
    seed: int = 0,
    batch_size: int = 65536,
) -> np.ndarray:
    """CNN-like features: a post-ReLU Gaussian mixture, float32 ``(n, d)``.

    ``x = relu(mu_z + noise * eps)`` with ``n_modes`` random means ``mu`` and
    ``eps ~ N(0, I)``: non-negative, about half zeros, clustered but
    overlapping, like pooled or per-position CNN activations.
    """
    out = np.empty((n, d), dtype=np.float32)
    s = 0
    for b in cnn_like_batches(n, d, n_modes=n_modes, noise=noise, seed=seed, batch_size=batch_size)():
        out[s : s + len(b)] = b
        s += len(b)
    return out


def cnn_like_batches(
    n: int,
    d: int,
    *,
    n_modes: int = 256,
    noise: float = 1.0,
    seed: int = 0,
    batch_size: int = 65536,
) -> Callable[[], Iterator[np.ndarray]]:
    """A zero-argument callable returning a fresh iterator of CNN-like batches.

    Batch ``i`` is a deterministic function of ``(seed, i)``, so every pass
    sees the same data, and nothing but one batch is ever held in memory. The
    batches are the rows :func:`make_cnn_like` would return with the same
    arguments.
    """
    modes = _modes(d, n_modes, seed)

    def batches() -> Iterator[np.ndarray]:
        for i, s in enumerate(range(0, n, batch_size)):
            e = min(n, s + batch_size)
            yield _cnn_like_batch(modes, e - s, seed * 1_000_003 + i + 1, noise).numpy()

    return batches


def memmap_batches(path: str | os.PathLike, batch_size: int = 65536) -> Callable[[], Iterator[np.ndarray]]:
    """Batches read from a ``.npy`` file by plain file reads (the page cache is not ours).

    The rows are read into one reused buffer with ``readinto``, so the
    resident size of the process stays at one batch.
    """
    path = Path(path)
    mm = np.load(path, mmap_mode="r")  # only to read the header: shape, dtype, data offset
    shape, dtype, offset, fortran = mm.shape, mm.dtype, int(mm.offset), bool(np.isfortran(mm))
    del mm
    if fortran or dtype != np.float32 or len(shape) != 2:
        raise ValueError(f"{path} must hold a C-ordered float32 (n, d) array, got {dtype} {shape}.")
    n, d = shape

    def batches() -> Iterator[np.ndarray]:
        buf = np.empty((batch_size, d), dtype=np.float32)
        with open(path, "rb", buffering=0) as fh:
            fh.seek(offset)
            for s in range(0, n, batch_size):
                b = min(batch_size, n - s)
                view = memoryview(buf[:b]).cast("B")
                got = 0
                while got < view.nbytes:
                    r = fh.readinto(view[got:])
                    if not r:
                        raise OSError(f"unexpected end of {path}")
                    got += r
                yield buf[:b]

    return batches


def initial_centroids(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` distinct rows of ``X`` (float32 copy): the common starting point of all engines."""
    idx = np.sort(np.random.default_rng(seed).choice(X.shape[0], k, replace=False))
    return np.ascontiguousarray(X[idx], dtype=np.float32)


# --------------------------------------------------------------------------- measurements
def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, threads, versions, GPU name: the context of a result."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    try:
        info["loadavg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        pass
    for mod in ("sklearn", "faiss", "numpy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            info[mod] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(
    n: int, d: int, k: int, *, device: str | torch.device = "cpu", repeats: int = 3, max_rows: int = 200_000
) -> float:
    """Best GFLOP/s of one ``(n, d) @ (d, k)`` float32 product (the distance product's shape).

    ``n`` is capped at ``max_rows`` (the rate does not depend on it beyond
    that). The best of ``repeats`` runs of a single BLAS call is the
    reference "peak" for this shape on this machine at this moment.
    """
    dev = torch.device(device)
    n = min(n, max_rows)
    g = torch.Generator().manual_seed(0)
    A = torch.rand(n, d, generator=g).to(dev)
    B = torch.rand(d, k, generator=g).to(dev)
    out = torch.empty(n, k, device=dev)
    torch.mm(A, B, out=out)
    _sync(dev)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(A, B, out=out)
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n * d * k / best / 1e9


def exact_inertia(X: np.ndarray | torch.Tensor, C: np.ndarray | torch.Tensor, chunk: int = 8192) -> float:
    """Sum of squared distances to the nearest centroid, in float64 (reference evaluation)."""
    Xt = torch.as_tensor(X)
    Ct = torch.as_tensor(C).to(device=Xt.device, dtype=torch.float64)
    c_sq = (Ct * Ct).sum(1)
    total = 0.0
    for s in range(0, Xt.shape[0], chunk):
        xc = Xt[s : s + chunk].to(torch.float64)
        dist = torch.addmm(c_sq, xc, Ct.t(), alpha=-2.0).add_((xc * xc).sum(1, keepdim=True))
        total += float(dist.min(1).values.clamp_min(0).sum())
    return total


def _rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc``, else psutil)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        import psutil

        return int(psutil.Process().memory_info().rss)


class _RSSPeak:
    """Sample the resident size in a thread; ``peak_extra`` = max RSS - RSS at entry (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_extra = 0

    def __enter__(self) -> "_RSSPeak":
        self._base = _rss_bytes()
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_extra = self._peak - self._base


def _maxrss_bytes() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def run_engine(
    engine: str,
    X: np.ndarray,
    C0: np.ndarray,
    iters: int,
    *,
    device: str = "cpu",
    matmul_dtype: str = "float32",
    chunk_size: int | None = None,
    use_maxrss: bool = False,
) -> dict[str, Any]:
    """Run one engine for ``iters`` Lloyd iterations from ``C0``; time and memory.

    Parameters
    ----------
    engine : {"project", "project-lloyd", "sklearn", "sklearn-elkan", "faiss"}
        ``"project"`` is :class:`~kmexplain_utils.kmeans.KMeans` with its
        default ``algorithm="auto"`` (Hamerly's bounds on the CPU for ``d k >= 16384``);
        ``"project-lloyd"`` forces plain Lloyd iterations; ``"sklearn"`` is
        scikit-learn's ``algorithm="lloyd"``, ``"sklearn-elkan"`` its
        ``algorithm="elkan"``.
    X : np.ndarray, shape (n, d), float32
    C0 : np.ndarray, shape (k, d), float32
    iters : int
    device : str
        For the project's engine only (the others run on the CPU).
    use_maxrss : bool
        Measure peak memory with ``ru_maxrss`` (valid in a fresh process)
        instead of sampling the resident size.

    Returns
    -------
    dict
        ``seconds``, ``n_iter``, ``s_per_iter``, ``peak_extra_bytes``,
        ``inertia`` (the engine's own), ``centers`` (np.ndarray).
    """
    k = C0.shape[0]
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    Xin: Any = X
    project = engine in ("project", "project-lloyd")
    if project and gpu:
        Xin = torch.from_numpy(X).to(dev)  # data on the GPU before timing, like a real pipeline
        torch.cuda.reset_peak_memory_stats(dev)
        base_gpu = torch.cuda.memory_allocated(dev)
    if engine in ("sklearn", "sklearn-elkan"):
        from sklearn.cluster import KMeans as SKKMeans  # imports outside the timed region
    elif engine == "faiss":
        import faiss
    computed = None  # fraction of the points whose distances were computed (project only)
    algorithm = {"sklearn": "lloyd", "sklearn-elkan": "elkan", "faiss": "lloyd"}.get(engine)
    rss0 = _rss_bytes()
    maxrss0 = _maxrss_bytes()
    with _RSSPeak() as mem:
        t0 = time.perf_counter()
        if project:
            km = KMeans(
                k, init=C0, n_init=1, max_iter=iters, tol=0.0, device=dev,
                matmul_dtype=matmul_dtype, chunk_size=chunk_size, distributed=False,
                algorithm="lloyd" if engine == "project-lloyd" else "auto",
            ).fit(Xin)
            _sync(dev)
            centers = np.asarray(torch.as_tensor(km.cluster_centers_).float().cpu())  # numpy or tensor, as the input
            inertia, n_iter = km.inertia_, km.n_iter_
            computed = float(km.distance_fraction_.mean())
            algorithm = km.algorithm_
        elif engine in ("sklearn", "sklearn-elkan"):
            algo = "elkan" if engine == "sklearn-elkan" else "lloyd"
            sk = SKKMeans(k, init=C0, n_init=1, max_iter=iters, tol=0.0, algorithm=algo).fit(X)
            centers, inertia, n_iter = sk.cluster_centers_, float(sk.inertia_), int(sk.n_iter_)
        elif engine == "faiss":
            faiss.omp_set_num_threads(torch.get_num_threads())
            fk = faiss.Kmeans(
                X.shape[1], k, niter=iters, seed=0, verbose=False, max_points_per_centroid=X.shape[0] + 1,
                min_points_per_centroid=1,
            )
            fk.train(X, init_centroids=C0)
            centers, inertia, n_iter = fk.centroids, float(fk.obj[-1]), int(len(fk.obj))
        else:
            raise ValueError(f"unknown engine {engine!r}; choose from {ENGINES + EXTRA_ENGINES}")
        seconds = time.perf_counter() - t0
    peak = mem.peak_extra
    maxrss1 = _maxrss_bytes()
    if use_maxrss and maxrss1 > maxrss0:  # the fit set a new high-water mark
        peak = max(peak, maxrss1 - rss0)
    out = {
        "seconds": seconds,
        "n_iter": n_iter,
        "s_per_iter": seconds / max(1, n_iter),
        "peak_extra_bytes": int(peak),
        "inertia": inertia,
        "distance_fraction": computed,
        "algorithm": algorithm,
        "centers": np.asarray(centers, dtype=np.float32),
    }
    if project and gpu:
        out["peak_extra_bytes"] = int(torch.cuda.max_memory_allocated(dev) - base_gpu)
        out["memory_kind"] = "gpu"
    return out


def _engine_available(engine: str) -> bool:
    try:
        if engine == "faiss":
            import faiss  # noqa: F401
        elif engine.startswith("sklearn"):
            import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _worker_main(argv: Sequence[str]) -> None:
    """Subprocess entry: run one engine on saved data, print one JSON line."""
    p = argparse.ArgumentParser()
    p.add_argument("--engine", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--init", required=True)
    p.add_argument("--iters", type=int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--centers-out", required=True)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    X = np.load(a.data)
    C0 = np.load(a.init)
    res = run_engine(a.engine, X, C0, a.iters, device=a.device, chunk_size=a.chunk_size, use_maxrss=True)
    np.save(a.centers_out, res.pop("centers"))
    print("KMEX_RESULT " + json.dumps(res), flush=True)


def _run_isolated(engine: str, data_path: str, init_path: str, iters: int, device: str,
                  chunk_size: int | None, tmp: str) -> dict[str, Any]:
    centers_path = os.path.join(tmp, f"centers_{engine}.npy")
    cmd = [
        sys.executable, "-m", "kmexplain_utils.kmeans.bench", "_worker", "--engine", engine, "--data", data_path,
        "--init", init_path, "--iters", str(iters), "--device", device,
        "--threads", str(torch.get_num_threads()), "--centers-out", centers_path,
    ]
    if chunk_size:
        cmd += ["--chunk-size", str(chunk_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("KMEX_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"engine {engine} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(line[len("KMEX_RESULT "):])
    res["centers"] = np.load(centers_path)
    return res


def bench_kmeans(
    n: int = 200_000,
    d: int = 896,
    k: int = 64,
    iters: int = 20,
    *,
    device: str = "cpu",
    repeats: int = 3,
    engines: Sequence[str] = ENGINES + EXTRA_ENGINES,
    seed: int = 0,
    isolate: bool = False,
    chunk_size: int | None = None,
    n_modes: int | None = None,
) -> list[dict[str, Any]]:
    """Time the engines on the same data from the same initial centroids.

    Parameters
    ----------
    n, d, k, iters : int
        Data size, number of clusters, Lloyd iterations.
    device : str
        Device of the project's engine (scikit-learn and faiss use the CPU).
    repeats : int
        Rounds; in each round every engine runs once, in a rotating order.
    engines : sequence of str
        Any of ``"project"``, ``"sklearn"``, ``"faiss"`` and the extra engines
        ``"project-lloyd"``, ``"sklearn-elkan"`` (see :func:`run_engine`); missing libraries
        are skipped (reported with ``"skipped"``).
    isolate : bool
        Run every engine in a fresh process (clean peak-memory figures).

    Returns
    -------
    list of dict
        One record per engine (``engine``, ``s_per_iter``, ``gflops``,
        ``frac_peak``, ``peak_extra_mb``, ``extra_mem_frac``,
        ``inertia``, ``inertia_exact`` ...), then one ``{"engine": "ratios", ...}``.
    """
    engines = [e for e in engines]
    skipped = [e for e in engines if not _engine_available(e)]
    engines = [e for e in engines if e not in skipped]
    X = make_cnn_like(n, d, n_modes=n_modes or 4 * k, seed=seed)
    C0 = initial_centroids(X, k, seed=seed + 1)
    data_mb = X.nbytes / 2**20
    runs: dict[str, list[dict[str, Any]]] = {e: [] for e in engines}
    peaks: list[float] = []
    tmp_ctx = tempfile.TemporaryDirectory(prefix="kmex_bench_") if isolate else None
    try:
        if isolate:
            data_path = os.path.join(tmp_ctx.name, "X.npy")
            init_path = os.path.join(tmp_ctx.name, "C0.npy")
            np.save(data_path, X)
            np.save(init_path, C0)
        for r in range(repeats):
            peaks.append(measure_matmul_peak(n, d, k, device=device))
            order = engines[r % len(engines):] + engines[: r % len(engines)]
            for e in order:
                dev = device if e.startswith("project") else "cpu"
                if isolate:
                    res = _run_isolated(e, data_path, init_path, iters, dev, chunk_size, tmp_ctx.name)
                else:
                    res = run_engine(e, X, C0, iters, device=dev, chunk_size=chunk_size)
                runs[e].append(res)
            peaks.append(measure_matmul_peak(n, d, k, device=device))
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    peak = max(peaks)
    peak_cpu = peak if device == "cpu" else None
    flops = 2.0 * n * d * k
    info = machine_info(device)
    records = []
    for e in engines:
        rs = runs[e]
        spi = statistics.median(r["s_per_iter"] for r in rs)
        on_gpu = e.startswith("project") and device != "cpu"
        ref_peak = peak if (on_gpu or device == "cpu") else None
        rec = {
            "engine": e,
            "device": device if e.startswith("project") else "cpu",
            "n": n, "d": d, "k": k, "iters": iters, "repeats": repeats,
            "n_iter": rs[-1]["n_iter"],
            "s_per_iter": spi,
            "s_per_iter_all": [round(r["s_per_iter"], 5) for r in rs],
            "algorithm": rs[-1].get("algorithm") or _ALGORITHMS.get(e, e),
            "distance_fraction": rs[-1].get("distance_fraction"),
            "gflops": flops / spi / 1e9,
            "peak_gflops": ref_peak if ref_peak is not None else peak_cpu,
            "frac_peak": (flops / spi / 1e9) / ref_peak if ref_peak else None,
            "peak_extra_mb": max(r["peak_extra_bytes"] for r in rs) / 2**20,
            "memory_kind": rs[-1].get("memory_kind", "host"),
            "data_mb": data_mb,
            "extra_mem_frac": max(r["peak_extra_bytes"] for r in rs) / X.nbytes,
            "inertia": rs[-1]["inertia"],
            "inertia_exact": exact_inertia(X, rs[-1]["centers"]),
            "isolated": isolate,
            "machine": info,
        }
        records.append(rec)
    for e in skipped:
        records.append({"engine": e, "skipped": f"{e} is not installed"})
    by = {r["engine"]: r for r in records if "s_per_iter" in r}
    ratio: dict[str, Any] = {"engine": "ratios", "n": n, "d": d, "k": k, "device": device}
    if "project" in by:
        for other in ("faiss", "sklearn", "sklearn-elkan", "project-lloyd"):
            if other in by:
                ratio[f"project/{other}"] = by["project"]["s_per_iter"] / by[other]["s_per_iter"]
                ratio[f"inertia_rel_diff_vs_{other}"] = (
                    by["project"]["inertia_exact"] - by[other]["inertia_exact"]
                ) / by[other]["inertia_exact"]
        ratio["project_frac_peak"] = by["project"]["frac_peak"]
        ratio["project_extra_mem_frac"] = by["project"]["extra_mem_frac"]
    records.append(ratio)
    return records


def bench_bf16(
    n: int = 200_000, d: int = 896, k: int = 64, iters: int = 20, *, device: str = "cpu", seed: int = 0
) -> dict[str, Any]:
    """bf16 vs full-precision distance products from the same start: time, label flips, inertia change."""
    X = make_cnn_like(n, d, n_modes=4 * k, seed=seed)
    C0 = initial_centroids(X, k, seed=seed + 1)

    Xin: Any = torch.from_numpy(X).to(device)
    out: dict[str, Any] = {"engine": "project-bf16", "device": device, "n": n, "d": d, "k": k, "iters": iters}
    fits = {}
    for dt in ("float32", "bfloat16"):
        t0 = time.perf_counter()
        km = KMeans(k, init=C0, max_iter=iters, tol=0.0, device=device, matmul_dtype=dt, distributed=False).fit(Xin)
        _sync(torch.device(device))
        fits[dt] = (km, time.perf_counter() - t0)
    a, b = fits["float32"][0], fits["bfloat16"][0]
    out["s_per_iter_fp32"] = fits["float32"][1] / a.n_iter_
    out["s_per_iter_bf16"] = fits["bfloat16"][1] / b.n_iter_
    out["label_flips"] = int((a.labels_ != b.labels_).sum())
    out["label_flip_frac"] = out["label_flips"] / n
    out["inertia_fp32"] = a.inertia_
    out["inertia_bf16"] = b.inertia_
    out["inertia_rel_change"] = (b.inertia_ - a.inertia_) / a.inertia_

    out["native_bf16"] = bool(torch.cuda.is_bf16_supported()) if device.startswith("cuda") else cpu_has_bf16()
    out["machine"] = machine_info(device)
    return out


def bench_stream(
    n: int = 4_700_000,
    d: int = 896,
    k: int = 64,
    *,
    device: str = "cpu",
    batch_size: int = 65536,
    seed: int = 0,
    source: str = "generator",
    path: str | None = None,
    max_iter: int = 20,
) -> dict[str, Any]:
    """A streamed fit: features made (or read) batch by batch, never all in memory.

    Parameters
    ----------
    source : {"generator", "memmap"}
        ``"generator"`` synthesises each batch on the fly; ``"memmap"`` reads
        them from the ``.npy`` file ``path`` (written first if missing, by
        the generator, batch by batch).

    Returns
    -------
    dict
        Times of the sampling pass, the fit on the sample and the labelling
        pass, peak RSS of the process (``ru_maxrss`` and sampled), data size,
        inertia.
    """
    gen = cnn_like_batches(n, d, n_modes=4 * k, seed=seed, batch_size=batch_size)
    write_s = None
    if source == "memmap":
        if path is None:
            raise ValueError("source='memmap' needs a path for the .npy file.")
        if not Path(path).exists():
            t0 = time.perf_counter()
            mm = np.lib.format.open_memmap(path + ".part", mode="w+", dtype=np.float32, shape=(n, d))
            s = 0
            for b in gen():
                mm[s : s + len(b)] = b
                s += len(b)
                mm.flush()
            del mm
            os.replace(path + ".part", path)
            write_s = time.perf_counter() - t0
        base = memmap_batches(path, batch_size)
    elif source == "generator":
        base = gen
    else:
        raise ValueError(f"source must be 'generator' or 'memmap', got {source!r}.")

    marks: list[tuple[str, float]] = []
    produce = [0.0]

    def timed() -> Iterator[np.ndarray]:
        marks.append(("start", time.perf_counter()))
        it = base()
        while True:
            t0 = time.perf_counter()
            try:
                b = next(it)
            except StopIteration:
                break
            produce[0] += time.perf_counter() - t0
            yield b
        marks.append(("end", time.perf_counter()))

    rss_before = _rss_bytes()
    with _RSSPeak(interval=0.05) as mem:
        t0 = time.perf_counter()
        km = KMeans(k, random_state=seed, max_iter=max_iter, device=device, distributed=False).fit(timed)
        total = time.perf_counter() - t0
    starts = [t for m, t in marks if m == "start"]
    ends = [t for m, t in marks if m == "end"]
    return {
        "engine": "project-stream",
        "device": device,
        "source": source,
        "n": n, "d": d, "k": k,
        "batch_size": batch_size,
        "data_gb": n * d * 4 / 1e9,
        "sample_size": POINTS_PER_CENTROID * k,
        "seconds_total": total,
        "seconds_sampling_pass": ends[0] - starts[0],
        "seconds_fit_on_sample": starts[1] - ends[0],
        "seconds_labelling_pass": ends[1] - starts[1],
        "seconds_producing_batches": produce[0],
        "seconds_writing_file": write_s,
        "n_iter": km.n_iter_,
        "inertia": km.inertia_,
        "peak_rss_gb": max(_maxrss_bytes(), rss_before + mem.peak_extra) / 1e9,
        "rss_before_fit_gb": rss_before / 1e9,
        "peak_extra_during_fit_gb": mem.peak_extra / 1e9,
        "machine": machine_info(device),
    }


# --------------------------------------------------------------------------- reading and showing results
#: Sizes of the small benchmark that the book's appendix runs, per profile (about 10 s / 60 s / 3 min).
BOOK_SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(n=4_000, d=64, k=8, iters=5, repeats=1),
    "quick": dict(n=30_000, d=256, k=32, iters=10, repeats=2),
    "paper": dict(n=200_000, d=896, k=64, iters=20, repeats=3),
}


def book_sizes(profile_name: str) -> dict[str, int]:
    """Arguments of :func:`bench_kmeans` for the appendix under a profile (``smoke``/``quick``/``paper``)."""
    return dict(BOOK_SIZES.get(profile_name, BOOK_SIZES["quick"]))


def default_results_dir() -> Path | None:
    """``benchmarks/results`` of this checkout, if the package runs from one (else ``None``)."""
    candidates = [Path.cwd() / "benchmarks" / "results", Path.cwd().parent / "benchmarks" / "results",
                  Path(__file__).resolve().parents[2] / "benchmarks" / "results"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def load_results(folder: str | os.PathLike | None = None, pattern: str = "*.json") -> list[dict[str, Any]]:
    """Records of the saved benchmark files (``.json`` lists or JSON lines), each with its ``file``."""
    folder = Path(folder) if folder is not None else default_results_dir()
    records: list[dict[str, Any]] = []
    if folder is None or not folder.is_dir():
        return records
    for path in sorted(folder.glob(pattern)):
        text = path.read_text(encoding="utf-8").strip()
        if not text:
            continue
        try:
            data = json.loads(text)
            items = data if isinstance(data, list) else [data]
        except json.JSONDecodeError:
            items = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
        for r in items:
            r = dict(r)
            r["file"] = path.name
            records.append(r)
    return records


def results_table(records: Sequence[dict[str, Any]]):
    """One row per engine run: a ``pandas.DataFrame`` with the columns a reader compares."""
    import pandas as pd

    rows = []
    for r in records:
        if "s_per_iter" not in r:
            continue
        m = r.get("machine", {}) or {}
        where = m.get("gpu") if r.get("device", "cpu").startswith("cuda") else m.get("cpu")
        rows.append({
            "file": r.get("file"),
            "engine": r["engine"],
            "algorithm": r.get("algorithm", "lloyd"),
            "device": r.get("device"),
            "hardware": f"{where} ({m.get('threads')} threads)" if r.get("device") == "cpu" else where,
            "n x d": f"{r['n']} x {r['d']}",
            "k": r["k"],
            "s/iter": r["s_per_iter"],
            "GFLOP/s (Lloyd-equivalent)": r.get("gflops"),
            "% of matmul peak": None if r.get("frac_peak") is None else 100 * r["frac_peak"],
            "% of distances computed": None if r.get("distance_fraction") is None else 100 * r["distance_fraction"],
            "extra memory / data": r.get("extra_mem_frac"),
            "inertia (exact)": r.get("inertia_exact"),
            "load avg": m.get("loadavg_1min"),
        })
    return pd.DataFrame(rows)


def ratios_table(records: Sequence[dict[str, Any]]):
    """The ``ratios`` records (project / faiss, project / scikit-learn ...) as a ``pandas.DataFrame``."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if k != "machine"} for r in records if r.get("engine") == "ratios"]
    return pd.DataFrame(rows)


def plot_seconds_per_iter(records: Sequence[dict[str, Any]], ax: Any = None, title: str | None = None):
    """Bar chart of the median seconds per iteration of each engine, every repeat as a dot.

    Returns the figure (drawn on ``ax`` when given).
    """
    recs = [r for r in records if "s_per_iter" in r]
    fig, ax = new_axes(ax, size=(5.0, 3.0))
    names = [f"{r['engine']}\n({r.get('device', 'cpu')})" for r in recs]
    ax.bar(range(len(recs)), [r["s_per_iter"] for r in recs], color="#9ecae1", edgecolor="#3182bd")
    for i, r in enumerate(recs):
        ys = r.get("s_per_iter_all") or [r["s_per_iter"]]
        ax.plot([i] * len(ys), ys, "o", color="#08519c", ms=4)
    ax.set_xticks(range(len(recs)), names, rotation=30, ha="right")  # long engine names do not overlap
    ax.set_ylabel("seconds per Lloyd iteration")
    if recs:
        r0 = recs[0]
        ax.set_title(title or f"k-means, n={r0['n']}, d={r0['d']}, k={r0['k']} (lower is better)")
    return fig


def plot_distance_fraction(fractions: dict[str, Sequence[float]], ax: Any = None, title: str | None = None):
    """Fraction of the points whose distances were computed, per Lloyd iteration.

    Parameters
    ----------
    fractions : dict of str to sequence of float
        Curve name -> ``KMeans.distance_fraction_`` of a fit.
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure when None.

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, ax = new_axes(ax, size=(7.0, 3.0))
    for name, frac in fractions.items():
        frac = np.asarray(frac, dtype=float)
        ax.plot(np.arange(1, len(frac) + 1), 100 * frac, "o-", ms=3, label=name)
    ax.set_xlabel("Lloyd iteration")
    ax.set_ylabel("% of points with distances computed")
    ax.set_ylim(0, 105)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title or "work left after the bounds")
    return fig


def markdown_report(records: Sequence[dict[str, Any]]) -> str:
    """Markdown tables of saved results (engines, ratios, streamed fits, bf16), for the README."""

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):  # an empty cell
            return ""
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    def table(rows: list[dict[str, Any]]) -> str:
        if not rows:
            return ""
        cols = list(rows[0])
        out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
        return "\n".join(out)

    parts = []
    eng = results_table(records)
    if len(eng):
        parts.append(table(eng.to_dict("records")))
    rat = [{k: r.get(k) for k in ("file", "k", "device", "project/faiss", "project/sklearn", "project/sklearn-elkan",
                                   "project/project-lloyd", "inertia_rel_diff_vs_sklearn", "project_frac_peak",
                                   "project_extra_mem_frac")}
           for r in records if r.get("engine") == "ratios"]
    if rat:
        parts.append(table(rat))
    st = [{k: r.get(k) for k in ("file", "device", "source", "n", "d", "k", "data_gb", "sample_size", "seconds_total",
                                  "seconds_sampling_pass", "seconds_fit_on_sample", "seconds_labelling_pass",
                                  "seconds_producing_batches", "peak_rss_gb")}
          for r in records if r.get("engine") == "project-stream"]
    if st:
        parts.append(table(st))
    bf = [{k: r.get(k) for k in ("file", "device", "n", "k", "iters", "native_bf16", "s_per_iter_fp32",
                                  "s_per_iter_bf16", "label_flips", "label_flip_frac", "inertia_rel_change")}
          for r in records if r.get("engine") == "project-bf16"]
    if bf:
        parts.append(table(bf))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- CLI
def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float):
        return float(f"{obj:.6g}")
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m kmexplain_utils.kmeans.bench kmeans ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_worker":
        _worker_main(argv[1:])
        return 0
    p = argparse.ArgumentParser(prog="python -m kmexplain_utils.kmeans.bench", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("kmeans", help="k-means: project engine vs scikit-learn vs faiss")
    q.add_argument("--n", type=int, default=None, help="rows (default 200000, or 4700000 with --stream)")
    q.add_argument("--d", type=int, default=896)
    q.add_argument("--k", type=int, default=64)
    q.add_argument("--iters", type=int, default=20)
    q.add_argument("--device", default="cpu")
    q.add_argument("--repeats", type=int, default=3)
    q.add_argument("--engines", default=",".join(ENGINES + EXTRA_ENGINES),
                   help="comma-separated, from: " + ", ".join(ENGINES + EXTRA_ENGINES))
    q.add_argument("--threads", type=int, default=0, help="torch/faiss threads (default: torch's)")
    q.add_argument("--chunk-size", type=int, default=None)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="each engine run in a fresh process (clean peak memory); default on")
    q.add_argument("--bf16", action="store_true", help="also compare bf16 and fp32 products (flips, inertia)")
    q.add_argument("--stream", action="store_true", help="streamed fit at scale: time and peak RSS")
    q.add_argument("--source", default="generator", choices=["generator", "memmap"])
    q.add_argument("--path", default=None, help=".npy file for --source memmap")
    q.add_argument("--batch-size", type=int, default=65536)
    q.add_argument("--out", default=None, help="also write the JSON lines to this file")
    rep = sub.add_parser("report", help="markdown tables of saved results (for the README)")
    rep.add_argument("folder", nargs="?", default="benchmarks/results")
    a = p.parse_args(argv)
    if a.cmd == "report":
        print(markdown_report(load_results(a.folder)))
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)
    records: list[dict[str, Any]]
    if a.stream:
        n = a.n or 4_700_000
        records = [bench_stream(n, a.d, a.k, device=a.device, batch_size=a.batch_size, seed=a.seed,
                                source=a.source, path=a.path, max_iter=a.iters)]
    else:
        n = a.n or 200_000
        records = bench_kmeans(n, a.d, a.k, a.iters, device=a.device, repeats=a.repeats,
                               engines=[e for e in a.engines.split(",") if e], seed=a.seed,
                               isolate=a.isolate, chunk_size=a.chunk_size)
        if a.bf16:
            records.append(bench_bf16(n, a.d, a.k, a.iters, device=a.device, seed=a.seed))
    lines = [json.dumps(_jsonable(r)) for r in records]
    for ln in lines:
        print(ln, flush=True)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as fh:
            if a.out.endswith(".jsonl"):
                fh.write("\n".join(lines) + "\n")
            else:  # a valid JSON document: the list of records
                json.dump([_jsonable(r) for r in records], fh, indent=1)
                fh.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
