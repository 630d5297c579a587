"""The CamVid miniature of Table 2 (configs/benchmarks/mmsegmentation/
*camvid*.py, tools/study/finetune.py): both configs build through mmseg's
inheritance from the shipped ADE20K UperNet config, and from a real small
MRCL checkpoint each trains 2 iterations on the CamVid sample, picks its
checkpoint on validation images and tests, keeping the test's per-image
areas, whose mIoU is mmseg's."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from conftest import TINY_IMAGENET_CONFIG, _pretrain
from mrcl_testing import ROOT

sys.path.insert(0, str(ROOT / 'tools' / 'study'))
import finetune  # noqa: E402
from presets import Run  # noqa: E402
from runner import load_areas  # noqa: E402

from mrcl_plugin.evaluation.intervals import run_miou  # noqa: E402

CONFIGS = ROOT / 'configs' / 'benchmarks' / 'mmsegmentation'


@pytest.mark.parametrize('readout', sorted(finetune.READOUTS))
def test_configs_build_from_the_ade20k_recipe(readout, mrcl_data_env):
    from mmseg.registry import MODELS
    cfg = Config.fromfile(str(CONFIGS / finetune.READOUTS[readout]))
    assert cfg.default_scope == 'mmseg'
    assert cfg.optim_wrapper.type == 'mmpretrain.CPUBF16OptimWrapper'
    assert cfg.test_dataloader.dataset.data_prefix.img_path == 'images/test'
    assert osp.isdir(cfg.test_dataloader.dataset.data_root)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert (backbone.embed_dims, backbone.num_layers) == (192, 6)
    assert backbone.patch_resolution == (16, 16)  # 128 px / 8
    assert model.decode_head.num_classes == 11
    if readout == 'upernet':
        assert type(model.decode_head).__name__ == 'UPerHead'
        assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65
    else:  # frozen encoder, one 1x1 convolution on its last block
        backbone.train()  # frozen_stages hold in train mode too
        assert not any(p.requires_grad for p in backbone.parameters())
        head = [p for p in model.decode_head.parameters()]
        assert [tuple(p.shape) for p in head] == [(11, 192, 1, 1), (11, )]


@pytest.fixture(scope='module')
def p8_run_dir(tmp_path_factory, data_root):
    """A run folder as run.py keeps it: the small Tiny-ImageNet config's
    ViT (192 wide, 6 layers, 8 px patches) trained 2 iterations."""
    work = tmp_path_factory.mktemp('camvid_run')
    _pretrain(TINY_IMAGENET_CONFIG, work, data_root, 2)
    return work


SMALL = {
    'train_dataloader.batch_size': 2,
    'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'train_dataloader.dataset.indices': 4,
    'val_dataloader.num_workers': 0,
    'val_dataloader.persistent_workers': False,
    'val_dataloader.dataset.indices': 2,
    'test_dataloader.num_workers': 0,
    'test_dataloader.persistent_workers': False,
    'test_dataloader.dataset.indices': 3,
}


@pytest.mark.parametrize('readout', sorted(finetune.READOUTS))
def test_a_readout_trains_picks_and_tests(readout, p8_run_dir,
                                          mrcl_data_env):
    run = Run('barlowtwins', 'baseline', 0., 0., 0., seed=0)
    row = finetune.finetune(run, readout, str(p8_run_dir), iters=2,
                            options=SMALL)
    assert row['iters'] == 2 and row['best_iter'] in (1, 2)
    assert 0 <= row['val_miou'] <= 100 and 0 <= row['test_miou'] <= 100
    areas = load_areas(str(p8_run_dir / f'{readout}_areas.pt'))['test']
    assert [a.shape for a in areas] == [(3, 3, 11)]  # 3 test images
    assert run_miou(areas) == pytest.approx(row['test_miou'], abs=0.01)
    encoder = torch.load(p8_run_dir / 'encoder_mmpretrain.pth',
                         weights_only=True)
    assert encoder['meta']['learner'] == 'barlowtwins'
