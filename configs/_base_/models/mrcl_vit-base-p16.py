# MRCL with a ViT-B/16 encoder and MAE's 8-layer, 512-wide decoder (113M
# parameters in all, the paper's). The learner's class (MR-BarlowTwins here),
# projector and head are set by the configs that inherit this one.
model = dict(
    type='MRBarlowTwins',
    contrastive_weight=1.0,
    feature='cls_token',
    backbone=dict(
        type='MRCLViT',
        arch='b',
        img_size=224,
        patch_size=16,
        mask_ratio=0.2,
        mask_generator=dict(type='RandomMaskGenerator')),
    decoder=dict(
        type='MAEPretrainDecoder',
        num_patches=196,
        patch_size=16,
        in_chans=3,
        embed_dim=768,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.),
    rec_head=dict(
        type='MRCLReconstructionHead',
        alpha=1.0,
        lambd=1.0,
        norm_pix=False,
        patch_size=16,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')),
    init_cfg=[
        dict(type='Xavier', layer='Linear', distribution='uniform'),
        dict(type='Constant', layer='LayerNorm', val=1.0, bias=0.0)
    ])
