#!/usr/bin/env bash
# On a GPU machine with no Hub and no package registry: install the carried kit
# (`python bench/gpu_kit.py` made it here: wheels and the SmolLM2 tokenizer) and run
# bench/gpu.py. Everything worth keeping goes under $OUT as it is written, so a run cut short
# still leaves its rows. Extra arguments go to bench/gpu.py (e.g. --profile, --row ...).
#
#   KIT=.gpu-kit OUT=/some/dir BENCH_SECONDS=420 bash bench/gpu_run.sh [ARGS]
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-.gpu-kit}
OUT=${OUT:-gpu-out}
SITE=${SITE:-/tmp/gpu-site}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target "$SITE" "$KIT"/wheels/*.whl \
  > "$OUT/install.log" 2>&1 || { echo "install failed: see $OUT/install.log"; exit 1; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TITLE_DPO_TRACKING=0
(nvidia-smi || true) > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'cuda',
  torch.cuda.is_available(), 'transformers', transformers.__version__, 'trl', trl.__version__)" \
  | tee "$OUT/versions.txt"
WORK=${WORK:-/tmp/gpu-bench}  # models and runs: GBs, not brought back
rm -rf "$WORK"
timeout "${BENCH_SECONDS:-420}" python3 bench/gpu.py --tokenizer "$KIT/tokenizer" --out "$WORK" \
  --write-rates "$OUT/gpu-rates.json" "$@" 2> "$OUT/gpu-bench.log" | tee "$OUT/gpu-bench.txt"
status=${PIPESTATUS[0]}
cp "$WORK/gpu-bench.jsonl" "$OUT/" 2>/dev/null
[ -d "$WORK/profile" ] && cp -r "$WORK/profile" "$OUT/"
echo "bench/gpu.py exit status: $status" | tee -a "$OUT/gpu-bench.txt"
exit "$status"
