"""One training step of each downstream stack, built from the packages' own
configs (``mmpretrain::``, ``mmseg::``, ``mmdet::`` inheritance), shrunk in
the test and run by an mmengine Runner on real images through the configs'
data pipelines.

Shrinking: ResNet-18 (narrow where the config allows), small crops, small
heads, SyncBN -> BN, no pretrained weights (``init_cfg=None`` /
``pretrained=None``: nothing is downloaded), one iteration of an
``IterBasedTrainLoop``, no validation, no checkpoint.
"""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

# What every test config appends: one iteration, no val/test loops, no
# checkpoint, quiet logs.
ONE_STEP = """
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=1)
val_cfg = None
val_dataloader = None
val_evaluator = None
test_cfg = None
test_dataloader = None
test_evaluator = None
default_hooks = dict(checkpoint=None, logger=dict(interval=1))
randomness = dict(seed=0)
log_level = 'WARNING'
"""


class StepRecorder(Hook):
    """Keeps the batch, the trainable parameters before and after the
    optimiser step, and the step's loss dict."""
    priority = 'VERY_LOW'

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batch = data_batch
        self.before = self._params(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.outputs = outputs
        self.after = self._params(runner)
        self.iter = runner.iter

    @staticmethod
    def _params(runner):
        return {
            n: p.detach().clone()
            for n, p in runner.model.named_parameters() if p.requires_grad
        }


def run_one_step(tmp_path, text, name):
    path = tmp_path / f'{name}.py'
    path.write_text(text + ONE_STEP)
    cfg = Config.fromfile(str(path))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'{name}_{tmp_path.name}'
    runner = Runner.from_cfg(cfg)
    recorder = StepRecorder()
    runner.register_hook(recorder)
    runner.train()
    assert recorder.iter == 0  # the hook saw exactly the one step
    assert runner.iter == 1
    return cfg, runner, recorder


def check_losses(outputs, expected):
    assert set(expected) <= set(outputs), sorted(outputs)
    for key, value in outputs.items():
        value = float(value)
        assert math.isfinite(value), (key, value)
    for key in expected:
        assert float(outputs[key]) > 0, key
    # `loss` is the sum of every `loss*` term (mmengine's parse_losses);
    # mmpretrain's classifier head names its only term `loss`.
    terms = [float(v) for k, v in outputs.items()
             if k != 'loss' and 'loss' in k]
    if terms:
        assert float(outputs['loss']) == pytest.approx(sum(terms), rel=1e-4)


def check_params_changed(recorder, must_change):
    before, after = recorder.before, recorder.after
    changed = [n for n in before if not torch.equal(before[n], after[n])]
    assert changed, 'no parameter changed after the optimiser step'
    for prefix in must_change:
        assert any(n.startswith(prefix) for n in changed), (prefix, changed)
    for n in changed:
        assert torch.isfinite(after[n]).all(), n
    return changed


def test_mmpretrain_classifier_step(tmp_path, data_root):
    """ResNet-18 (CIFAR stem, 16 base channels) on real CIFAR-10 JPEGs read
    by CustomDataset with the ImageNet-style meta/train.txt list."""
    # This base defines no collate_fn, so the `mmpretrain::` _scope_ trap
    # (test_compat.py::test_mmpretrain_scope_reaches_default_collate) does
    # not apply; mmpretrain's pseudo_collate gives lists of images.
    text = f"""
_base_ = 'mmpretrain::resnet/resnet18_8xb16_cifar10.py'
model = dict(
    backbone=dict(base_channels=16, stem_channels=16, init_cfg=None),
    head=dict(in_channels=128))
# LoadImageFromFile gives BGR (the base's CIFAR10 dataset gives RGB).
data_preprocessor = dict(to_rgb=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='{data_root}/cls/cifar10',
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='RandomCrop', crop_size=32, padding=4),
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='PackInputs'),
        ]))
"""
    cfg, runner, rec = run_one_step(tmp_path, text, 'cls')
    assert cfg.default_scope == 'mmpretrain'
    assert type(runner.model).__name__ == 'ImageClassifier'
    assert runner.model.data_preprocessor.to_rgb
    assert len(runner.train_dataloader.dataset) == 20000

    inputs = rec.batch['inputs']
    assert len(inputs) == 8 and inputs[0].shape == (3, 32, 32)
    # Real photos (RandomCrop pads with zeros, so allow a dark border).
    assert all(img.float().std() > 10 for img in inputs)
    labels = [s.gt_label.item() for s in rec.batch['data_samples']]
    assert all(0 <= label < 10 for label in labels)

    check_losses(rec.outputs, ['loss'])
    # 10 classes, random head: cross-entropy near ln 10.
    assert 0.5 * math.log(10) < float(rec.outputs['loss']) < 4 * math.log(10)
    check_params_changed(rec, ['backbone.conv1', 'backbone.layer4', 'head.fc'])


def test_mmseg_upernet_step(tmp_path, data_root):
    """UperNet-R18 on the real ADE20K sample: 128 px crops, reduced labels
    (0 -> 255 ignored, 1..150 -> 0..149)."""
    text = f"""
_base_ = 'mmseg::upernet/upernet_r18_4xb4-80k_ade20k-512x512.py'
crop_size = (128, 128)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(channels=64, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=32, norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # The base's (2048, 512) scale / 4; ratios >= 1 keep the short side at
    # least 128, so every crop is a full 128 x 128.
    dict(type='RandomResize', scale=(512, 128), ratio_range=(1.0, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root='{data_root}/ade_tiny',
        reduce_zero_label=True,
        pipeline=train_pipeline))
"""
    cfg, runner, rec = run_one_step(tmp_path, text, 'seg')
    assert cfg.default_scope == 'mmseg'
    model = runner.model
    assert type(model).__name__ == 'EncoderDecoder'
    assert not any('SyncBatchNorm' in type(m).__name__
                   for m in model.modules())
    dataset = runner.train_dataloader.dataset
    assert type(dataset).__name__ == 'ADE20KDataset'
    assert len(dataset) == 2 and len(dataset.metainfo['classes']) == 150

    assert [tuple(x.shape) for x in rec.batch['inputs']] == [(3, 128, 128)] * 2
    for sample in rec.batch['data_samples']:
        seg = sample.gt_sem_seg.data
        assert seg.shape == (1, 128, 128)
        values = set(seg.unique().tolist())
        classes = values - {255}
        # Several real classes in a 128 px crop (cat_max_ratio=0.75), all
        # in 0..149 after reduce_zero_label.
        assert len(classes) >= 2 and max(classes) < 150, values

    check_losses(rec.outputs, ['decode.loss_ce', 'aux.loss_ce'])
    assert 0 <= float(rec.outputs['decode.acc_seg']) <= 100
    check_params_changed(
        rec, ['backbone.stem', 'backbone.layer4', 'decode_head.conv_seg',
              'decode_head.fpn_bottleneck', 'auxiliary_head.conv_seg'])


def test_mmdet_mask_rcnn_step(tmp_path, data_root):
    """Mask R-CNN R18-FPN (64-wide FPN and heads) on real COCO val2017
    images at 320 px, polygons rasterised by the pipeline; RoIAlign and NMS
    are mmcv's compiled CPU ops."""
    text = f"""
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
C = 64
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=C),
    rpn_head=dict(in_channels=C, feat_channels=C),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=C),
        bbox_head=dict(in_channels=C, fc_out_channels=128),
        mask_roi_extractor=dict(out_channels=C),
        mask_head=dict(in_channels=C, conv_out_channels=C)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(320, 240), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root='{data_root}/coco_tiny/',
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        pipeline=train_pipeline))
"""
    cfg, runner, rec = run_one_step(tmp_path, text, 'det')
    assert cfg.default_scope == 'mmdet'
    assert type(runner.model).__name__ == 'MaskRCNN'
    dataset = runner.train_dataloader.dataset
    assert type(dataset).__name__ == 'CocoDataset'
    assert 0 < len(dataset) <= 100 and len(dataset.metainfo['classes']) == 80

    for img, sample in zip(rec.batch['inputs'], rec.batch['data_samples']):
        h, w = img.shape[-2:]
        assert max(h, w) <= 320 and min(h, w) <= 240
        assert img.float().std() > 10
        gt = sample.gt_instances
        assert len(gt) > 0
        assert gt.masks.masks.shape == (len(gt), h, w)
        assert gt.masks.masks.any(axis=(1, 2)).all()  # non-empty masks
        boxes = gt.bboxes.tensor
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        assert (gt.labels >= 0).all() and (gt.labels < 80).all()

    check_losses(rec.outputs, [
        'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'
    ])
    assert 0 <= float(rec.outputs['acc']) <= 100
    changed = check_params_changed(
        rec, ['backbone.layer4', 'neck', 'rpn_head', 'roi_head.bbox_head',
              'roi_head.mask_head'])
    # frozen_stages=1: the stem and the first stage do not train.
    assert not any(n.startswith(('backbone.conv1', 'backbone.layer1'))
                   for n in rec.before)
    assert all(not n.startswith('backbone.layer1') for n in changed)
