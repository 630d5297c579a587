# MR-SimCLR on the real Tiny-ImageNet sample (10 classes): the small
# MR-BarlowTwins Tiny-ImageNet config (64 px in 8 px patches) with the small
# MR-SimCLR config's projector, InfoNCE head and weights alpha = lambda = 0.01.
_base_ = 'mrcl-barlowtwins_vit-tiny-p8_1xb64-coslr-300it_tiny-imagenet.py'

model = dict(
    type='MRSimCLR',
    neck=dict(
        _delete_=True,
        type='NonLinearNeck',
        in_channels=192,
        hid_channels=1024,
        out_channels=128,
        num_layers=2,
        with_avg_pool=False),
    head=dict(
        _delete_=True,
        type='ContrastiveHead',
        loss=dict(type='CrossEntropyLoss'),
        temperature=0.1),
    rec_head=dict(alpha=0.01, lambd=0.01))
