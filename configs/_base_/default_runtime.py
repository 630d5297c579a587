_base_ = 'mmpretrain::_base_/default_runtime.py'

# Registers MRCL's models in mmpretrain's registries and applies the fixes
# of mrcl_plugin/compat.py.
custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

# Checkpoints are written to a temporary file and renamed when complete; the
# random generators are saved with them so --resume continues exactly; a NaN
# or infinite loss stops the run before it is saved (mrcl_plugin/engine).
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3))
custom_hooks = [dict(type='RNGStateHook'), dict(type='NonFiniteLossHook')]
log_processor = dict(window_size=50)
