# Linear probe of an MRCL encoder on ImageNet-1k, the paper's protocol
# (Sec. 4.1, following MoCo v3): a frozen ViT-B/16, a linear classifier on
# its class token, SGD at lr 0.2 for batch 1024 (8 x 128), momentum 0.9, no
# weight decay, 100 epochs of cosine decay, random resized crop + flip only.
# mmpretrain's MoCo v3 linear probe has all of that but the lr and the
# length, and those are what this file overrides.
#
# Its backbone, MoCoV3ViT, is VisionTransformer (the keys MRCL's encoder
# has) with frozen_stages=12: patch embedding, class token, position
# embedding, the 12 layers and the final norm take no gradient, and train()
# keeps them in eval mode. Its head is a plain linear layer on the class
# token after the final norm (VisionTransformerClsHead, no hidden layer).
#
# The encoder is the output of mrcl_plugin.checkpoints.converters.to_mmpretrain (keys of
# VisionTransformer, no prefix); give it on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=ENCODER.pth
_base_ = 'mmpretrain::mocov3/benchmarks/vit-base-p16_8xb128-linear-coslr-90e_in1k.py'  # noqa: E501

# Registers PretrainedCheckHook (and MRCL) and applies mrcl_plugin.compat.
custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

# The converted encoder has no 'backbone.' prefix (the base expects a whole
# MoCo v3 model's checkpoint).
model = dict(backbone=dict(init_cfg=dict(checkpoint='', prefix=None)))

# mmengine's Pretrained init only logs keys that do not fit: stop the run
# instead, before the first iteration, unless every tensor came from the file.
custom_hooks = [dict(type='PretrainedCheckHook')]

# The paper's lr, 0.2 at batch 1024 (the base has MoCo v3's 12).
optim_wrapper = dict(optimizer=dict(lr=0.2))

# 100 epochs, the paper's (the base has 90).
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=100, by_epoch=True, begin=0, end=100)
]
train_cfg = dict(max_epochs=100)

# --auto-scale-lr keeps lr 0.2 per 1024 images on another number of GPUs
# (the base does not say its batch).
auto_scale_lr = dict(base_batch_size=1024)
