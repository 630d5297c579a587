"""COCO Mask R-CNN benchmark config (ViTDet's recipe): it builds through
mmdet's inheritance chain with ViTDet's windowed backbone; the simple
feature pyramid gives strides 4-64 at 256 channels; the layer-decay ids
cover the relative-position tables; a shrunken copy, still windowed (with
padding) and with relative positions, trains from a converted MRCL
checkpoint (a patch-16 encoder pretrained here for 2 iterations on the real
Tiny-ImageNet sample) and evaluates box and mask AP on 40 of the real
validation images of the COCO sample; a checkpoint that does not fit fails
at start."""
import json

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mrcl_plugin  # noqa: F401
from transfer_testing import (DET_CONFIG, FINAL_NORM, convert, cpu_runner,
                              init_from_checkpoint, train_from_checkpoint,
                              vit_arch)

VAL_IMAGES = 40


def test_config_builds_unmodified():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DET_CONFIG))
    assert cfg.default_scope == 'mmdet'
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'MaskRCNN'
    backbone = model.backbone
    assert type(backbone).__name__ == 'ViTDetViT'
    # ViTDet: pos_embed kept at the 224 px grid, no class token; windows
    # of 14 in all blocks but 2, 5, 8, 11; tables for 14 / 64 tokens
    assert backbone.patch_resolution == (14, 14)
    assert backbone.pos_embed.shape == (1, 14 * 14, 768)
    assert backbone.cls_token is None
    global_blocks = [2, 5, 8, 11]
    for i, layer in enumerate(backbone.layers):
        window = 0 if i in global_blocks else 14
        assert layer.attn.window_size == window, i
        assert layer.attn.rel_pos_h.shape == (2 * (window or 64) - 1, 64)
    assert type(model.neck).__name__ == 'SimpleFeaturePyramid'
    assert type(model.roi_head.bbox_head).__name__ == 'Shared4Conv1FCBBoxHead'
    # the LSJ recipe of mmdet: 1024 crops, 25 epochs x RepeatDataset 4
    assert cfg.image_size == (1024, 1024)
    assert cfg.train_dataloader.dataset.times * cfg.max_epochs == 100
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7
    assert cfg.model.backbone.drop_path_rate == 0.1


def test_layer_decay_covers_the_relative_position_tables():
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper
    cfg = Config.fromfile(str(DET_CONFIG))
    init_default_scope('mmdet')
    cfg.model.backbone.arch = dict(embed_dims=64, num_layers=12, num_heads=4,
                                   feedforward_channels=128)
    cfg.model.backbone.img_size = 224
    model = MODELS.build(cfg.model)
    cfg.optim_wrapper.type = 'OptimWrapper'
    groups = build_optim_wrapper(model,
                                 cfg.optim_wrapper).optimizer.param_groups
    tables = {g['param_name']: g for g in groups if 'rel_pos' in
              g['param_name']}
    assert len(tables) == 24
    for name, group in tables.items():
        i = int(name.split('.')[2])
        assert group['layer_id'] == i + 1, name
        assert group['lr'] == pytest.approx(1e-4 * 0.7**(12 - i)), name
        assert group['weight_decay'] == 0.1, name  # as ViTDet

