# The paper's STL-10 schedule: AdamW, base lr 3e-4 at batch 512, 300 epochs
# with a 30-epoch linear warm-up, then cosine.
_base_ = 'adamw_coslr-600e_in1k.py'

# Sec. 4.3 says "the base learning rate is 3e-4 with a batch size of 512" in
# the words Sec. 4.1 uses for ImageNet ("base_lr 1.5e-4 with the batch size
# of 512", under lr = base_lr x batch / 256). Both are read the same way:
# lr = 3e-4 x 512 / 256 = 6e-4 at batch 512 (ImageNet: 3e-4). If the authors
# meant 3e-4 as the lr itself (it equals the ImageNet lr), pass
# --cfg-options optim_wrapper.optimizer.lr=3e-4.
optim_wrapper = dict(optimizer=dict(lr=3e-4 * 512 / 256))
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
