import re
from typing import Dict, Sequence

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ...checkpoints import (key_list, key_mismatches, load_checkpoint,
                            state_dict_of)
from .utils import bare_model


@HOOKS.register_module()
class PretrainedCheckHook(Hook):
    """Fail at start when a ``Pretrained`` checkpoint does not fit.

    mmengine's ``Pretrained`` init (used by mmseg and mmdet) loads with
    ``strict=False``: a mis-prefixed or foreign checkpoint leaves the
    backbone at its random init with no more than a warning. Before the
    first iteration this re-reads the file named in
    ``model.<module>.init_cfg`` (weights-only) and raises, naming the keys,
    when keys are missing or unexpected or shapes differ, or when a tensor
    did not arrive (``pos_embed`` compared after the module's own resize);
    otherwise it logs how many tensors were loaded. ViTDet's relative-position
    tables (``layers.i.attn.rel_pos_h`` / ``rel_pos_w`` of ``ViTDetViT``),
    which no MRCL or MAE encoder has, are the one kind of key allowed to be
    missing: they keep their zero init, as in ViTDet, and are logged by
    name and count. After ``--resume`` or
    ``load_from`` the weights are the run's, so only the keys are checked.
    Before the weights are initialised (``before_run``) it already stops a
    run whose checkpoint is unset or unreadable, and reads the file
    weights-only before mmengine's loader does.

    Args:
        module (str): the submodule whose ``init_cfg`` is checked.
            Defaults to ``'backbone'``.
        ignore_keys (Sequence[str]): keys the checkpoint and the module are
            meant not to share (e.g. MAE's fine-tuning recipe drops the
            encoder's final norm ``ln1.*`` and adds a new ``ln2.*``).
    """

    priority = 'VERY_HIGH'
    # The keys a pretrained ViT encoder lacks by design (ViTDetViT's tables).
    NEW_KEYS = re.compile(r'layers\.\d+\.attn\.rel_pos_[hw]')

    def __init__(self, module: str = 'backbone',
                 ignore_keys: Sequence[str] = ()) -> None:
        self.module = module
        self.ignore_keys = set(ignore_keys)
        self._state = None
        self._loaded = False  # the Runner loaded a checkpoint

    def before_run(self, runner) -> None:
        # the Runner will load its own checkpoint (e.g. tools/test.py)
        if runner.cfg.get('resume') or runner.cfg.get('load_from'):
            return
        _, where, init_cfg = self.pretrained_init(runner)
        if not init_cfg.get('checkpoint'):
            raise ValueError(
                f'{where}.init_cfg.checkpoint is empty: pass --cfg-options '
                f'{where}.init_cfg.checkpoint=FILE')
        self._state = self.checkpoint_state(init_cfg['checkpoint'],
                                            init_cfg.get('prefix'))

    def before_train(self, runner) -> None:
        target, where, init_cfg = self.pretrained_init(runner)
        path = init_cfg['checkpoint']
        state, self._state = self._state, None
        if state is None:
            state = self.checkpoint_state(path, init_cfg.get('prefix'))
        prepare = getattr(target, '_prepare_pos_embed', None)
        if prepare is not None:  # mmpretrain's ViT resizes on load
            prepare(state, '')
        own = {
            k: v
            for k, v in target.state_dict().items()
            if k not in self.ignore_keys
        }
        new = [k for k in own if k not in state and self.NEW_KEYS.fullmatch(k)]
        for k in new:
            del own[k]
        problems = key_mismatches(own, state)
        if not problems and not self._loaded:
            lost = [k for k in own if not torch.equal(own[k].cpu(), state[k])]
            if lost:
                problems.append(
                    f'{len(lost)} tensors did not arrive {key_list(lost)}')
        if problems:
            raise ValueError(
                f'{path} does not fit {where} ({type(target).__name__}, '
                f"{where}.init_cfg.prefix={init_cfg.get('prefix')!r}): "
                + '; '.join(problems))
        print_log(
            f'{where}: {len(state)} tensors loaded from {path}' +
            (f' (ignored: {sorted(self.ignore_keys)})'
             if self.ignore_keys else '') +
            (f'; {len(new)} relative-position tables not in it, at their '
             f"zero init (ViTDet): {', '.join(new)}" if new else ''),
            logger='current')

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._loaded = True

    def pretrained_init(self, runner):
        """The checked module, its name in the config and its init_cfg."""
        target = bare_model(runner).get_submodule(self.module)
        where = f'model.{self.module}'
        init_cfg = target.init_cfg
        if not (isinstance(init_cfg, dict)
                and init_cfg.get('type') == 'Pretrained'):
            raise ValueError(
                f"{where}.init_cfg must be dict(type='Pretrained', "
                f'checkpoint=...) for {type(self).__name__}, got {init_cfg}')
        return target, where, init_cfg

    def checkpoint_state(self, path: str, prefix) -> Dict[str, torch.Tensor]:
        # a file or a URL, read as data
        state = state_dict_of(load_checkpoint(path), path)
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state = {
                k[len(prefix):]: v
                for k, v in state.items() if k.startswith(prefix)
            }
        return {k: v for k, v in state.items() if k not in self.ignore_keys}

