# A CPU-sized schedule: 300 iterations, AdamW at lr 1e-3 (batch 64), a
# 30-iteration warm-up, then cosine.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-6),
    paramwise_cfg=dict(
        custom_keys={
            'ln': dict(decay_mult=0.0),
            'bias': dict(decay_mult=0.0),
            'pos_embed': dict(decay_mult=0.),
            'mask_token': dict(decay_mult=0.),
            'cls_token': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0,
         end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=300,
         eta_min=1e-5)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=300)
auto_scale_lr = dict(base_batch_size=64)
