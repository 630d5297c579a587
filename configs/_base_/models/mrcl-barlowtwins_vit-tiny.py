# A ViT-Tiny-size MR-BarlowTwins for small images on a CPU: ViT-Tiny's width
# (192, 3 heads) at half its depth (6 layers: on 2 CPU cores, 300 iterations
# take 4.5 min instead of 8 and learn more), a 2-layer, 128-wide decoder and
# a 1024-d projector. Set img_size/patch_size/num_patches where it is used.
model = dict(
    type='MRBarlowTwins',
    backbone=dict(
        type='MRCLViT',
        arch=dict(
            embed_dims=192,
            num_layers=6,
            num_heads=3,
            feedforward_channels=768),
        img_size=32,
        patch_size=4,
        mask_ratio=0.2,
        mask_generator=dict(type='RandomMaskGenerator')),
    neck=dict(
        type='NonLinearNeck',
        in_channels=192,
        hid_channels=1024,
        out_channels=1024,
        num_layers=3,
        with_last_bn=False,
        with_last_bn_affine=False,
        with_avg_pool=False,
        init_cfg=dict(
            type='Kaiming', distribution='uniform', layer=['Linear'])),
    head=dict(
        type='LatentCrossCorrelationHead',
        in_channels=1024,
        loss=dict(type='CrossCorrelationLoss', lambd=1. / 1024)),
    decoder=dict(
        type='MAEPretrainDecoder',
        num_patches=64,
        patch_size=4,
        in_chans=3,
        embed_dim=192,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.),
    rec_head=dict(
        type='MRCLReconstructionHead',
        alpha=10.0,
        lambd=10.0,
        norm_pix=False,
        patch_size=4,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
