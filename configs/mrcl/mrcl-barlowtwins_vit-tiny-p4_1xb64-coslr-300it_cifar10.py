# MR-BarlowTwins on the real CIFAR-10 sample: a ViT-Tiny-size encoder on 32 px
# images in 4 px patches (64 tokens, 51 visible at r=0.2), sized to train on
# 2 CPU cores in minutes. The README's demo runs it.
_base_ = [
    '../_base_/models/mrcl-barlowtwins_vit-tiny.py',
    '../_base_/datasets/cifar10_bs64_mrcl.py',
    '../_base_/cpu_runtime.py',
    '../_base_/schedules/adamw_coslr-300it.py',
]
