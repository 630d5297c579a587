import pytest
import torch
from mmengine.model import BaseModel

from mrcl_testing import (ARCH, LN, backbone_cfg, build, decoder_cfg,
                          mrcl_cfg, rec_head_cfg, set_max_iters, two_views)


def grad_norm(module) -> float:
    return sum(p.grad.abs().sum().item() for p in module.parameters()
               if p.grad is not None)


@pytest.mark.parametrize('learner', ['barlowtwins', 'simclr', 'byol',
                                     'mocov3'])
def test_losses_are_logged_separately_and_finite(learner):
    set_max_iters(100)
    model = build(mrcl_cfg(learner, alpha=7.0, lambd=2.0))
    losses = model.loss(two_views(8), None)
    assert set(losses) == {
        'loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked'
    }
    assert all(torch.isfinite(v) for v in losses.values())
    # BYOL's loss is a negative cosine similarity; the others are positive
    assert all(v != 0 for v in losses.values())
    assert losses['loss_rec_masked'] > 0 and losses['loss_rec_unmasked'] > 0


@pytest.mark.parametrize('term', ['loss_contrastive', 'loss_rec_masked',
                                  'loss_rec_unmasked'])
def test_every_term_reaches_the_encoder(term):
    model = build(mrcl_cfg(alpha=1.0, lambd=1.0))
    losses = model.loss(two_views(8), None)
    losses[term].backward()
    assert grad_norm(model.backbone.layers) > 0
    assert grad_norm(model.backbone.patch_embed) > 0
    if term == 'loss_contrastive':
        assert grad_norm(model.decoder) == 0
    else:
        assert grad_norm(model.decoder) > 0
        assert grad_norm(model.neck) == 0


def test_without_reconstruction_weight_the_decoder_is_not_run():
    model = build(mrcl_cfg(alpha=0.0, lambd=0.0))
    calls = []
    model.decoder.register_forward_hook(lambda *args: calls.append(1))
    losses = model.loss(two_views(8), None)
    assert set(losses) == {'loss_contrastive'}
    losses['loss_contrastive'].backward()
    assert not calls
    assert all(p.grad is None for p in model.decoder.parameters())
    assert grad_norm(model.backbone) > 0


def test_r0_reconstructs_without_masking():
    """Fig. 3's r=0: the encoder sees every patch; the masked term is 0, not
    a division by zero."""
    model = build(mrcl_cfg(mask_ratio=0.0, alpha=10.0, lambd=10.0))
    latent, mask, _ = model.backbone(torch.cat(two_views(4)))
    assert latent.shape[1] == 1 + 64 and mask.sum() == 0
    losses = model.loss(two_views(4), None)
    assert losses['loss_rec_masked'] == 0
    assert torch.isfinite(losses['loss_rec_unmasked'])
    assert losses['loss_rec_unmasked'] > 0


@pytest.mark.parametrize('target_masked', [True, False])
def test_momentum_target_sees_masked_or_full_views(target_masked):
    set_max_iters(100)
    model = build(mrcl_cfg('byol', target_masked=target_masked))
    seen = []
    model.target_net.module[0].register_forward_hook(
        lambda mod, args, out: seen.append(out[0].shape[1]))
    model.loss(two_views(4), None)
    # 64 patches at r=0.2: 51 visible; the class token comes first
    assert seen == [1 + (51 if target_masked else 64)]


def test_train_step_updates_encoder_and_decoder():
    from mmengine.optim import OptimWrapper
    model = build(mrcl_cfg())
    data = dict(inputs=two_views(8), data_samples=None)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3))
    before = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if k.startswith(('backbone.layers', 'decoder.decoder_blocks'))
    }
    log_vars = BaseModel.train_step(model, data, optim)
    assert {'loss', 'loss_contrastive', 'loss_rec_masked'} <= set(log_vars)
    after = model.state_dict()
    assert all(not torch.equal(v, after[k]) for k, v in before.items()
               if k.endswith('weight'))


