# Table 1: MR-BarlowTwins, alpha=7, lambda=2 (80.4 linear probe top-1).
# ViT-B/16, r=0.2 random masking, 8 GPUs x 64 images, AdamW, 600 epochs, AMP.
_base_ = [
    '../_base_/models/mrcl-barlowtwins_vit-base-p16.py',
    '../_base_/datasets/imagenet_bs64_mrcl.py',
    '../_base_/schedules/adamw_coslr-600e_in1k.py',
    '../_base_/default_runtime.py',
]

model = dict(rec_head=dict(alpha=7, lambd=2))
