"""Save what an MRCL model is in each checkpoint it writes."""
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from .utils import bare_model


@HOOKS.register_module()
class MRCLMetaHook(Hook):
    """Writes the model's :meth:`MRCL.describe` (learner, mask ratio,
    reconstruction weights, encoder geometry, pixel mean/std) into each
    checkpoint's ``meta['mrcl']``, with the train loop's ``max_epochs`` or
    ``max_iters``, so that the converters and the results tool read what a
    checkpoint is from the checkpoint, not from its saved config text. The
    base runtime (``configs/_base_/default_runtime.py``) adds it; a model
    without ``describe`` is left alone."""

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        model = bare_model(runner)
        if not hasattr(model, 'describe'):
            return
        meta = model.describe()
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            meta['max_epochs'] = loop.max_epochs
        else:
            meta['max_iters'] = loop.max_iters
        checkpoint.setdefault('meta', {})['mrcl'] = meta
