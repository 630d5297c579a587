#!/usr/bin/env bash
# ADE20K UperNet from an MRCL or MAE pretraining checkpoint
# (docs/transfer.md): convert the encoder, train with mmseg's own tools
# through mim, test.
#
#   bash tools/benchmarks/mmsegmentation/ade20k.sh PRETRAIN_CKPT GPUS [mim train options]
#
# PRETRAIN_CKPT: MRCL's, mmpretrain's MAE, or MAE's official release
# (mae_pretrain_vit_base.pth); the encoder file records which (meta
# learner='mae' for MAE).
# DATA_ROOT (default data/ade/ADEChallengeData2016) and WORK_DIR (default
# work_dirs/benchmarks/ade20k/<checkpoint name>) override the paths.
#
# Needs GPUS CUDA GPUs (one process each, NCCL, AMP), and the
# environment the plugin is installed in on PATH: it calls `python` and
# `mim`, so first `source .venv/bin/activate` (after tools/setup.sh) or
# activate your OpenMMLab stack's.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 PRETRAIN_CKPT GPUS [mim train options]" >&2
    exit 2
fi
PRETRAIN=$1
GPUS=$2
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
CFG=$ROOT/configs/benchmarks/mmsegmentation/mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py
NAME=$(basename "${PRETRAIN%.*}")
WORK_DIR=${WORK_DIR:-work_dirs/benchmarks/ade20k/$NAME}
DATA_ROOT=${DATA_ROOT:-data/ade/ADEChallengeData2016}
ENCODER=$WORK_DIR/encoder_mmpretrain.pth
DATA_OPTS=()
for loader in train val test; do
    DATA_OPTS+=("${loader}_dataloader.dataset.data_root=$DATA_ROOT")
done
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}

mkdir -p "$WORK_DIR"
python "$ROOT/tools/model_converters/mrcl2mmpretrain.py" "$PRETRAIN" "$ENCODER"
mim train mmseg "$CFG" --launcher pytorch -G "$GPUS" --work-dir "$WORK_DIR" \
    --amp "${@:3}" \
    --cfg-options model.backbone.init_cfg.checkpoint="$ENCODER" "${DATA_OPTS[@]}"
mim test mmseg "$CFG" --checkpoint "$(cat "$WORK_DIR/last_checkpoint")" \
    --launcher pytorch -G "$GPUS" --work-dir "$WORK_DIR" \
    --cfg-options "${DATA_OPTS[@]}"
