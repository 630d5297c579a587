"""Stop training at the first NaN or infinite loss."""
import math

import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise ``FloatingPointError`` naming the loss term and the iteration
    when a loss the model returned is NaN or infinite.

    It runs before the :class:`CheckpointHook` of the same iteration (higher
    priority), so the diverged weights are never saved and the last
    checkpoint stays the last good one.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        bad = {
            k: v
            for k, v in (outputs or {}).items()
            if k.startswith('loss') and not math.isfinite(
                float(v.detach()) if torch.is_tensor(v) else float(v))
        }
        if not bad:
            return
        if len(bad) > 1:  # name the terms, not their sum
            bad.pop('loss', None)
        terms = ', '.join(f'{k} = {v}' for k, v in bad.items())
        last = runner.message_hub.get_info('last_ckpt') or 'none saved yet'
        raise FloatingPointError(
            f'non-finite loss at iteration {runner.iter + 1}: {terms}; '
            f'training stopped, last good checkpoint: {last}')
