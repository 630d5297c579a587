"""Helpers of the dense-transfer tests: a converted MRCL encoder, CPU-size
runner settings, and the independent expectation for loaded weights."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmpretrain.models.utils import resize_pos_embed

from mrcl_plugin.checkpoints.converters import to_mmpretrain
from mrcl_testing import experiment_name

ROOT = Path(__file__).resolve().parents[1]
SEG_CONFIG = ROOT / (
    'configs/benchmarks/mmsegmentation/'
    'mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py')
FINAL_NORM = ('ln1.weight', 'ln1.bias')  # not used: final_norm=False
DET_CONFIG = ROOT / ('configs/benchmarks/mmdetection/mrcl_vit-base-p16_'
                     'simple-fpn_mask-rcnn_8xb8-amp-lsj-100e_coco.py')


def convert(ckpt: Path, dst: Path) -> dict:
    """Write the encoder of an MRCL checkpoint as mmpretrain's
    VisionTransformer checkpoint; returns it."""
    encoder = to_mmpretrain(str(ckpt))
    torch.save(encoder, dst)
    return encoder


def vit_arch(meta: dict) -> dict:
    return {
        k: meta[k]
        for k in ('embed_dims', 'num_layers', 'num_heads',
                  'feedforward_channels')
    }


def cpu_runner(cfg: Config, work_dir: Path, max_iters: int) -> Config:
    """No workers, no AMP, ``max_iters`` training iterations, validation
    only when asked (``runner.val()``)."""
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = experiment_name('transfer')
    cfg.launcher = 'none'
    cfg.env_cfg = dict(cudnn_benchmark=False,
                       dist_cfg=dict(backend='gloo'),
                       mp_cfg=dict(mp_start_method='fork'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.optim_wrapper.type = 'OptimWrapper'
    cfg.train_cfg = dict(type='IterBasedTrainLoop',
                         max_iters=max_iters,
                         val_begin=max_iters + 1)
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10_000)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    return cfg


def expected_backbone(encoder: dict, backbone, ignore=()) -> dict:
    """The checkpoint's tensors as the backbone should hold them:
    ``pos_embed`` resized to the backbone's patch grid with mmpretrain's
    ``resize_pos_embed`` (bicubic, class token kept; its slot dropped for
    a backbone without one)."""
    state = {k: v for k, v in encoder['state_dict'].items() if k not in ignore}
    src = int(round((state['pos_embed'].shape[1] - 1)**0.5))
    extra = backbone.num_extra_tokens
    state['pos_embed'] = resize_pos_embed(state['pos_embed'][:, 1 - extra:],
                                          (src, src),
                                          backbone.patch_resolution,
                                          mode='bicubic',
                                          num_extra_tokens=extra)
    return state


def init_from_checkpoint(runner, encoder: dict, grid: int,
                         ignore=FINAL_NORM) -> dict:
    """Init the runner's model and assert that every backbone tensor is the
    checkpoint's, ``pos_embed`` resized to ``grid`` x ``grid``, and any
    relative-position table (ViTDetViT's, in no checkpoint) zero; returns
    the expected tensors."""
    backbone = runner.model.backbone
    runner.model.init_weights()
    own = backbone.state_dict()
    expected = expected_backbone(encoder, backbone, ignore=ignore)
    rel_pos = [k for k in own if '.rel_pos_' in k]
    assert sorted(own) == sorted([*expected, *rel_pos])
    assert all(not own[k].any() for k in rel_pos)
    assert own['pos_embed'].shape == (1, backbone.num_extra_tokens +
                                      grid * grid,
                                      encoder['meta']['embed_dims'])
    for name, tensor in expected.items():
        torch.testing.assert_close(own[name], tensor, msg=name)
    return expected


def train_from_checkpoint(runner, expected: dict) -> None:
    """Train; the loud-loading hook logged the tensors and the backbone
    moved away from the checkpoint."""
    runner.train()
    log = '\n'.join(p.read_text()
                    for p in Path(runner.work_dir).glob('*/*.log'))
    assert f'model.backbone: {len(expected)} tensors loaded from' in log
    changed = [
        k for k, v in runner.model.backbone.state_dict().items()
        if not torch.equal(v, expected.get(k, torch.zeros_like(v)))
    ]
    assert changed, 'training left the backbone unchanged'
