#!/bin/bash
# Device-side driver for a lent GPU session (see docs/BENCHMARKS.md). Run from the repo root on
# the device machine, with the wheels in .whl/ (open_clip_torch, decord, polars, ftfy, wcwidth):
#   bash bench/gpu_session.sh extract   # bench/extract.py with ViT-B-32 (random weights) in fp16
#   bash bench/gpu_session.sh explore   # bench/gpu_explore.py --grid tune (inputs in .gpu/)
# Results land in $OUT. ViT-B-32 here has seeded random weights (no CLIP weights can be fetched
# on that machine); throughput does not depend on the weights' values.
set -u
stage=$1
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "$stage" = extract ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    python3 - <<'PY' || exit 1
import open_clip, torch
torch.manual_seed(0)
m = open_clip.create_model("ViT-B-32", pretrained=None)
torch.save(m.state_dict(), "/tmp/vit_b32_random.pt")
print("random-weight ViT-B-32 checkpoint written")
PY
    python3 bench/extract.py --device cuda --video-model open_clip:ViT-B-32:/tmp/vit_b32_random.pt \
        --text-model none --batch-size "${BATCH:-256}" --videos "${VIDEOS:-200}" \
        --mem 200 2000 --work /tmp/extract-work --json "$OUT/extract_gpu.json" 2>&1 \
        | tee "$OUT/extract_gpu.log"
elif [ "$stage" = explore ]; then
    EXPLORE_THREADS=1 EXPLORE_MINUTES=${MINUTES:-5} python3 bench/gpu_explore.py --grid "${GRID:-tune}" --inputs .gpu --out "$OUT" \
        --workers "${WORKERS:-14}" --seeds 1 2 --skip-throughput 2>&1 | tee "$OUT/explore.log"
fi
