# MR-SimCLR on the real CIFAR-10 sample: the small MR-BarlowTwins config with
# mmpretrain's SimCLR projector and InfoNCE head (temperature 0.1), at
# ViT-Tiny width (192-d class token; 1024-wide hidden layer, 128-d output).
_base_ = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'

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
    # alpha = lambda = 0.01: MR-SimCLR's in the paper's Fig. 5 (STL-10).
    # Its loss is ~5, not Barlow Twins' ~250: 10 would drown it.
    rec_head=dict(alpha=0.01, lambd=0.01))
