# MR-BYOL on the real CIFAR-10 sample: the small MR-BarlowTwins config with
# mmpretrain's BYOL projector, predictor and momentum target, at ViT-Tiny
# width (192-d class token; 1024-wide hidden layers, 256-d output).
_base_ = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'

model = dict(
    type='MRBYOL',
    base_momentum=0.004,
    target_masked=True,
    neck=dict(
        _delete_=True,
        type='NonLinearNeck',
        in_channels=192,
        hid_channels=1024,
        out_channels=256,
        num_layers=2,
        with_bias=True,
        with_last_bn=False,
        with_avg_pool=False),
    head=dict(
        _delete_=True,
        type='LatentPredictHead',
        loss=dict(type='CosineSimilarityLoss'),
        predictor=dict(
            type='NonLinearNeck',
            in_channels=256,
            hid_channels=1024,
            out_channels=256,
            num_layers=2,
            with_bias=True,
            with_last_bn=False,
            with_avg_pool=False)),
    # alpha = lambda = 0.01: MR-BYOL's best in the paper's Figs. 3-4
    # (STL-10). Its loss is ~2, not Barlow Twins' ~250: 10 would drown it.
    rec_head=dict(alpha=0.01, lambd=0.01))
