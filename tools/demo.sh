#!/usr/bin/env bash
# The main job on the data that ships beside the project, on the CPU:
# MR-BarlowTwins pretraining on the real CIFAR-10 sample, a kNN evaluation of
# the encoder against its random init, and a reconstruction image.
# Run tools/setup.sh first. Results land in $WORK_DIR (work_dirs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
# mmengine imports pkg_resources; its deprecation notice is noise here.
export PYTHONWARNINGS="ignore:pkg_resources is deprecated"
CONFIG=configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py
WORK_DIR=${WORK_DIR:-work_dirs/demo}
ITERS=${ITERS:-300}

[ -x "$PY" ] || { echo "no $PY: run 'bash tools/setup.sh' first" >&2; exit 1; }
[ -d ../shared/data/cls/cifar10 ] || [ -n "${MRCL_DATA:-}" ] || {
    echo "the CIFAR-10 sample is not at ../shared/data/cls/cifar10: set MRCL_DATA to the data folder" >&2; exit 1; }

t0=$SECONDS
echo "[demo] 1/3 pretraining MR-BarlowTwins (ViT-Tiny width, 6 layers, r=0.2) for $ITERS iterations; log every 10"
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
    --cfg-options train_cfg.max_iters="$ITERS"
CKPT="$WORK_DIR/iter_$ITERS.pth"

echo "[demo] 2/3 kNN evaluation of the encoder (+$((SECONDS - t0))s)"
$PY tools/analysis/knn_eval.py "$CONFIG" "$CKPT" 2>&1 | grep -v "Loads checkpoint"

echo "[demo] 3/3 reconstruction image (+$((SECONDS - t0))s)"
$PY tools/analysis/visualize_reconstruction.py "$CONFIG" "$CKPT" \
    --out "$WORK_DIR/reconstruction.png" 2>&1 | grep -v "Loads checkpoint"
echo "[demo] done in $((SECONDS - t0))s: $CKPT, $WORK_DIR/reconstruction.png"