def test_encoder_loads_strictly_into_plain_vision_transformer(tmp_path):
    """The encoder keeps mmpretrain's names: dropping `backbone.` is all it
    takes to load it into VisionTransformer, hence into mmseg and mmdet."""
    from mmengine.runner import load_checkpoint, save_checkpoint
    from mmpretrain.models import VisionTransformer
    model = build(mrcl_cfg('byol'))
    ckpt = tmp_path / 'mrcl.pth'
    save_checkpoint({'state_dict': model.state_dict()}, str(ckpt))

    vit = VisionTransformer(
        arch=ARCH, img_size=32, patch_size=4, out_type='cls_token',
        norm_cfg=LN)
    state = {
        k[len('backbone.'):]: v
        for k, v in torch.load(ckpt, weights_only=True)['state_dict'].items()
        if k.startswith('backbone.')
    }
    vit.load_state_dict(state, strict=True)  # complete and nothing extra
    x = two_views(4)[0]
    model.eval()
    vit.eval()
    torch.testing.assert_close(vit(x)[0], model.extract_feat(x)[0])

    # the same through mmengine's loader, as mmseg/mmdet configs do it
    vit2 = VisionTransformer(
        arch=ARCH, img_size=32, patch_size=4, out_type='cls_token',
        norm_cfg=LN)
    load_checkpoint(
        vit2, str(ckpt), revise_keys=[(r'^backbone\.', '')], strict=False)
    for k, v in vit.state_dict().items():
        torch.testing.assert_close(vit2.state_dict()[k], v)


def test_avg_visible_feature():
    model = build(mrcl_cfg(feature='avg_visible'))
    tokens = torch.randn(2, 5, 3)
    torch.testing.assert_close(model.pool(tokens), tokens[:, 1:].mean(1))
    assert torch.isfinite(model.loss(two_views(4), None)['loss_contrastive'])


# Each message names the class and its argument, not a config path: the
# module may sit anywhere in a config.
BAD = [
    (dict(backbone=backbone_cfg(1.0)), 'MRCLViT: mask_ratio'),
    (dict(backbone=backbone_cfg(-0.1)), 'MRCLViT: mask_ratio'),
    (dict(backbone=backbone_cfg(0.2, img_size=30)), 'MRCLViT: img_size'),
    (dict(backbone=backbone_cfg(
        0.2, mask_generator=dict(type='SpiralMaskGenerator'))),
     'MRCLViT: mask_generator.type'),
    (dict(feature='gem'), 'MRBarlowTwins: feature'),
    (dict(contrastive_weight=-1.0), 'MRBarlowTwins: contrastive_weight'),
    (dict(rec_head=rec_head_cfg(alpha=-1.0)),
     'MRCLReconstructionHead: alpha'),
    (dict(rec_head=rec_head_cfg(lambd=-0.5)),
     'MRCLReconstructionHead: lambd'),
    (dict(decoder=decoder_cfg(embed_dim=128)),
     'MRBarlowTwins: decoder.embed_dim'),
    (dict(decoder=decoder_cfg(num_patches=49)),
     'MRBarlowTwins: decoder.num_patches'),
    (dict(decoder=decoder_cfg(patch_size=8)), 'MRBarlowTwins: decoder output'),
    (dict(rec_head=rec_head_cfg(patch_size=8)),
     'MRBarlowTwins: rec_head.patch_size'),
    (dict(rec_head=rec_head_cfg(in_channels=1)),
     'MRBarlowTwins: rec_head.in_channels'),
    (dict(rec_head=None), 'MRBarlowTwins: decoder and rec_head'),
]


@pytest.mark.parametrize('override,key', BAD, ids=[k for _, k in BAD])
def test_bad_config_names_the_key(override, key):
    cfg = mrcl_cfg()
    cfg.update(override)
    with pytest.raises(ValueError, match=key.replace('.', r'\.')):
        build(cfg)


def test_cpu_bf16_optim_wrapper_autocasts_the_forward_only():
    """mmengine's AmpOptimWrapper refuses a CPU-only machine; ours runs the
    forward in bf16 and keeps parameters, gradients and losses fp32."""
    from mmengine.optim import AmpOptimWrapper
    from mmpretrain.registry import OPTIM_WRAPPERS
    model = build(mrcl_cfg())
    if not torch.cuda.is_available():
        with pytest.raises(AssertionError, match='only available'):
            AmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters()))
    wrapper = OPTIM_WRAPPERS.build(
        dict(type='CPUBF16OptimWrapper',
             optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3)))
    x = two_views(2)[0]
    with wrapper.optim_context(model):
        assert model.backbone.patch_embed(x)[0].dtype == torch.bfloat16
    assert model.backbone.patch_embed(x)[0].dtype == torch.float32

    weight = model.backbone.layers[0].attn.qkv.weight
    before = weight.detach().clone()
    log_vars = BaseModel.train_step(
        model, dict(inputs=two_views(8), data_samples=None), wrapper)
    assert all(v.dtype == torch.float32 and torch.isfinite(v)
               for v in log_vars.values())
    assert weight.dtype == torch.float32
    assert not torch.equal(before, weight)


