#!/usr/bin/env bash
# COCO Mask R-CNN (ViTDet-style) from an MRCL or MAE pretraining
# checkpoint (docs/transfer.md): convert the encoder, train with mmdet's
# own tools through mim, test (box and mask AP).
#
#   bash tools/benchmarks/mmdetection/coco.sh PRETRAIN_CKPT GPUS [mim train options]
#
# PRETRAIN_CKPT: MRCL's, mmpretrain's MAE, or MAE's official release
# (mae_pretrain_vit_base.pth); the encoder file records which (meta
# learner='mae' for MAE).
# DATA_ROOT (default data/coco) and WORK_DIR (default
# work_dirs/benchmarks/coco/<checkpoint name>) override the paths.
#
# Needs GPUS CUDA GPUs (one process each, NCCL, AMP), mmcv built with
# its CUDA ops (RoIAlign), and the environment the plugin is installed in
# on PATH: it calls `python` and `mim`, so first `source
# .venv/bin/activate` (after tools/setup.sh) or activate your OpenMMLab
# stack's.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 PRETRAIN_CKPT GPUS [mim train options]" >&2
    exit 2
fi
PRETRAIN=$1
GPUS=$2
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CFG=$ROOT/configs/benchmarks/mmdetection/mrcl_vit-base-p16_simple-fpn_mask-rcnn_8xb8-amp-lsj-100e_coco.py
NAME=$(basename "${PRETRAIN%.*}")
WORK_DIR=${WORK_DIR:-work_dirs/benchmarks/coco/$NAME}
DATA_ROOT=${DATA_ROOT:-data/coco}
DATA_ROOT=${DATA_ROOT%/}/
ENCODER=$WORK_DIR/encoder_mmpretrain.pth
ANN=${DATA_ROOT}annotations/instances_val2017.json
DATA_OPTS=(
    "train_dataloader.dataset.dataset.data_root=$DATA_ROOT"
    "val_dataloader.dataset.data_root=$DATA_ROOT"
    "test_dataloader.dataset.data_root=$DATA_ROOT"
    "val_evaluator.ann_file=$ANN"
    "test_evaluator.ann_file=$ANN"
)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

mkdir -p "$WORK_DIR"
python "$ROOT/tools/model_converters/mrcl2mmpretrain.py" "$PRETRAIN" "$ENCODER"
# AMP is in the config (AmpOptimWrapper, as mmdet's LSJ recipe).
mim train mmdet "$CFG" --launcher pytorch -G "$GPUS" --work-dir "$WORK_DIR" \
    "${@:3}" \
    --cfg-options model.backbone.init_cfg.checkpoint="$ENCODER" "${DATA_OPTS[@]}"
mim test mmdet "$CFG" --checkpoint "$(cat "$WORK_DIR/last_checkpoint")" \
    --launcher pytorch -G "$GPUS" --work-dir "$WORK_DIR" \
    --cfg-options "${DATA_OPTS[@]}"
