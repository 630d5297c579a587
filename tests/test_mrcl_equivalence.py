"""With r=0 and no reconstruction, each MRCL learner is mmpretrain's own
algorithm; with no contrastive term and lambda=0, its reconstruction loss is
MAE's. Same weights, same real images."""
import copy

import pytest
import torch
from mmengine.registry import init_default_scope

from mrcl_testing import (ARCH, HEADS, LN, NECK, build, decoder_cfg,
                          mrcl_cfg, set_max_iters, two_views)

MMPRETRAIN = dict(
    barlowtwins='BarlowTwins', simclr='SimCLR', byol='BYOL', mocov3='MoCoV3')


def plain_vit() -> dict:
    return dict(
        type='VisionTransformer',
        arch=ARCH,
        img_size=32,
        patch_size=4,
        out_type='cls_token',
        norm_cfg=LN)


@pytest.mark.parametrize('learner', list(MMPRETRAIN))
def test_unmasked_mrcl_without_reconstruction_is_mmpretrain(learner):
    torch.manual_seed(0)
    set_max_iters(100)
    ours = build(mrcl_cfg(learner, mask_ratio=0.0, reconstruction=False))
    theirs = build(
        dict(
            type=MMPRETRAIN[learner],
            backbone=plain_vit(),
            neck=copy.deepcopy(NECK),
            head=copy.deepcopy(HEADS[learner])))
    # every tensor has mmpretrain's name, the momentum encoder's included
    theirs.load_state_dict(ours.state_dict(), strict=True)

    views = two_views(8)
    expected = theirs.loss([v.clone() for v in views], None)['loss']
    got = ours.loss([v.clone() for v in views], None)
    assert set(got) == {'loss_contrastive'}
    torch.testing.assert_close(
        got['loss_contrastive'], expected, rtol=1e-4, atol=1e-5)
    if learner in ('byol', 'mocov3'):
        # the momentum update happened identically on both sides
        name = 'target_net' if learner == 'byol' else 'momentum_encoder'
        ours_t = getattr(ours, name).module
        torch.testing.assert_close(ours_t[0].pos_embed,
                                   ours.backbone.pos_embed)
        ours_t = dict(ours_t.named_parameters())
        theirs_t = dict(getattr(theirs, name).module.named_parameters())
        for k, v in ours_t.items():
            torch.testing.assert_close(v, theirs_t[k])


def test_contrastive_weight_scales_the_loss():
    torch.manual_seed(0)
    views = two_views(8)
    base = build(mrcl_cfg(mask_ratio=0.0, reconstruction=False))
    heavy = build(
        mrcl_cfg(mask_ratio=0.0, reconstruction=False,
                 contrastive_weight=2.5))
    heavy.load_state_dict(base.state_dict())
    torch.testing.assert_close(
        heavy.loss(views, None)['loss_contrastive'],
        2.5 * base.loss(views, None)['loss_contrastive'])