def test_simple_feature_pyramid_strides_and_channels():
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(DET_CONFIG))
    init_default_scope('mmdet')
    neck = MODELS.build(cfg.model.neck)
    x = torch.randn(2, 768, 8, 12)  # the stride-16 map of a 128x192 image
    outs = neck((x, ))
    assert [tuple(o.shape) for o in outs] == [(2, 256, 128 // s, 192 // s)
                                              for s in (4, 8, 16, 32, 64)]
    assert [s for s in cfg.model.rpn_head.anchor_generator.strides
            ] == [4, 8, 16, 32, 64]
    norms = [m for m in neck.modules() if type(m).__name__ == 'LayerNorm2d']
    assert len(norms) == 1 + 2 * 4  # stride-4 deconvs, then 2 per level
    with pytest.raises(ValueError, match='neck.num_outs must be 4 or 5'):
        MODELS.build(dict(cfg.model.neck, num_outs=3))


def val_subset(data_root, dst, n=VAL_IMAGES):
    """The first n images of the COCO sample's val split with all their
    instances, as an annotation file (CocoMetric scores every image of its
    file, so a subset needs its own)."""
    ann = json.loads((data_root / 'coco_tiny/annotations/'
                      'instances_val2017.json').read_text())
    ann['images'] = ann['images'][:n]
    ids = {img['id'] for img in ann['images']}
    ann['annotations'] = [
        a for a in ann['annotations'] if a['image_id'] in ids
    ]
    dst.write_text(json.dumps(ann))
    return dst


def small_config(cfg, meta, data_root, pretrained, val_ann=None):
    """The real config shrunk: the patch-16 encoder at 256 px, 64-channel
    pyramid and heads, the real COCO sample (val: ``val_ann``)."""
    # 256 px = 16x16 tokens in windows of 6 (padded to 18: 3x3 windows),
    # global attention in the last block of each pair
    cfg.model.backbone.update(arch=vit_arch(meta),
                              img_size=256,
                              pretrain_img_size=meta['img_size'],
                              window_size=6,
                              window_block_indexes=list(
                                  range(0, meta['num_layers'], 2)),
                              out_indices=[meta['num_layers'] - 1],
                              drop_path_rate=0.)
    cfg.model.backbone.init_cfg.checkpoint = str(pretrained)
    c = 64
    cfg.model.data_preprocessor.batch_augments[0].size = (256, 256)
    cfg.model.neck.update(in_channels=meta['embed_dims'], out_channels=c)
    cfg.model.rpn_head.update(in_channels=c, feat_channels=c)
    roi = cfg.model.roi_head
    roi.bbox_roi_extractor.out_channels = c
    roi.bbox_head.update(in_channels=c,
                         conv_out_channels=c,
                         fc_out_channels=128)
    roi.mask_roi_extractor.out_channels = c
    roi.mask_head.update(in_channels=c, conv_out_channels=c)
    cfg.model.test_cfg.rpn.update(nms_pre=300, max_per_img=300)
    # after 2 iterations no class score reaches mmdet's 0.05
    cfg.model.test_cfg.rcnn.update(score_thr=0., max_per_img=20)
    cfg.model.train_cfg.rpn_proposal.update(nms_pre=500, max_per_img=500)

    root = str(data_root / 'coco_tiny') + '/'
    train = cfg.train_dataloader.dataset.dataset
    train.update(data_root=root)
    for t in train.pipeline:
        if t['type'] in ('RandomResize', 'RandomCrop'):
            t[{
                'RandomResize': 'scale',
                'RandomCrop': 'crop_size'
            }[t['type']]] = (256, 256)
    cfg.train_dataloader.batch_size = 2
    val_ann = str(val_ann or root + 'annotations/instances_val2017.json')
    cfg.val_dataloader.dataset.update(data_root=root, ann_file=val_ann)
    cfg.val_dataloader.dataset.pipeline[1].scale = (320, 256)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = val_ann
    cfg.test_evaluator = cfg.val_evaluator
    return cfg


def test_small_run_from_mrcl_checkpoint(mrcl_checkpoint_p16, data_root,
                                        tmp_path):
    path = tmp_path / 'encoder.pth'
    ckpt = convert(mrcl_checkpoint_p16, path)
    assert ckpt['meta']['patch_size'] == 16
    # the first VAL_IMAGES of the 100 (Mask R-CNN on 2 CPU cores)
    val_ann = val_subset(data_root, tmp_path / 'val.json')
    cfg = small_config(Config.fromfile(str(DET_CONFIG)), ckpt['meta'],
                       data_root, path, val_ann)
    runner = Runner.from_cfg(cpu_runner(cfg, tmp_path / 'run', max_iters=2))
    # pos_embed stays 4x4 (the pretraining's), resized in each forward
    expected = init_from_checkpoint(runner, ckpt, grid=4,
                                    ignore=FINAL_NORM + ('cls_token', ))
    train_from_checkpoint(runner, expected)
    metrics = runner.val()
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert 0 <= metrics[key] <= 1, key
    assert len(runner.val_dataloader.dataset) == VAL_IMAGES


def test_raw_mrcl_checkpoint_fails_at_start(mrcl_checkpoint_p16, data_root,
                                            tmp_path):
    meta = dict(embed_dims=192,
                num_layers=6,
                num_heads=3,
                feedforward_channels=768,
                img_size=64)
    cfg = small_config(Config.fromfile(str(DET_CONFIG)), meta, data_root,
                       mrcl_checkpoint_p16)
    runner = Runner.from_cfg(cpu_runner(cfg, tmp_path, max_iters=1))
    with pytest.raises(ValueError) as error:
        runner.train()
    message = str(error.value)
    assert f'{mrcl_checkpoint_p16} does not fit model.backbone' in message
    assert 'missing keys [layers.0.attn.proj.bias' in message
    assert 'rel_pos' not in message  # the tables may be missing
    assert 'unexpected keys [backbone.cls_token' in message
    assert runner.train_loop.iter == 0

    # the same file with the prefix named loads
    cfg.model.backbone.init_cfg.prefix = 'backbone.'
    runner = Runner.from_cfg(cpu_runner(cfg, tmp_path / 'prefixed', 1))
    runner.model.init_weights()
    hook = next(h for h in runner.hooks
                if type(h).__name__ == 'PretrainedCheckHook')
    hook.before_train(runner)
