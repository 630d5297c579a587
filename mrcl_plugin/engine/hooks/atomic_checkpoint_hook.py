"""mmengine's CheckpointHook, writing each file under a temporary name and
renaming it when complete."""
import os
import os.path as osp
import shutil

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmpretrain.registry import HOOKS

from ...checkpoint import PARTIAL_SUFFIX, atomic_path


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """A :class:`CheckpointHook` whose files are never half-written.

    mmengine writes ``iter_N.pth`` and ``last_checkpoint`` in place: a run
    killed, or a disk filling, during a save leaves a truncated file under
    the final name, and ``--resume`` then fails on it. Here each checkpoint
    is written to ``.iter_N.pth.part`` and renamed (``os.replace``, atomic
    on one file system) once complete, and ``last_checkpoint`` likewise, so
    it always names a complete file. A failed save removes its partial file
    and re-raises, leaving the previous checkpoint as it was. Local work
    directories only (``backend_args`` for remote storage are refused).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.backend_args or self.file_client_args:
            raise ValueError('AtomicCheckpointHook writes to a local '
                             'out_dir: backend_args must be None')

    def _save_checkpoint_with_step(self, runner, step, meta):
        """mmengine 0.10's, with the two writes made atomic (it writes
        ``last_checkpoint`` with a bare ``open``, so nothing less than the
        whole method can change that)."""
        previous = self.last_ckpt or 'no earlier checkpoint'
        self._drop_old_checkpoint(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        save = dict(
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            **self.args)
        if not is_main_process():  # Runner.save_checkpoint writes on rank 0
            runner.save_checkpoint(
                self.out_dir, f'.{filename}{PARTIAL_SUFFIX}', **save)
            return
        try:
            with atomic_path(self.last_ckpt) as partial:
                runner.save_checkpoint(
                    self.out_dir, osp.basename(partial), **save)
        except OSError as e:
            raise OSError(
                e.errno, f'checkpoint {self.last_ckpt} not saved '
                f'({e.strerror or e}); {previous} is intact') from e
        last = osp.join(runner.work_dir, 'last_checkpoint')
        with atomic_path(last) as partial, open(partial, 'w') as f:
            f.write(self.last_ckpt)

    def _drop_old_checkpoint(self, runner, step) -> None:
        """mmengine's ``max_keep_ckpts``: drop the oldest kept checkpoint
        before saving a new one."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
            return
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            old = osp.join(self.out_dir,
                           self.filename_tmpl.format(
                               self.keep_ckpt_ids.popleft()))
            if is_main_process() and osp.isfile(old):
                os.remove(old)
            elif is_main_process() and osp.isdir(old):  # DeepSpeed's
                shutil.rmtree(old)
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))
