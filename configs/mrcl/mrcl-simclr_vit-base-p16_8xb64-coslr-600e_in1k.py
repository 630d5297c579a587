# Table 1: MR-SimCLR, alpha=8, lambda=5 (80.0 linear probe top-1).
# ViT-B/16, r=0.2 random masking, 8 GPUs x 64 images, AdamW, 600 epochs, AMP.
_base_ = [
    '../_base_/models/mrcl-simclr_vit-base-p16.py',
    '../_base_/datasets/imagenet_bs64_mrcl.py',
    '../_base_/schedules/adamw_coslr-600e_in1k.py',
    '../_base_/default_runtime.py',
]

model = dict(rec_head=dict(alpha=8, lambd=5))
