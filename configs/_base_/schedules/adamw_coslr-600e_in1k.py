# The paper's pretraining schedule (MoCo v3's): AdamW, betas (0.9, 0.95),
# weight decay 1e-6, lr = 1.5e-4 x batch / 256 at batch 512 (8 x 64), linear
# warm-up for 30 epochs, then cosine; AMP.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(
        type='AdamW', lr=1.5e-4 * 512 / 256, betas=(0.9, 0.95),
        weight_decay=1e-6),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))

max_epochs = 600
warmup_epochs = 30
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)

# `--auto-scale-lr` rescales lr linearly from this batch size.
auto_scale_lr = dict(base_batch_size=512)
