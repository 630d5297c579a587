# STL-10 ablations (paper Sec. 4.3): MR-BarlowTwins, r=0.2 and alpha=lambda=10 (Fig. 3's setting; best in Figs. 3 and 4).
# The sweeps are overrides of this file, not copies of it
# (tools/sweeps/stl10_ablations.sh prints them all):
#   Fig. 3, mask ratio:      --cfg-options model.backbone.mask_ratio=0.3
#   Fig. 4, rec. weight:     --cfg-options model.rec_head.alpha=1 model.rec_head.lambd=1
#   Fig. 5, alpha / lambda:  --cfg-options model.rec_head.lambd=2.5
_base_ = [
    '../_base_/models/mrcl-barlowtwins_vit-base-p16.py',
    '../_base_/datasets/stl10_bs64_mrcl.py',
    '../_base_/schedules/adamw_coslr-300e_stl10.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(mask_ratio=0.2),
    rec_head=dict(alpha=10, lambd=10))
