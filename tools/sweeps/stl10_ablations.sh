#!/usr/bin/env bash
# Prints (or, with RUN=1, runs one after another) the training commands of the
# paper's STL-10 ablations (Sec. 4.3), each an override of one config:
#   Fig. 3: mask ratio r in {0, .1, .2, .3, .4, .5} at alpha = lambda = 10
#           (MR-BarlowTwins) / 0.01 (MR-BYOL)
#   Fig. 4: alpha = lambda over a log range, r = 0.1 (BarlowTwins) / 0.2 (BYOL)
#   Fig. 5: alpha / lambda ratios at alpha = 10 (BarlowTwins, r = 0.1) /
#           0.01 (BYOL, r = 0.2)
# Usage: GPUS=8 [RUN=1] bash tools/sweeps/stl10_ablations.sh [barlowtwins|byol]
set -euo pipefail
cd "$(dirname "$0")/../.."
LEARNER=${1:-barlowtwins}
GPUS=${GPUS:-8}
CONFIG=configs/mrcl/mrcl-${LEARNER}_vit-base-p16_8xb64-coslr-300e_stl10.py
[ -f "$CONFIG" ] || { echo "no config for learner '$LEARNER': $CONFIG" >&2; exit 1; }
if [ "$LEARNER" = barlowtwins ]; then W=10; R=0.1; else W=0.01; R=0.2; fi

emit() {  # name, overrides...
    local name=$1; shift
    local cmd="bash tools/dist_train.sh $CONFIG $GPUS --work-dir work_dirs/stl10_${LEARNER}/$name --cfg-options $*"
    echo "$cmd"
    if [ "${RUN:-0}" = 1 ]; then $cmd; fi
}
for r in 0.0 0.1 0.2 0.3 0.4 0.5; do
    emit "fig3_r$r" model.backbone.mask_ratio=$r model.rec_head.alpha=$W model.rec_head.lambd=$W
done
for w in 0.001 0.01 0.1 1 10 100; do
    emit "fig4_w$w" model.backbone.mask_ratio=$R model.rec_head.alpha=$w model.rec_head.lambd=$w
done
for ratio in 0.25 0.5 1 2 4 8; do
    lambd=$(python3 -c "print($W / $ratio)")
    emit "fig5_ratio$ratio" model.backbone.mask_ratio=$R model.rec_head.alpha=$W model.rec_head.lambd=$lambd
done
