# COCO detection and instance segmentation from an MRCL ViT-B/16 (Table 2b):
# ViTDet's ViT-B Mask R-CNN recipe (Li et al. 2022, "Exploring plain ViT
# backbones for object detection"; detectron2's mask_rcnn_vitdet_b_100ep.py)
# on mmdet's Mask R-CNN with large-scale jitter at 1024 px. The paper names
# only "Mask R-CNN"; whose each choice is (docs/transfer.md has the table):
#
# - ViTDet: the backbone (ViTDetViT): 14x14 window attention with global
#   attention in blocks 2, 5, 8, 11, decomposed relative positions (zero
#   init), no class token, absolute position embedding kept at 14x14 and
#   interpolated to the 64x64 map, no final norm, drop path 0.1; simple
#   feature pyramid from the last (stride-16) map, LN in the pyramid and
#   heads, 2-conv RPN head, 4conv1fc box head; AdamW lr 1e-4, betas
#   (0.9, 0.999), wd 0.1 (none on norms and pos_embed), layer decay 0.7.
# - mmdet: Mask R-CNN heads, LSJ pipeline (scale 0.1-2.0, 1024 crop),
#   8 GPUs x 8 images = batch 64, 25 epochs over RepeatDataset x4 = 100
#   epochs (~184k iterations, ViTDet's ViT-B length) with steps at 22/24 of
#   25 (ViTDet: 88.9% / 96.3%), AMP.
# - ours: the same config serves MRCL and MAE encoders (both converted by
#   tools/model_converters/mrcl2mmpretrain.py); a global-attention run is
#   model.backbone.window_size=0 (no separate config: no result needs it).
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
        type='mmpretrain.ViTDetViT',
        arch='base',
        img_size=1024,  # 64x64 tokens: global blocks' tables 127 x 64
        pretrain_img_size=224,  # pos_embed stays 14x14, resized per forward
        patch_size=16,
        window_size=14,  # 64 -> padded to 70: 5x5 windows
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        use_rel_pos=True,
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

# Layer ids as in the ADE20K config: pos_embed/patch_embed 0, layers.i
# (its rel_pos_h/w tables too) i+1, pyramid and heads 13; lr of id k is
# 1e-4 * 0.7 ** (13 - k). As ViTDet, the tables have weight decay.
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

# Loud loading, as in the ADE20K config: the encoder's class token and
# final norm ln1 are not used; the relative-position tables are the only
# keys allowed missing (logged by name).
custom_hooks = [
    dict(
        type='mmpretrain.PretrainedCheckHook',
        module='backbone',
        ignore_keys=['cls_token', 'ln1.weight', 'ln1.bias'])
]
