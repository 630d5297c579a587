# MR-MoCoV3 (beyond the paper): MoCo v3's projector/predictor with MRCL; alpha=lambda=0.01 as MR-BYOL, its closest relative.
# ViT-B/16, r=0.2 random masking, 8 GPUs x 64 images, AdamW, 600 epochs, AMP.
_base_ = [
    '../_base_/models/mrcl-mocov3_vit-base-p16.py',
    '../_base_/datasets/imagenet_bs64_mrcl.py',
    '../_base_/schedules/adamw_coslr-600e_in1k.py',
    '../_base_/default_runtime.py',
]

model = dict(rec_head=dict(alpha=0.01, lambd=0.01))
