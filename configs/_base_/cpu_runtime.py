# The runtime of the small, iteration-based configs: logs every 10 iterations,
# a checkpoint every 100 (the last 2 kept).
_base_ = 'default_runtime.py'

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(by_epoch=False, interval=100, max_keep_ckpts=2))
log_processor = dict(window_size=10, by_epoch=False)
