#!/usr/bin/env bash
# GPU check of the k-means engine: the unit tests on CUDA, then the benchmark
# with --device cuda at 200k x 896 for k = 64 and k = 256 (plus bf16 products,
# and a scaled-down streamed fit), then the paper profile's chapters on a full-size CUB stand-in
# (benchmarks/gpu_paper_chapters.py, GPU_PAPER_BUDGET seconds). About 8-10 minutes on one H100/H200.
#
# Run from the repository root:   bash benchmarks/gpu_check.sh
# Results go to "$OUT/" (default /tmp/out): gpu_*.json (benchmark records),
# gpu_paper_chapters.json (seconds per chapter), gpu_pytest.txt, gpu_env.txt. Copy the gpu_*.json files into
# benchmarks/results/ and the appendix (book/A1_benchmarks.ipynb) shows them.
set -u
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export KMEX_PROGRESS=0
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"   # the package from this checkout, no install
T0=$(date +%s)
step() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*" | tee -a "$OUT/gpu_log.txt"; }

step "environment"
{
  nvidia-smi 2>&1 | head -20
  "$PY" - <<'PYEOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
for m in ("numpy", "sklearn", "faiss", "pytest", "psutil"):
    try:
        print(m, importlib.import_module(m).__version__)
    except Exception as e:  # noqa: BLE001
        print(m, "MISSING", type(e).__name__)
PYEOF
} > "$OUT/gpu_env.txt" 2>&1
cat "$OUT/gpu_env.txt"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  step "no CUDA device: stopping"; exit 1
fi

step "unit tests (CUDA where applicable)"
if "$PY" -c "import pytest, sklearn" 2>/dev/null; then
  timeout 100 "$PY" -m pytest tests/test_kmeans.py tests/test_kmeans_hamerly.py -q -p no:cacheprovider -o addopts="" \
    > "$OUT/gpu_pytest.txt" 2>&1
  echo "pytest exit code: $?" >> "$OUT/gpu_pytest.txt"
  tail -5 "$OUT/gpu_pytest.txt"
else
  echo "pytest or scikit-learn missing: unit tests skipped" | tee "$OUT/gpu_pytest.txt"
fi

# engines: project on CUDA; scikit-learn / faiss on the host CPUs when installed (skipped otherwise)
ENGINES=project
"$PY" -c "import sklearn" 2>/dev/null && ENGINES="$ENGINES,sklearn"
"$PY" -c "import faiss" 2>/dev/null && ENGINES="$ENGINES,faiss"

for K in 64 256; do
  step "benchmark k=$K ($ENGINES)"
  timeout 75 "$PY" -m kmexplain_utils.kmeans.bench kmeans --device cuda --n 200000 --d 896 --k "$K" \
    --iters 20 --repeats 3 --engines "$ENGINES" --no-isolate --bf16 \
    --out "$OUT/gpu_kmeans_n200000_d896_k${K}.json" | cut -c1-400
done

step "streamed fit, scaled down to 1M x 896 (generator batches)"
timeout 50 "$PY" -m kmexplain_utils.kmeans.bench kmeans --device cuda --stream --n 1000000 --d 896 --k 64 \
  --out "$OUT/gpu_stream_n1000000_d896_k64.json" | cut -c1-400

# the paper profile's chapters on a full-size CUB stand-in (issue 17), with what is left of the budget
# (GPU_PAPER_BUDGET seconds, default 300: chapters not started by then are listed as skipped)
step "paper profile: every chapter on a full-size CUB stand-in (benchmarks/gpu_paper_chapters.py)"
timeout $(( ${GPU_PAPER_BUDGET:-300} + 240 )) "$PY" benchmarks/gpu_paper_chapters.py --out "$OUT/paper" \
  --budget "${GPU_PAPER_BUDGET:-300}" | tail -12
cp "$OUT/paper/gpu_paper_chapters.json" "$OUT/gpu_paper_chapters.json" 2>/dev/null

step "done"
ls -l "$OUT"
