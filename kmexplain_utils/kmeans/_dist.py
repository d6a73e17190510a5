"""Low-level pieces of :mod:`kmexplain_utils.kmeans`: distances, seeding, communication.

Nothing here is public API. The module holds

- :class:`Assigner`: nearest-centroid search by the matrix-product form
  ``||x||^2 - 2 x.c + ||c||^2`` in row chunks, into preallocated buffers
  (one fused ``addmm`` + ``min`` per chunk; never ``torch.cdist`` and never an
  ``(n, k, d)`` broadcast);
- :func:`kmeans_plusplus`: greedy k-means++ (scikit-learn's ``2 + log(k)``
  local trials) on a sample;
- :class:`Comm`: the few collective operations the distributed fit needs
  (identity functions when ``torch.distributed`` is not in use).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch

__all__ = [
    "Assigner",
    "Comm",
    "default_chunk_size",
    "kmeans_plusplus",
    "sq_dist_to",
    "resolve_matmul_dtype",
    "cpu_has_bf16",
]


# --------------------------------------------------------------------------- hardware
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 products (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = fh.read()
    except OSError:  # pragma: no cover - non-Linux
        return False
    return ("amx_bf16" in flags) or ("avx512_bf16" in flags)


def resolve_matmul_dtype(matmul_dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """Translate the ``matmul_dtype`` option into a reduced dtype or ``None``.

    ``None`` means "products in the data's own precision" (float32 for float32
    data, float64 for float64 data). ``bfloat16`` is returned only when asked
    for, or for ``"auto"`` on hardware with native bf16 products (CUDA with
    bf16 support, or a CPU with AMX / AVX512-BF16). float16 is refused on CPU.
    """
    if matmul_dtype is None:
        return None
    if isinstance(matmul_dtype, torch.dtype):
        name = str(matmul_dtype).replace("torch.", "")
    else:
        name = str(matmul_dtype).strip().lower()
    if name in {"float32", "fp32", "float", "float64", "fp64", "full", "highest"}:
        return None
    if name in {"bfloat16", "bf16"}:
        return torch.bfloat16
    if name in {"float16", "fp16", "half"}:
        if device.type == "cpu":
            raise ValueError(
                "matmul_dtype='float16' is not supported on the CPU (too slow and too imprecise); "
                "use 'float32' or 'bfloat16'."
            )
        return torch.float16
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        if device.type == "cpu":
            return torch.bfloat16 if cpu_has_bf16() else None
        return None
    raise ValueError(
        f"matmul_dtype must be 'float32', 'bfloat16', 'auto' (or 'float16' on a GPU), got {matmul_dtype!r}."
    )


def default_chunk_size(n_features: int, n_clusters: int, itemsize: int, device: torch.device) -> int:
    """Rows per chunk of the distance computation.

    On the CPU the chunk of data (``rows * n_features``) and the distance block
    (``rows * n_clusters``) should stay within the last-level cache share of a
    core; on a GPU large chunks amortise kernel launches.
    """
    if device.type == "cpu":
        env = os.environ.get("KMEX_KMEANS_CHUNK")
        if env:
            return max(1, int(env))
        budget = 1 << 20  # ~1 MiB of data rows per chunk: stays in a core's L2 for the update
        rows = budget // max(1, n_features * itemsize)
        return int(min(8192, max(256, rows)))
    # 64 MiB of rows: large enough to keep a GPU busy, small enough that a
    # per-chunk temporary stays a small fraction of the data
    budget = 1 << 26
    rows = budget // max(1, n_features * itemsize)
    rows = min(rows, (1 << 26) // max(1, n_clusters * 4))
    return int(max(1024, min(1 << 17, rows)))


# --------------------------------------------------------------------------- distances
def sq_dist_to(X: torch.Tensor, x_sq: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(m, t)`` between rows of ``X (m, d)`` and rows of ``Y (t, d)``.

    Small helper for seeding (``t`` is a handful of candidates), matrix-product form.
    """
    y_sq = (Y * Y).sum(1)
    out = torch.addmm(y_sq.unsqueeze(0), X, Y.t(), beta=1.0, alpha=-2.0)
    out.add_(x_sq.unsqueeze(1))
    return out.clamp_min_(0)