@pytest.mark.parametrize('norm_pix', [False, True])
def test_masked_term_is_mae_loss_on_the_same_mask(norm_pix):
    """contrastive_weight=0, lambda=0: MRCL's loss is MAE's masked-patch loss.
    MRCL sums over the two views; each view masks the same number of
    patches, so the sum is twice MAE's mean over the stacked views."""
    ours = build(
        mrcl_cfg(
            mask_ratio=0.5,
            alpha=1.0,
            lambd=0.0,
            contrastive_weight=0.0,
            rec_head=dict(
                type='MRCLReconstructionHead',
                alpha=1.0,
                lambd=0.0,
                patch_size=4,
                norm_pix=norm_pix)))
    mae = build(
        dict(
            type='MAE',
            backbone=dict(
                type='MAEViT',
                arch=ARCH,
                img_size=32,
                patch_size=4,
                mask_ratio=0.5,
                norm_cfg=LN),
            neck=decoder_cfg(),
            head=dict(
                type='MAEPretrainHead',
                norm_pix=norm_pix,
                patch_size=4,
                loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    state = {
        k.replace('neck.', 'decoder.', 1) if k.startswith('neck.') else k: v
        for k, v in mae.state_dict().items()
    }
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.startswith(('neck.', 'head.')) for k in missing)

    views = two_views(8)
    torch.manual_seed(123)
    expected = mae.loss(torch.cat(views), None)['loss']
    torch.manual_seed(123)  # the same noise, hence the same mask
    got = ours.loss(views, None)
    assert set(got) == {'loss_rec_masked', 'loss_rec_unmasked'}
    assert got['loss_rec_unmasked'] == 0
    torch.testing.assert_close(
        got['loss_rec_masked'], 2 * expected, rtol=1e-5, atol=1e-6)


def test_unmasked_term_is_mse_over_visible_patches():
    torch.manual_seed(0)
    model = build(mrcl_cfg(mask_ratio=0.25, alpha=0.0, lambd=3.0))
    views = two_views(4)
    x = torch.cat(views)
    latent, mask, ids_restore = model.backbone(x)
    pred = model.decoder(latent, ids_restore)
    got = model.rec_head.loss(pred, x, mask)

    # by hand: 4x4 patches in raster order, pixels in (row, col, channel)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # B, C, 8, 8, 4, 4
    patches = patches.permute(0, 2, 3, 4, 5, 1).reshape(8, 64, 48)
    expected = 0.
    for view in range(2):
        rows = slice(4 * view, 4 * view + 4)
        visible = mask[rows] == 0
        err = (pred[rows] - patches[rows])**2
        expected = expected + err[visible].mean()
    torch.testing.assert_close(
        got['loss_rec_unmasked'], 3.0 * expected, rtol=1e-5, atol=1e-6)
    assert got['loss_rec_masked'] == 0


def test_l1_criterion():
    torch.manual_seed(0)
    model = build(
        mrcl_cfg(
            rec_head=dict(
                type='MRCLReconstructionHead',
                alpha=1.0,
                lambd=1.0,
                patch_size=4,
                loss=dict(type='PixelReconstructionLoss', criterion='L1'))))
    x = torch.cat(two_views(4))
    pred = torch.zeros(8, 64, 48)
    mask = torch.zeros(8, 64)
    mask[:, :16] = 1
    losses = model.rec_head.loss(pred, x, mask)
    target = model.rec_head.construct_target(x)
    torch.testing.assert_close(
        losses['loss_rec_masked'], 2 * target[:, :16].abs().mean())
    torch.testing.assert_close(
        losses['loss_rec_unmasked'], 2 * target[:, 16:].abs().mean())


def test_cross_correlation_of_a_bf16_model():
    """DeepSpeed's bf16 casts the whole model, the head's BatchNorm
    included: it normalises in bf16 ("mixed dtype (CPU): expect parameter
    to have scalar type of Float" before), the matrix and its sums stay
    fp32, and the loss is the fp32 model's within bf16's precision."""
    from mmpretrain.registry import MODELS

    from mrcl_plugin.models.algorithms.mr_barlowtwins import \
        cross_correlation_loss
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 128), torch.randn(16, 128)
    head = MODELS.build(copy.deepcopy(HEADS['barlowtwins'])).train()
    expected = cross_correlation_loss(z1, z2, head)
    half = MODELS.build(copy.deepcopy(HEADS['barlowtwins'])).train()
    half.to(torch.bfloat16)
    got = cross_correlation_loss(z1, z2, half)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=0.02)


@pytest.mark.parametrize('n, dim', [(16, 128), (96, 32)], ids=['N<D', 'N>D'])
def test_cross_correlation_loss_without_the_matrix(n, dim):
    """The loss from Gram matrices, never forming the D x D
    cross-correlation, has the value and the gradients of mmpretrain's
    ``CrossCorrelationLoss`` on that matrix, with fewer samples than
    channels (the configs) and more."""
    from mmpretrain.registry import MODELS

    from mrcl_plugin.models.algorithms.mr_barlowtwins import \
        cross_correlation_loss
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    z1 = torch.randn(n, dim, requires_grad=True)
    z2 = (0.7 * z1.detach() + 0.3 * torch.randn(n, dim)).requires_grad_()
    head = MODELS.build(copy.deepcopy(HEADS['barlowtwins'])).train()
    head.bn = torch.nn.BatchNorm1d(dim, affine=False)
    got = cross_correlation_loss(z1, z2, head)
    grads = torch.autograd.grad(got, (z1, z2))
    c = head.bn(z1).T @ head.bn(z2) / n
    expected = head.loss_module(c)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)
    for g, e in zip(grads, torch.autograd.grad(expected, (z1, z2))):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-6)
