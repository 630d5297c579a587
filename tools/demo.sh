#!/usr/bin/env bash
# The main job on the data that ships beside the project, on the CPU:
# MR-BarlowTwins pretraining on the real CIFAR-10 sample (with a kNN point
# every 100 iterations), a kNN evaluation of the encoder against its random
# init on the full test sample, the loss/kNN curves and a reconstruction
# image. Run tools/setup.sh first. Results land in $WORK_DIR (work_dirs/demo).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
# mmengine imports pkg_resources; its deprecation notice is noise here.
export PYTHONWARNINGS="ignore:pkg_resources is deprecated"
CONFIG=configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py
WORK_DIR=${WORK_DIR:-work_dirs/demo}
ITERS=${ITERS:-300}
# bank images per class for the final kNN (the queries are the whole test
# split, 10,000 images: binomial SE < 0.5 points); 2,000 is the whole split
BANK_PER_CLASS=${BANK_PER_CLASS:-500}
# --amp (bf16 autocast on a CPU) where the CPU computes bf16 natively
# (avx512_bf16/amx_bf16: 1.2x per step on a 2-core AMD EPYC, docs/study.md);
# fp32 elsewhere, where emulated bf16 can be slower. PRECISION=fp32: fp32.
AMP=()
if [ "${PRECISION:-auto}" = auto ] && grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo 2>/dev/null; then
    AMP=(--amp)
fi

[ -x "$PY" ] || { echo "no $PY: run 'bash tools/setup.sh' first" >&2; exit 1; }
[ -d ../shared/data/cls/cifar10 ] || [ -n "${MRCL_DATA:-}" ] || {
    echo "the CIFAR-10 sample is not at ../shared/data/cls/cifar10: set MRCL_DATA to the data folder" >&2; exit 1; }

t0=$SECONDS
echo "[demo] 1/4 pretraining MR-BarlowTwins (ViT-Tiny width, 6 layers, r=0.2) for $ITERS iterations${AMP:+ under bf16 autocast}; log every 10, knn/top1 every 100"
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${AMP[@]}" \
    --cfg-options train_cfg.max_iters="$ITERS"
CKPT="$WORK_DIR/iter_$ITERS.pth"

echo "[demo] 2/4 kNN evaluation of the encoder on the full test sample (+$((SECONDS - t0))s)"
$PY tools/analysis_tools/knn_eval.py "$CONFIG" "$CKPT" --per-class "$BANK_PER_CLASS" \
    | tee "$WORK_DIR/knn.txt"

echo "[demo] 3/4 loss and kNN curves (+$((SECONDS - t0))s)"
CURVES="$WORK_DIR/curves.png"
$PY tools/analysis_tools/plot_curves.py "$WORK_DIR" --out "$CURVES"

echo "[demo] 4/4 reconstruction image (+$((SECONDS - t0))s)"
$PY tools/analysis_tools/visualize_reconstruction.py "$CONFIG" "$CKPT" \
    --out "$WORK_DIR/reconstruction.png"

echo "[demo] done in $((SECONDS - t0))s"
echo "  kNN top-1, pretrained vs random init: $WORK_DIR/knn.txt"
grep "kNN top-1" "$WORK_DIR/knn.txt" | sed 's/^/   /'
echo "  checkpoint:          $CKPT"
echo "  logs (knn/top1 too): $(ls -d "$WORK_DIR"/*/vis_data | tail -1)"
echo "  curves:              $CURVES"
echo "  reconstruction:      $WORK_DIR/reconstruction.png"