def test_cpu_bf16_optim_wrapper_chooses_the_attention_kernel():
    """The math kernel by default (torch's CPU flash kernel is slower in
    bf16), flash on request; both give the same losses to bf16 precision,
    and a kernel the CPU lacks is refused by its config key. Barlow Twins'
    term normalises over 4 images: across inits it moves up to 5% between
    kernels (1e-4 to 5e-2 on seeds 0-7), the reconstruction terms under
    1e-4, so the init is seeded, not left to the test order."""
    from mmpretrain.registry import OPTIM_WRAPPERS
    torch.manual_seed(0)
    model = build(mrcl_cfg())
    views = two_views(4)

    def loss_and_kernel(**kwargs):
        wrapper = OPTIM_WRAPPERS.build(dict(
            type='CPUBF16OptimWrapper', **kwargs,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.)))
        torch.manual_seed(0)  # the same masks
        with wrapper.optim_context(model):
            flash = torch.backends.cuda.flash_sdp_enabled()
            losses = {k: v.item() for k, v in model.loss(views,
                                                          None).items()}
        return losses, flash

    math, math_flash = loss_and_kernel()
    flash, flash_flash = loss_and_kernel(sdpa_backend='flash_attention')
    default, _ = loss_and_kernel(sdpa_backend=None)
    assert (math_flash, flash_flash) == (False, True)
    assert torch.backends.cuda.flash_sdp_enabled()  # restored on exit
    for key in ('loss_rec_masked', 'loss_rec_unmasked'):
        assert math[key] == pytest.approx(flash[key], rel=1e-3), key
    assert math['loss_contrastive'] == pytest.approx(
        flash['loss_contrastive'], rel=2e-2)
    assert default == flash
    with pytest.raises(ValueError, match='optim_wrapper.sdpa_backend'):
        loss_and_kernel(sdpa_backend='cudnn_attention')



def test_checkpointed_decoder_keeps_less_for_the_same_gradients():
    """with_cp recomputes the decoder blocks in the backward: the same
    loss and gradients as mmpretrain's MAEPretrainDecoder on the same
    weights and masks, with fewer bytes saved for the backward."""
    def build_with(decoder):
        cfg = mrcl_cfg()
        cfg['decoder'] = decoder_cfg(**decoder, decoder_depth=2)
        return build(cfg)

    plain = build_with(dict())
    ckpt = build_with(dict(type='CheckpointedMAEDecoder', with_cp=True))
    ckpt.load_state_dict(plain.state_dict())  # the same keys
    views = two_views(4)

    def step(model):
        saved = []

        def pack(t):
            saved.append(t.untyped_storage().nbytes())
            return t
        torch.manual_seed(0)  # the same masks
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            losses = model.loss(views, None)
        sum(losses.values()).backward()
        grads = {k: p.grad for k, p in model.named_parameters()
                 if p.grad is not None}
        return losses, grads, sum(saved)

    (loss_a, grad_a, saved_a), (loss_b, grad_b, saved_b) = map(
        step, (plain, ckpt))
    assert {k: v.item() for k, v in loss_a.items()} == pytest.approx(
        {k: v.item() for k, v in loss_b.items()}, rel=1e-6)
    assert grad_a.keys() == grad_b.keys()
    assert any(k.startswith('decoder.decoder_blocks') for k in grad_a)
    for k in grad_a:
        torch.testing.assert_close(grad_a[k], grad_b[k], rtol=1e-5,
                                   atol=1e-7)
    assert saved_b < saved_a
    # under CPU bf16 the backward's recompute meets the forward's kernel
    from mmpretrain.registry import OPTIM_WRAPPERS
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='CPUBF16OptimWrapper',
        optimizer=torch.optim.SGD(ckpt.parameters(), lr=0.)))
    log_vars = BaseModel.train_step(
        ckpt, dict(inputs=views, data_samples=None), wrapper)
    assert torch.isfinite(log_vars['loss'])
