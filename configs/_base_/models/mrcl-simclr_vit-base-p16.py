_base_ = 'mrcl_vit-base-p16.py'

# Projector and head of mmpretrain's SimCLR, fed the 768-d class token.
model = dict(
    type='MRSimCLR',
    neck=dict(
        type='NonLinearNeck',
        in_channels=768,
        hid_channels=2048,
        out_channels=128,
        num_layers=2,
        with_avg_pool=False),
    head=dict(
        type='ContrastiveHead',
        loss=dict(type='CrossEntropyLoss'),
        temperature=0.1))
