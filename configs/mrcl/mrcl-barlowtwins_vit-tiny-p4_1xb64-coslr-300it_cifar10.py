# MR-BarlowTwins on the real CIFAR-10 sample: a ViT-Tiny-size encoder on 32 px
# images in 4 px patches (64 tokens, 51 visible at r=0.2), sized to train on
# 2 CPU cores in minutes. The README's demo runs it.
_base_ = [
    '../_base_/models/mrcl-barlowtwins_vit-tiny.py',
    '../_base_/datasets/cifar10_bs64_mrcl.py',
    '../_base_/cpu_runtime.py',
    '../_base_/schedules/adamw_coslr-300it.py',
]

# kNN top-1 of the encoder every 100 iterations (logged as knn/top1) on a
# class-balanced subset, so that the curve costs seconds per point; the
# whole splits are for tools/analysis_tools/knn_eval.py.
# A config list replaces its base's: the runtime's three hooks are repeated.
custom_hooks = [
    dict(type='RNGStateHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='KNNHook', interval=100, bank_per_class=100,
         query_per_class=50),
    dict(type='MRCLMetaHook')
]
