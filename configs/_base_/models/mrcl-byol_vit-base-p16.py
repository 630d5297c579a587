_base_ = 'mrcl_vit-base-p16.py'

# Projector, predictor and momentum of mmpretrain's BYOL, fed the 768-d class
# token. The momentum target encodes the same masked views as the online
# branch (target_masked=True; False gives it the full views).
model = dict(
    type='MRBYOL',
    base_momentum=0.004,
    target_masked=True,
    neck=dict(
        type='NonLinearNeck',
        in_channels=768,
        hid_channels=4096,
        out_channels=256,
        num_layers=2,
        with_bias=True,
        with_last_bn=False,
        with_avg_pool=False),
    head=dict(
        type='LatentPredictHead',
        loss=dict(type='CosineSimilarityLoss'),
        predictor=dict(
            type='NonLinearNeck',
            in_channels=256,
            hid_channels=4096,
            out_channels=256,
            num_layers=2,
            with_bias=True,
            with_last_bn=False,
            with_avg_pool=False)))
