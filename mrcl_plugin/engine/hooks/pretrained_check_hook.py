"""Stop a run whose ``Pretrained`` checkpoint was not really loaded."""
from typing import Dict, List, Sequence, Tuple

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

from ...checkpoint import CheckpointError, load_checkpoint_file


@HOOKS.register_module()
class PretrainedCheckHook(Hook):
    """Fail at start when a module's ``init_cfg=dict(type='Pretrained')``
    checkpoint is unset, unreadable, or did not fully load.

    mmengine's ``Pretrained`` init loads with ``strict=False`` and only logs
    what did not fit, so a wrong file (an unconverted pretraining checkpoint,
    a ViT of another size) trains from a random encoder without a word. The
    type name must stay ``'Pretrained'``: mmengine and mmpretrain's
    backbones test for it to keep the loaded weights, so the check is a hook.

    ``before_run`` (before the weights are initialised) reads each file
    weights-only (:func:`~mrcl_plugin.checkpoint.load_checkpoint_file`: a
    file that pickles code is refused before mmengine's loader sees it);
    ``before_train`` (after the init) requires every module key to come
    from the file and every tensor to equal the file's (a resized
    ``pos_embed`` excepted). Runs that resume or ``load_from`` (tests)
    take their weights elsewhere and are not checked. Errors are one
    :class:`~mrcl_plugin.checkpoint.CheckpointError` line naming the file.

    Args:
        ignore_prefixes (Sequence[str]): module keys (relative to the
            initialised module) that may be missing from the file or unused
            in it, e.g. a final norm the recipe replaces with a fresh one.
    """

    priority = 'VERY_HIGH'

    def __init__(self, ignore_prefixes: Sequence[str] = ()) -> None:
        self.ignore_prefixes = tuple(ignore_prefixes)
        self._files: Dict[str, Tuple[str, Dict[str, torch.Tensor]]] = {}

    def before_run(self, runner) -> None:
        if _weights_from_elsewhere(runner):
            return
        for name, cfg in _pretrained_inits(runner.model):
            path = cfg.get('checkpoint')
            if not path:
                raise CheckpointError(
                    '<unset>', f'model.{name}.init_cfg.checkpoint is empty: '
                    f'pass --cfg-options model.{name}.init_cfg.checkpoint='
                    'FILE')
            state = load_checkpoint_file(path)
            state = state.get('state_dict', state)
            prefix = cfg.get('prefix')
            if prefix:
                state = {
                    k[len(prefix):]: v
                    for k, v in state.items() if k.startswith(prefix)
                }
                if not state:
                    raise CheckpointError(path, f'no key starts with {prefix}')
            self._files[name] = (path, state)

    def before_train(self, runner) -> None:
        files, self._files = self._files, {}
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        for name, (path, state) in files.items():
            module = model.get_submodule(name)
            self._compare(path, type(module).__name__, module.state_dict(),
                          state)

    def _compare(self, path: str, module_type: str,
                 loaded: Dict[str, torch.Tensor],
                 state: Dict[str, torch.Tensor]) -> None:
        missing = self._not_ignored(k for k in loaded if k not in state)
        unused = self._not_ignored(k for k in state if k not in loaded)
        if missing or unused:
            hint = (' (a whole-model checkpoint: convert it with '
                    'mrcl_plugin.converters.to_mmpretrain)' if any(
                        k.startswith('backbone.') for k in unused) else '')
            raise CheckpointError(
                path, f'does not fit {module_type}: {len(missing)} of its '
                f'keys missing {missing[:3]}, {len(unused)} keys unused '
                f'{unused[:3]}{hint}')
        differ = [
            k for k, v in state.items() if k in loaded
            and v.shape == loaded[k].shape and not torch.equal(
                v.to(loaded[k]), loaded[k])
        ]
        if differ:
            raise CheckpointError(
                path, f'was not loaded into {module_type}: {len(differ)} '
                f'tensors differ from the file after init {differ[:3]}')

    def _not_ignored(self, keys) -> List[str]:
        return [k for k in keys if not k.startswith(self.ignore_prefixes)]


def _weights_from_elsewhere(runner) -> bool:
    return bool(runner._resume or runner._load_from)


def _pretrained_inits(model):
    """(module name, init_cfg) of each module whose init_cfg is a
    ``Pretrained`` dict; the model's own has the name ''."""
    model = model.module if is_model_wrapper(model) else model
    for name, module in model.named_modules():
        cfg = getattr(module, 'init_cfg', None)
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            yield name, cfg
