#!/usr/bin/env bash
# The engine's CUDA path on one GPU in a few minutes (benchmarks/gpu_check.py): bf16, SDPA, FSDP2, NPO/GradDiff/RMU
# steps on a ~1B-parameter random Llama, evaluation speed. Needs no hub: the weights come from a config, the
# tokenizer from files/cache/models/smollm2-135m-instruct (carry its tokenizer files). Without CUDA it skips itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PY:-python}"
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device here; skipped"
    exit 0
fi
"$PYTHON" -c "import fastargs" 2>/dev/null || "$PYTHON" -m pip install --quiet --no-index --find-links wheels \
    fastargs terminaltables  # the device machine has no PyPI: carry these two small wheels in wheels/
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
