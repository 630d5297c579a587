# Fine-tuning of an MRCL encoder on ImageNet-1k, end to end: mmpretrain's
# MAE recipe as it is (ViT-B/16, layer-wise lr decay 0.65, AdamW lr 2e-3 at
# batch 1024 (8 x 128), 5 warm-up + 95 cosine epochs, RandAugment, Mixup,
# CutMix, label smoothing, drop path 0.1, the mean patch token through a
# fresh norm). Beyond the paper: users compare SSL methods this way too.
#
# The encoder is the output of mrcl_plugin.checkpoints.converters.to_mmpretrain (keys of
# VisionTransformer, no prefix); give it on the command line:
#   --cfg-options model.backbone.init_cfg.checkpoint=ENCODER.pth
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'

# Registers PretrainedCheckHook (and MRCL) and applies mrcl_plugin.compat.
custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

# The converted encoder has no 'backbone.' prefix (the base expects a whole
# MAE model's checkpoint).
model = dict(backbone=dict(init_cfg=dict(checkpoint='', prefix=None)))

# mmengine's Pretrained init only logs keys that do not fit: stop the run
# instead, before the first iteration, unless every tensor came from the
# file. MAE's recipe drops the encoder's final norm (ln1, final_norm=False)
# and pools the patch tokens through a new one (ln2): those two may differ.
custom_hooks = [
    dict(
        type='PretrainedCheckHook',
        ignore_keys=['ln1.weight', 'ln1.bias', 'ln2.weight', 'ln2.bias'])
]
