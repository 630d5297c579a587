# COCO detection and instance segmentation from an MRCL ViT-B/16 (Table 2b):
# mmdet's own Mask R-CNN with large-scale jitter at 1024 px, the ViT-B/16
# backbone and ViTDet's simple feature pyramid. The paper names only
# "Mask R-CNN"; where it is silent this follows ViTDet (Li et al. 2022,
# "Exploring plain ViT backbones for object detection"), as marked:
#
# - mmdet: Mask R-CNN heads, LSJ pipeline (scale 0.1-2.0, 1024 crop),
#   8 GPUs x 8 images = batch 64, 25 epochs over RepeatDataset x4 = 100
#   epochs (~184k iterations, ViTDet's ViT-B length) with steps at 22/24 of
#   25 (ViTDet: 88.9% / 96.3%), AMP.
# - ViTDet: simple feature pyramid from the last (stride-16) map, LN in the
#   pyramid and heads, 2-conv RPN head, 4conv1fc box head, AdamW lr 1e-4
#   wd 0.1 (none on norms and pos_embed), layer decay 0.7, drop path 0.1.
# - ours: global attention in all 12 blocks (mmpretrain's VisionTransformer
#   has no window attention; ViTDet uses 14x14 windows with global blocks
#   2, 5, 8, 11). At 1024 px that is 4096 tokens: an explicit attention
#   matrix would be 4096^2 x 12 heads x 2 bytes = 403 MB per block per image
#   in fp16, about 4.8 GB per image for 12 blocks kept for backward; torch's
#   scaled_dot_product_attention, which mmpretrain's attention calls on
#   torch 2, does not keep it on GPUs with flash/memory-efficient kernels.
#   No final norm (ViTDet's ViT has none).
#
#   bash tools/benchmarks/mmdetection/coco.sh PRETRAIN_CKPT GPUS
#
# Set the converted encoder with
#   --cfg-options model.backbone.init_cfg.checkpoint=ENCODER.pth
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_8xb8-amp-lsj-200e_coco.py']

custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

pretrained = 'pretrain/mrcl_vit-base-p16_mmpretrain.pth'
norm_cfg = dict(type='mmpretrain.LN2d', eps=1e-6)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='base',
        img_size=1024,  # pos_embed 14x14 -> 64x64 on load
        patch_size=16,
        out_indices=[11],
        out_type='featmap',
        drop_path_rate=0.1,
        final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(
        _delete_=True,
        type='mmpretrain.SimpleFeaturePyramid',
        in_channels=768,
        out_channels=256,
        num_outs=5,  # strides 4, 8, 16, 32 and 64 for the RPN
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            conv_out_channels=256,
            norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

# Layer ids as in the ADE20K config: cls_token/pos_embed/patch_embed 0,
# layers.i i+1, pyramid and heads 13; lr of id k is 1e-4 * 0.7 ** (13 - k).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='mmpretrain.BackboneLayerDecayOptimWrapperConstructor',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.1),
    paramwise_cfg=dict(
        layer_decay_rate=0.7,
        norm_decay_mult=0.,
        custom_keys={'.pos_embed': dict(decay_mult=0.)}))

# Loud loading, as in the ADE20K config (the encoder's final norm ln1 is
# not used: final_norm=False).
custom_hooks = [
    dict(
        type='mmpretrain.PretrainedCheckHook',
        module='backbone',
        ignore_keys=['ln1.weight', 'ln1.bias'])
]
