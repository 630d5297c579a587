_base_ = 'mmpretrain::_base_/default_runtime.py'

# Registers MRCL's models in mmpretrain's registries and applies the fixes
# of mrcl_plugin/compat.py.
custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=10, max_keep_ckpts=3))
log_processor = dict(window_size=50)
