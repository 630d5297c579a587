# Table 2 in miniature: UperNet on CamVid (../shared/data/camvid, 11
# classes, 367 training / 101 validation / 233 test images) from a small
# MRCL encoder, on a CPU. It inherits the shipped ADE20K recipe (mmseg's MAE
# UperNet: layer decay 0.65, AdamW, drop path 0.1, slide inference,
# PretrainedCheckHook) as a user would, and shrinks what a CPU cannot do:
# the study's ViT (ViT-Tiny width, 6 layers, 8 px patches, pretrained at
# 64 px: configs/mrcl/*_vit-tiny-p8_*_tiny-imagenet.py) at 128 px crops of
# images resized to 128 px high, narrow heads, batch 8, bf16 autocast, 1,000
# iterations, the validation split every 250 for the checkpoint choice
# (save_best) and the test split for the figure. tools/study/finetune.py
# runs it for every arm of the dense study (`--plan` times it first). The
# study ran it at `--iters 300` (3.5-7 min a run on a 2-core CPU:
# docs/study/camvid-upernet.csv), where SimCLR's encoder already beats the
# random init at every seed: docs/study.md.
#
#   python tools/train.py configs/benchmarks/mmsegmentation/mrcl_vit-tiny-p8_upernet_1xb8-bf16-1k_camvid-128x128.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=ENCODER.pth
_base_ = ['./mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py']

data_root = '{{$MRCL_DATA:../shared/data}}/camvid'
crop_size = (128, 128)
scale = (512, 128)  # CamVid's 480x360 -> 171x128
num_classes = 11
metainfo = dict(classes=('Sky', 'Building', 'Pole', 'Road', 'Pavement',
                         'Tree', 'SignSymbol', 'Fence', 'Car', 'Pedestrian',
                         'Bicyclist'))
embed_dims = 192

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=embed_dims, num_layers=6,
                  num_heads=3, feedforward_channels=768),
        img_size=crop_size[0],  # pos_embed 8x8 -> 16x16 on load
        patch_size=8,
        out_indices=[1, 2, 3, 5]),  # as MAE's 4/6/8/12 of 12
    neck=dict(embed_dim=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=128,
                     num_classes=num_classes),
    auxiliary_head=dict(in_channels=embed_dims, channels=64,
                        num_classes=num_classes),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(85, 85)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
camvid = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
              reduce_zero_label=True, img_suffix='.jpg',
              seg_map_suffix='.png')
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(**camvid, pipeline=train_pipeline, data_prefix=dict(
        img_path='images/training', seg_map_path='annotations/training')))
val_dataloader = dict(
    num_workers=2,
    dataset=dict(**camvid, pipeline=test_pipeline, data_prefix=dict(
        img_path='images/validation',
        seg_map_path='annotations/validation')))
test_dataloader = dict(
    num_workers=2,
    dataset=dict(**camvid, pipeline=test_pipeline, data_prefix=dict(
        img_path='images/test', seg_map_path='annotations/test')))

# AdamW at the ADE20K recipe's lr per image x 40 (a 1,000-iteration
# schedule, not 160k), bf16 autocast on the CPU
optim_wrapper = dict(type='mmpretrain.CPUBF16OptimWrapper',
                     optimizer=dict(lr=2e-3))
max_iters = 1000
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=max_iters // 10),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False,
         begin=max_iters // 10, end=max_iters)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters // 4)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters // 4, max_keep_ckpts=1,
                    save_best='mIoU', rule='greater'),
    visualization=dict(type='SegVisualizationHook', draw=False))
