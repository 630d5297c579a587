# MR-BarlowTwins on the real Tiny-ImageNet sample (10 classes): the
# ViT-Tiny-size encoder on 64 px images in 8 px patches (64 tokens).
_base_ = [
    '../_base_/models/mrcl-barlowtwins_vit-tiny.py',
    '../_base_/datasets/tiny-imagenet_bs64_mrcl.py',
    '../_base_/cpu_runtime.py',
    '../_base_/schedules/adamw_coslr-300it.py',
]

model = dict(
    backbone=dict(img_size=64, patch_size=8),
    decoder=dict(patch_size=8),
    rec_head=dict(patch_size=8))

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
