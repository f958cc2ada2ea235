#!/usr/bin/env bash
# The GPU checks of modelsvc in one go, for a GPU machine whose Python has torch but not Ray (the device tool's
# image). Writes everything under $OUT (default ./gpu-check-out): gpu.txt, tests.txt, bench.txt, auto.txt.
#
# Prepare here (once): ../shared/gpu/make-device-bundle.sh      (builds .devsite/: Ray, pydantic-settings, ...)
# Run there:           bash benchmarks/gpu_check.sh               (carry .devsite; about 4-6 minutes)
# Dry run here:        DEVICE=cpu ROWS=30000 THREADS=1 bash benchmarks/gpu_check.sh
#
# 1. tests/gpu: the CUDA data paths (device-resident shard, pinned streaming on a side stream) against the CPU.
# 2. benchmarks/train_throughput.py on cuda: (a) Ray Data per-batch loop, (b) plain PyTorch resident, (c) modelsvc's
#    Ray Train workers, resident and streaming, at batch 256 and 8192 (the default). Without MLflow in the image,
#    (c) runs the same workers without the MLflow run (fit_workers).
# 3. use_gpu: auto on a Ray that sees the GPU.
set -uo pipefail
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
ROWS="${ROWS:-2000000}"
DEVICE="${DEVICE:-cuda}"   # DEVICE=cpu ROWS=30000 THREADS=1: a dry run of this script on a machine without a GPU
THREADS="${THREADS:-4}"    # CPUs per Ray worker (and torch threads of the baselines)
export PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled

if ! python3 -c "import ray" 2>/dev/null; then
  SITE=/tmp/site
  mkdir -p "$SITE" \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .devsite/*.whl \
    && tar xzf .devsite/ray.tgz -C "$SITE" || { echo "cannot install .devsite (run make-device-bundle.sh)"; exit 1; }
  export PYTHONPATH="$SITE:$PWD/src:$PWD" PATH="$SITE/bin:$PATH"
else
  export PYTHONPATH="$PWD/src:$PWD"
fi

{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ray', ray.__version__,
'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"; nproc; } 2>&1 \
  | tee "$OUT/gpu.txt"

echo "== tests/gpu"
timeout 240 python3 -m pytest tests/gpu -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/tests.txt"
tests_rc=${PIPESTATUS[0]}

echo "== use_gpu: auto"
timeout 120 python3 - <<'EOF' 2>&1 | tee "$OUT/auto.txt"
from modelsvc.config import load_settings
from modelsvc.training.ray_runtime import prepare_ray

s = load_settings("configs", paths={"root": "/tmp/modelsvc-auto"})
print("use_gpu=auto resolves to", prepare_ray(s))
EOF

echo "== benchmarks/train_throughput.py --device $DEVICE"
timeout 420 python3 benchmarks/train_throughput.py --device "$DEVICE" --rows "$ROWS" --batch-sizes 256,8192 \
  --data-paths resident,streaming --threads "$THREADS" --max-s 10 --epochs 2 2>&1 | tee "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}
echo "tests rc=$tests_rc bench rc=$bench_rc"
exit $(( tests_rc || bench_rc ))
