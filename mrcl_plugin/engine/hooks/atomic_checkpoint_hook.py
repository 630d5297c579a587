"""mmengine's CheckpointHook, writing each file under a temporary name and
renaming it when complete."""
import os
import os.path as osp
from unittest import mock

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.hooks import checkpoint_hook
from mmpretrain.registry import HOOKS

PARTIAL_SUFFIX = '.part'


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path.part``, then rename it to ``path``."""
    with open(path + PARTIAL_SUFFIX, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + PARTIAL_SUFFIX, path)


class _AtomicLastCheckpoint:
    """Stands in for ``open`` in mmengine's checkpoint_hook module, which
    opens a file only to write ``last_checkpoint``."""

    def __init__(self, path, mode='r', *args, **kwargs):
        assert mode == 'w' and osp.basename(path) == 'last_checkpoint', (
            path, mode)
        self.path, self.text = path, ''

    def __enter__(self):
        return self

    def write(self, text):
        self.text += text

    def __exit__(self, exc_type, *args):
        if exc_type is None:
            write_text_atomically(self.path, self.text)


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
        save = runner.save_checkpoint
        self._previous = self.last_ckpt

        def save_then_rename(out_dir, filename, *args, **kwargs):
            partial = f'.{filename}{PARTIAL_SUFFIX}'
            try:
                save(out_dir, partial, *args, **kwargs)
                # runner.save_checkpoint writes on the main process only
                if is_main_process():
                    os.replace(
                        osp.join(out_dir, partial),
                        osp.join(out_dir, filename))
            except BaseException as e:
                if osp.exists(osp.join(out_dir, partial)):
                    os.remove(osp.join(out_dir, partial))
                if not isinstance(e, OSError):
                    raise
                kept = self._previous or 'no earlier checkpoint'
                raise OSError(
                    e.errno, f'checkpoint {osp.join(out_dir, filename)} not '
                    f'saved ({e.strerror or e}); {kept} is intact') from e

        with mock.patch.object(runner, 'save_checkpoint', save_then_rename), \
                mock.patch.object(checkpoint_hook, 'open',
                                  _AtomicLastCheckpoint, create=True):
            super()._save_checkpoint_with_step(runner, step, meta)
