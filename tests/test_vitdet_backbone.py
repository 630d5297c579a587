"""ViTDetViT, ViTDet's windowed ViT on mmpretrain's VisionTransformer: with
one window over the whole map and no relative positions it is mmpretrain's
ViT; a windowed block with nonzero relative tables is SAM's attention
(mmpretrain's ViTSAM code, explicit attention matrix) run window by window
on a hand-padded map; a converted real MRCL encoder loads with exactly the
relative-position tables missing, and one key more stops the run."""
from types import SimpleNamespace

import pytest
import torch
from mmpretrain.models import VisionTransformer
from mmpretrain.models.backbones.vit_sam import Attention as SAMAttention
from torch import nn

from mrcl_plugin.engine.hooks import PretrainedCheckHook
from mrcl_plugin.engine.hooks import pretrained_check_hook
from mrcl_plugin.models.backbones import ViTDetViT, WindowRelPosAttention
from transfer_testing import FINAL_NORM, convert, vit_arch

ARCH = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)


def randomise(module: nn.Module) -> None:
    """Every parameter random, so each one counts in a comparison."""
    torch.manual_seed(0)
    for p in module.parameters():
        nn.init.normal_(p, std=0.2)


def test_global_without_rel_pos_is_mmpretrains_vit():
    kwargs = dict(arch=ARCH, patch_size=16, out_type='featmap',
                  out_indices=[1, 3], final_norm=False)
    vit = VisionTransformer(img_size=64, with_cls_token=False, **kwargs)
    randomise(vit)
    # pos_embed kept at the 64 px grid, resized to the 128 x 96 px input's
    ours = ViTDetViT(img_size=128, pretrain_img_size=64, window_size=0,
                     use_rel_pos=False, **kwargs)
    ours.load_state_dict(vit.state_dict(), strict=True)
    vit.eval()
    ours.eval()
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        for theirs, mine in zip(vit(x), ours(x)):
            assert mine.shape == (2, 64, 8, 6)
            diff = (theirs - mine).abs().max().item()
            print(f'max abs diff vs VisionTransformer: {diff:.3g}')
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


def sam_attention(ours: WindowRelPosAttention, size) -> SAMAttention:
    """SAM's attention (mmpretrain's ViTSAM) with the weights of ours."""
    sam = SAMAttention(ours.embed_dims, ours.num_heads, use_rel_pos=True,
                       input_size=size)
    sam.load_state_dict(
        {k: v for k, v in ours.state_dict().items()}, strict=True)
    return sam


def per_window(sam: SAMAttention, x: torch.Tensor, window: int):
    """Zero-pad the (B, H, W, C) map to window multiples, run ``sam`` on
    each window in turn, cut the padding off."""
    B, H, W, C = x.shape
    Hp, Wp = -(-H // window) * window, -(-W // window) * window
    padded = torch.zeros(B, Hp, Wp, C)
    padded[:, :H, :W] = x
    out = torch.zeros(B, Hp, Wp, C)
    for i in range(0, Hp, window):
        for j in range(0, Wp, window):
            out[:, i:i + window, j:j + window] = sam(
                padded[:, i:i + window, j:j + window])
    return out[:, :H, :W]


@pytest.mark.parametrize('window, rel_pos_size, hw', [
    (4, (4, 4), (10, 7)),  # 3 x 2 windows, padded by 2 and 1
    (0, (6, 6), (6, 6)),  # global
    (0, (8, 8), (6, 5)),  # global, tables interpolated to the map
])
def test_windowed_attention_is_sams_per_window(window, rel_pos_size, hw):
    ours = WindowRelPosAttention(64, 4, window_size=window,
                                 rel_pos_size=rel_pos_size)
    randomise(ours)
    assert ours.rel_pos_h.abs().min() > 0
    sam = sam_attention(ours, rel_pos_size)
    x = torch.randn(2, *hw, 64)
    with torch.no_grad():
        expected = per_window(sam, x, window) if window else sam(x)
        got = ours(x)
    diff = (got - expected).abs().max().item()
    print(f'max abs diff vs SAM attention: {diff:.3g}')
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # and the relative positions matter
    ours.rel_pos_h.data.zero_()
    with torch.no_grad():
        assert not torch.allclose(ours(x), expected, atol=1e-3)


def test_default_window_blocks_are_vitdets():
    vit_b = ViTDetViT(arch='base', img_size=224, patch_size=16)
    windows = [layer.attn.window_size for layer in vit_b.layers]
    assert windows == [14, 14, 0] * 4
    with pytest.raises(ValueError, match='window_block_indexes \\[12\\]'):
        ViTDetViT(arch=ARCH, window_block_indexes=[0, 12])
    with pytest.raises(ValueError, match='with_cls_token must be False'):
        ViTDetViT(arch=ARCH, with_cls_token=True)


def check_hook(backbone):
    """PretrainedCheckHook.before_train on a model whose backbone was
    initialised from its init_cfg, as a runner calls it."""
    model = nn.Module()
    model.backbone = backbone
    backbone.init_weights()
    runner = SimpleNamespace(model=model, cfg={})  # a run from its init
    hook = PretrainedCheckHook(ignore_keys=FINAL_NORM + ('cls_token', ))
    hook.before_run(runner)
    hook.before_train(runner)


def test_loader_accepts_exactly_the_tables_missing(mrcl_checkpoint_p16,
                                                   tmp_path, monkeypatch):
    encoder = convert(mrcl_checkpoint_p16, tmp_path / 'encoder.pth')
    meta = encoder['meta']
    L = meta['num_layers']

    def backbone(checkpoint):
        return ViTDetViT(
            arch=vit_arch(meta), img_size=128,
            pretrain_img_size=meta['img_size'], window_size=3,
            window_block_indexes=[0, 2],
            init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))

    logged = []
    monkeypatch.setattr(pretrained_check_hook, 'print_log',
                        lambda msg, **kwargs: logged.append(msg))
    check_hook(backbone(tmp_path / 'encoder.pth'))
    tables = [f'layers.{i}.attn.rel_pos_{a}' for i in range(L) for a in 'hw']
    line, = logged
    assert line.startswith(f'model.backbone: {len(encoder["state_dict"]) - 3}'
                           ' tensors loaded from')
    assert f'{len(tables)} relative-position tables not in it' in line
    assert line.endswith(', '.join(tables)), line

    del encoder['state_dict']['layers.1.ln2.bias']
    torch.save(encoder, tmp_path / 'one_more.pth')
    with pytest.raises(ValueError) as error:
        check_hook(backbone(tmp_path / 'one_more.pth'))
    assert '1 missing keys [layers.1.ln2.bias]' in str(error.value)
