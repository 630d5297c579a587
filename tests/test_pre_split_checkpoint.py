"""Checkpoints saved before MRCL was split into one class per learner name
``type='MRCL'`` and ``variant=...`` in their config, and MoCo v3's EMA copy
``target_net``; they still convert, to the same encoder file."""
import re

import pytest
import torch
from mmengine.config import Config
from mrcl_testing import build, mrcl_cfg

from mrcl_plugin.checkpoint import (CheckpointError, load_checkpoint_file,
                                    mrcl_variant)
from mrcl_plugin.converters import to_mmpretrain, to_timm


def pre_split(cfg: str, variant: str, with_variant: bool = True) -> str:
    """The config text the pre-split code saved for the same model."""
    old = "type='MRCL'" + (f",\n    variant='{variant}'"
                           if with_variant else '')
    new, count = re.subn(r"type='MR(BarlowTwins|SimCLR|BYOL|MoCoV3)'", old,
                         cfg)
    assert count == 1
    return new


@pytest.mark.parametrize('with_variant', [True, False],
                         ids=['variant', 'default_variant'])
def test_pre_split_barlowtwins_checkpoint_converts(mrcl_checkpoint, tmp_path,
                                                   with_variant):
    ckpt = load_checkpoint_file(mrcl_checkpoint)
    assert mrcl_variant(ckpt['meta']['cfg']) == 'barlowtwins'
    ckpt['meta']['cfg'] = pre_split(ckpt['meta']['cfg'], 'barlowtwins',
                                    with_variant)
    assert "type='MRBarlowTwins'" not in ckpt['meta']['cfg']
    old = tmp_path / 'old.pth'
    torch.save(ckpt, old)
    for convert in (to_mmpretrain, to_timm):
        expected, got = convert(mrcl_checkpoint), convert(old)
        assert got['meta']['variant'] == 'barlowtwins'
        assert got['state_dict'].keys() == expected['state_dict'].keys()
        for k, v in expected['state_dict'].items():
            assert torch.equal(got['state_dict'][k], v), k
        assert ({k: v for k, v in got['meta'].items() if k != 'source'} ==
                {k: v for k, v in expected['meta'].items() if k != 'source'})


def test_pre_split_mocov3_checkpoint_converts(tmp_path):
    model = build(mrcl_cfg('mocov3'))
    state = {
        k.replace('momentum_encoder.', 'target_net.'): v
        for k, v in model.state_dict().items()
    }
    assert any(k.startswith('target_net.') for k in state)
    cfg = Config(dict(model=mrcl_cfg('mocov3'))).pretty_text
    path = tmp_path / 'mocov3.pth'
    torch.save(
        dict(state_dict=state,
             meta=dict(cfg=pre_split(cfg, 'mocov3'), iter=3)), path)
    got = to_mmpretrain(str(path))
    assert (got['meta']['variant'], got['meta']['iter']) == ('mocov3', 3)
    assert got['meta']['left_over']['target_net'] > 0
    backbone = model.backbone.state_dict()
    assert got['state_dict'].keys() == backbone.keys()
    for k, v in backbone.items():
        assert torch.equal(got['state_dict'][k], v), k


def test_pre_split_config_of_an_unknown_variant_is_refused(tmp_path):
    cfg = Config(dict(model=mrcl_cfg())).pretty_text
    path = tmp_path / 'dino.pth'
    torch.save(dict(state_dict=build(mrcl_cfg()).state_dict(),
                    meta=dict(cfg=pre_split(cfg, 'dino'))), path)
    with pytest.raises(CheckpointError, match='not an MRCL checkpoint'):
        to_mmpretrain(str(path))