class Assigner:
    """Chunked nearest-centroid search with preallocated buffers.

    Parameters
    ----------
    n_clusters, n_features : int
        Shape ``(k, d)`` of the centroid matrix.
    chunk_size : int
        Rows per chunk.
    dtype : torch.dtype
        Dtype of the data and centroids (float32 or float64).
    device : torch.device
        Where the products run.
    low_dtype : torch.dtype or None
        bf16/fp16 for reduced-precision products, ``None`` for full precision.
    """

    def __init__(
        self,
        n_clusters: int,
        n_features: int,
        chunk_size: int,
        dtype: torch.dtype,
        device: torch.device,
        low_dtype: torch.dtype | None = None,
    ) -> None:
        self.k = int(n_clusters)
        self.d = int(n_features)
        self.chunk_size = int(chunk_size)
        self.dtype = dtype
        self.device = device
        self.low_dtype = low_dtype
        self._buf = torch.empty((self.chunk_size, self.k), dtype=dtype, device=device)
        self._c_sq = torch.empty(self.k, dtype=dtype, device=device)
        # -2 * C^T, pre-scaled and contiguous (d, k): one addmm per chunk gives
        # ||c||^2 - 2 x.c directly.
        self._neg2_ct = torch.empty((self.d, self.k), dtype=dtype, device=device)
        self._neg2_ct_low: torch.Tensor | None = None
        self._mm_out_dtype_ok = True
        self._native_cpu = device.type == "cpu" and low_dtype is not None and cpu_has_bf16()

    def set_centers(self, centers: torch.Tensor) -> None:
        """Load the centroids ``(k, d)`` (copied into the internal buffers)."""
        c = centers.to(device=self.device, dtype=self.dtype)
        torch.sum(c * c, dim=1, out=self._c_sq)
        self._neg2_ct.copy_(c.t())
        self._neg2_ct.mul_(-2.0)
        if self.low_dtype is not None:
            self._neg2_ct_low = self._neg2_ct.to(self.low_dtype)
            if self.device.type == "cpu" and not self._native_cpu:
                # no bf16 units: round the inputs to bf16, multiply in float32 (what bf16
                # hardware with float32 accumulation computes, without its speed)
                self._neg2_ct_low = self._neg2_ct_low.to(self.dtype)

    def partial_distances(self, xc: torch.Tensor) -> torch.Tensor:
        """``||c||^2 - 2 x.c`` for a chunk ``xc (b, d)``: a view ``(b, k)`` of the buffer."""
        b = xc.shape[0]
        buf = self._buf[:b] if b <= self.chunk_size else torch.empty((b, self.k), dtype=self.dtype, device=self.device)
        if self.low_dtype is None:
            torch.addmm(self._c_sq, xc, self._neg2_ct, out=buf)
            return buf
        xl = xc.to(self.low_dtype)
        if self.device.type == "cpu" and not self._native_cpu:
            torch.addmm(self._c_sq, xl.to(self.dtype), self._neg2_ct_low, out=buf)
            return buf
        prod = None
        if self.device.type == "cuda" and self._mm_out_dtype_ok:
            try:  # fp32 accumulation and output from bf16 inputs
                prod = torch.mm(xl, self._neg2_ct_low, out_dtype=self.dtype)
            except (TypeError, RuntimeError):
                self._mm_out_dtype_ok = False
        if prod is None:
            prod = torch.mm(xl, self._neg2_ct_low)
        buf.copy_(prod)
        buf.add_(self._c_sq)
        return buf

    def assign(self, xc: torch.Tensor, labels_out: torch.Tensor) -> None:
        """Nearest centroid of each row of ``xc (b, d)``: labels ``(b,)`` written into ``labels_out``.

        The first of equally near centroids wins, as in ``numpy.argmin``.
        """
        torch.argmin(self.partial_distances(xc), dim=1, out=labels_out)

    def assign_top2(self, xc: torch.Tensor, labels_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centroid of each row, and the two smallest partial distances.

        Parameters
        ----------
        xc : torch.Tensor
            ``(b, d)`` rows.
        labels_out : torch.Tensor
            ``(b,)`` int64, receives the labels (first minimum on ties).

        Returns
        -------
        v1, v2 : torch.Tensor
            ``(b,)`` smallest and second-smallest ``||c||^2 - 2 x.c`` (``v2``
            is ``inf`` when ``k == 1``).
        """
        buf = self.partial_distances(xc)
        v1, idx = torch.min(buf, dim=1)
        labels_out.copy_(idx)
        if self.k == 1:
            return v1, torch.full_like(v1, float("inf"))
        buf.scatter_(1, idx.unsqueeze(1), float("inf"))
        return v1, buf.min(dim=1).values

    @property
    def max_center_sq(self) -> float:
        """Largest squared norm of the loaded centroids."""
        return float(self._c_sq.max())

    def full_sq_distances(self, xc: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
        """Squared distances ``(b, k)`` (a new tensor), clamped at 0."""
        out = self.partial_distances(xc).clone()
        if x_sq is None:
            x_sq = (xc * xc).sum(1)
        out.add_(x_sq.to(out.dtype).unsqueeze(1))
        return out.clamp_min_(0)


# --------------------------------------------------------------------------- seeding
def kmeans_plusplus(
    S: torch.Tensor,
    n_clusters: int,
    generator: torch.Generator,
    n_local_trials: int | None = None,
) -> torch.Tensor:
    """Greedy k-means++ seeding of ``n_clusters`` centroids from the rows of ``S (m, d)``.

    At each step ``2 + floor(log k)`` candidates are drawn with probability
    proportional to the squared distance to the closest centroid so far, and
    the one that lowers the potential most is kept (as scikit-learn does).
    Random draws come from the CPU ``generator``, so the result is the same
    on every device for a given seed.

    Returns
    -------
    torch.Tensor
        ``(n_clusters, d)`` centroids, rows of ``S``.
    """
    m, d = S.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    s_sq = (S * S).sum(1)
    centers = torch.empty((n_clusters, d), dtype=S.dtype, device=S.device)
    first = int(torch.randint(m, (1,), generator=generator))
    centers[0] = S[first]
    closest = sq_dist_to(S, s_sq, S[first : first + 1])[:, 0].to(torch.float64)
    pot = float(closest.sum())
    for c in range(1, n_clusters):
        if pot <= 0.0:  # every point coincides with a centroid: take any row
            cand = torch.randint(m, (n_local_trials,), generator=generator)
        else:
            r = torch.rand(n_local_trials, generator=generator, dtype=torch.float64) * pot
            cum = torch.cumsum(closest, 0).cpu()
            cand = torch.searchsorted(cum, r).clamp_(max=m - 1)
        cand_dev = cand.to(S.device)
        d_cand = sq_dist_to(S, s_sq, S[cand_dev]).to(torch.float64)  # (m, t)
        new_closest = torch.minimum(closest.unsqueeze(1), d_cand)
        pots = new_closest.sum(0)
        best = int(torch.argmin(pots))
        closest = new_closest[:, best].contiguous()
        pot = float(pots[best])
        centers[c] = S[cand_dev[best]]
    return centers


# --------------------------------------------------------------------------- distributed
class Comm:
    """Collective operations for the distributed fit (no-ops on one process).

    Parameters
    ----------
    enabled : bool
        Use ``torch.distributed`` (must be initialised).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        if self.enabled:
            import torch.distributed as dist

            self._dist = dist
            self.rank = dist.get_rank()
            self.world = dist.get_world_size()
            backend = str(dist.get_backend()).lower()
            self._dev = (
                torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
            )
        else:
            self.rank, self.world = 0, 1
            self._dev = torch.device("cpu")

    @staticmethod
    def wanted(option: bool | str) -> bool:
        """Whether to use ``torch.distributed`` for the ``distributed`` option."""
        if option is False or option is None:
            return False
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if option is True and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True but torch.distributed is not initialised; call "
                "torch.distributed.init_process_group(...) first (e.g. under torchrun)."
            )
        return bool(active)

    def allreduce_(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks, in place; returns ``t``."""
        if not self.enabled:
            return t
        tmp = t.to(self._dev)
        self._dist.all_reduce(tmp)
        if tmp is not t:
            t.copy_(tmp)
        return t

    def broadcast_(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Copy rank ``src``'s ``t`` to every rank, in place; returns ``t``."""
        if not self.enabled:
            return t
        tmp = t.to(self._dev)
        self._dist.broadcast(tmp, src=src)
        if tmp is not t:
            t.copy_(tmp)
        return t

    def allgather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``t (n_r, ...)`` in rank order (sizes may differ)."""
        if not self.enabled:
            return t
        n = torch.tensor([t.shape[0]], dtype=torch.int64, device=self._dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        self._dist.all_gather(sizes, n)
        sizes_i = [int(s) for s in sizes]
        n_max = max(sizes_i)
        pad = torch.zeros((n_max, *t.shape[1:]), dtype=t.dtype, device=self._dev)
        pad[: t.shape[0]] = t.to(self._dev)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        self._dist.all_gather(parts, pad)
        out = torch.cat([p[:s] for p, s in zip(parts, sizes_i)], 0)
        return out.to(t.device)

    def sizes(self, n_local: int) -> list[int]:
        """The number of rows of every rank."""
        if not self.enabled:
            return [int(n_local)]
        n = torch.tensor([n_local], dtype=torch.int64, device=self._dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        self._dist.all_gather(sizes, n)
        return [int(s) for s in sizes]


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)`` in steps of ``size``."""
    for s in range(0, n, size):
        yield s, min(n, s + size)


# --------------------------------------------------------------------------- CPU workers
class SpanPool:
    """Process row spans on single-threaded CPU workers (one parallel region per pass).

    Many small multi-threaded torch calls (one GEMM, one ``min`` and one
    ``index_add_`` per chunk) each pay an OpenMP fork/join, which becomes very
    expensive on a loaded machine. Instead, ``n_threads`` Python threads each
    own a contiguous span of rows and run single-threaded torch kernels on it
    (torch releases the GIL inside kernels), as scikit-learn and faiss do with
    OpenMP. torch's intra-op thread count is set to 1 inside the ``with``
    block and restored on exit. On a GPU (or with one thread) the spans are
    processed inline.

    Parameters
    ----------
    device : torch.device
        Where the work runs.
    n_threads : int, optional
        Workers; default ``torch.get_num_threads()`` (or ``KMEX_KMEANS_THREADS``).
    """

    def __init__(self, device: torch.device, n_threads: int | None = None) -> None:
        if n_threads is None:
            env = os.environ.get("KMEX_KMEANS_THREADS")
            n_threads = int(env) if env else torch.get_num_threads()
        self.n_threads = max(1, int(n_threads)) if device.type == "cpu" else 1
        self._ex = None
        self._orig: int | None = None

    def __enter__(self) -> "SpanPool":
        if self.n_threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._orig = torch.get_num_threads()
            torch.set_num_threads(1)
            self._ex = ThreadPoolExecutor(self.n_threads, thread_name_prefix="kmex-kmeans")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=True)
            self._ex = None
        if self._orig is not None:
            torch.set_num_threads(self._orig)
            self._orig = None

    def spans(self, n: int, chunk: int) -> list[tuple[int, int]]:
        """Split ``range(n)`` into at most ``n_threads`` contiguous spans of whole chunks."""
        n_chunks = max(1, -(-n // chunk))
        parts = max(1, min(self.n_threads, n_chunks))
        per = -(-n_chunks // parts) * chunk
        return [(s, min(n, s + per)) for s in range(0, n, per)] or [(0, 0)]

    def map(self, fn, items):  # noqa: ANN001, ANN201 - small internal helper
        """``[fn(i) for i in items]``, in parallel on the workers."""
        items = list(items)
        if self._ex is None or len(items) <= 1:
            return [fn(i) for i in items]
        return list(self._ex.map(fn, items))


def chunks_in(span: tuple[int, int], size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(*span)`` in steps of ``size``."""
    lo, hi = span
    for s in range(lo, hi, size):
        yield s, min(hi, s + size)
