# The paper's STL-10 schedule: AdamW, base lr 3e-4 at batch 512, 300 epochs
# with a 30-epoch linear warm-up, then cosine.
_base_ = 'adamw_coslr-600e_in1k.py'

optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-4,
        by_epoch=True,
        begin=0,
        end=30,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=270,
        eta_min=0.,
        by_epoch=True,
        begin=30,
        end=300,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=300)
