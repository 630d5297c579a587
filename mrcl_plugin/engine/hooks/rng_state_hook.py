"""Save the random number generators with each checkpoint and restore them
on resume, so a resumed run draws the same masks and augmentations as an
uninterrupted one."""
import random
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


def rng_states() -> Dict[str, Any]:
    """The state of Python's, numpy's and torch's global generators."""
    states = dict(
        python=random.getstate(),
        numpy=np.random.get_state(),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Dict[str, Any]) -> None:
    random.setstate(states['python'])
    np.random.set_state(states['numpy'])
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


class _RestoreAfterSkip:
    """Wraps the train loop's data iterator: after the ``skip`` batches that
    mmengine's ``IterBasedTrainLoop`` re-reads on resume, set the saved
    generator states, then serve batches as before."""

    def __init__(self, iterator: Iterator, skip: int, states: Dict) -> None:
        self.iterator, self.skip, self.states = iterator, skip, states

    def __iter__(self):
        return self

    def __next__(self):
        if self.states is not None and self.skip == 0:
            set_rng_states(self.states)
            self.states = None
        self.skip -= 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Keeps the generators in the checkpoint (``rng_states``).

    mmengine 0.10 saves the seed but not the generators' states. On resume
    it re-seeds, builds the model, then re-reads the trained iterations'
    batches (``IterBasedTrainLoop.run``), so masks, dropout and, with
    ``num_workers=0``, the augmentations draw different numbers than the
    uninterrupted run. This hook restores the saved states right before the
    first new batch is read. Data workers need nothing: mmengine seeds each
    with ``seed + worker_id`` and the re-read batches advance them exactly
    as the first run did.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._resumed: Optional[Dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_states'] = rng_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._resumed = checkpoint.get('rng_states')

    def before_train_epoch(self, runner) -> None:
        # Called right before IterBasedTrainLoop skips the trained batches.
        states, self._resumed = self._resumed, None
        if states is None or runner.iter == 0:  # load_from, not resume
            return
        loop = runner.train_loop
        if hasattr(loop, 'dataloader_iterator'):
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop.dataloader_iterator, loop.iter, states)
        else:  # EpochBasedTrainLoop resumes at an epoch's start
            set_rng_states(states)
