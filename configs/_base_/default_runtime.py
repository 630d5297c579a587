_base_ = 'mmpretrain::_base_/default_runtime.py'

# Registers MRCL's models in mmpretrain's registries and applies the fixes
# of mrcl_plugin/compat.py.
custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

# Checkpoints are written to a temporary file and renamed when complete
# (mrcl_plugin/checkpoints/atomic.py); the random generators are saved with them so
# --resume continues exactly; what the model is (learner, mask ratio,
# reconstruction weights, encoder) is saved in their meta; a NaN or infinite
# loss stops the run before it is saved (mrcl_plugin/engine/hooks).
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='CheckpointHook',
        interval=10,
        max_keep_ckpts=3,
        backend_args=dict(backend='atomic_local')))
custom_hooks = [
    dict(type='RNGStateHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='MRCLMetaHook')
]
log_processor = dict(window_size=50)
