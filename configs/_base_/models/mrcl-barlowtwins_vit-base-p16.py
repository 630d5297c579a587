_base_ = 'mrcl_vit-base-p16.py'

# Projector and head of mmpretrain's BarlowTwins, fed the 768-d class token.
model = dict(
    type='MRBarlowTwins',
    neck=dict(
        type='NonLinearNeck',
        in_channels=768,
        hid_channels=8192,
        out_channels=8192,
        num_layers=3,
        with_last_bn=False,
        with_last_bn_affine=False,
        with_avg_pool=False,
        init_cfg=dict(
            type='Kaiming', distribution='uniform', layer=['Linear'])),
    head=dict(
        type='LatentCrossCorrelationHead',
        in_channels=8192,
        loss=dict(type='CrossCorrelationLoss')))
