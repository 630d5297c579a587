"""Checkpoints are written whole or not at all, and found again after a kill.

mmengine writes every checkpoint through a file backend
(``save_checkpoint`` ends in ``file_backend.put(bytes, path)``). Its
``LocalBackend`` opens the final name and writes into it, so a kill or a
full disk during a save leaves a truncated ``iter_N.pth`` that ``--resume``
then fails on. :class:`AtomicLocalBackend` (the base runtimes'
``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``)
writes through :func:`atomic_path`, and :func:`latest_checkpoint` finds the
checkpoint to resume even when mmengine's ``last_checkpoint`` is torn.
"""
import os
import os.path as osp
import re
from contextlib import contextmanager
from typing import Iterator, Optional

from mmengine.fileio.backends import LocalBackend, register_backend

PARTIAL_SUFFIX = '.part'  # .iter_4.pth.part: written, not yet renamed
# The names mmengine's CheckpointHook gives (filename_tmpl's default).
CHECKPOINT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary name beside ``path`` (``.NAME.part``) to write, renamed
    to ``path`` (``os.replace``, atomic on one file system) once the block
    completes and removed if it fails: a kill or a full disk leaves the
    previous ``path`` as it was, and nothing half-written under its name.
    The file is fsynced before the rename and its folder after it, so that
    a power cut keeps the rename too (as databases do)."""
    folder, name = osp.split(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = osp.join(folder, f'.{name}{PARTIAL_SUFFIX}')
    try:
        yield partial
        _fsync(partial)  # on disk before the rename makes it the file
        os.replace(partial, path)
        _fsync(folder)  # the rename itself on disk
    except BaseException:
        if osp.exists(partial):
            os.remove(partial)
        raise


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` with ``put`` and ``put_text`` written
    under a temporary name and renamed once complete: a file under its final
    name is always whole. A failed write removes its temporary file and
    raises ``OSError`` naming the file; nothing written earlier is touched.
    """

    def put(self, obj: bytes, filepath) -> None:
        try:
            with atomic_path(filepath) as partial, open(partial, 'wb') as f:
                f.write(obj)
        except OSError as e:
            raise OSError(
                e.errno, f'{filepath} not saved ({e.strerror or e}); '
                'nothing was written under its name') from e

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


def is_checkpoint(path: str) -> bool:
    """A checkpoint file, or a DeepSpeed checkpoint folder."""
    from .zero import is_zero_checkpoint
    return osp.isfile(path) or is_zero_checkpoint(path)


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from, or None if there is none.

    mmengine resumes from the file ``work_dir/last_checkpoint`` names, which
    it writes in place after each checkpoint: a kill at that instant leaves
    it empty or torn, and a checkpoint removed by hand leaves it naming a
    missing file. Then this falls back, with a warning, to the newest
    ``iter_N.pth`` or ``epoch_N.pth`` in the work_dir (a file, or a
    DeepSpeed run's folder).
    """
    from mmengine.logging import print_log
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(pointer):
        with open(pointer, errors='replace') as f:
            named = f.read().strip()
        if named and is_checkpoint(named):
            return named
    steps = sorted((int(m.group(1)), name) for name in os.listdir(work_dir)
                   for m in [CHECKPOINT_NAME.match(name)]
                   if m and is_checkpoint(osp.join(work_dir, name))) \
        if osp.isdir(work_dir) else []
    if not steps:
        return None
    newest = osp.join(work_dir, steps[-1][1])
    if osp.isfile(pointer):
        problem = (f'names {named}, which is missing' if named else 'is empty')
        print_log(f'{pointer} {problem}; resuming from the newest '
                  f'checkpoint, {newest}', logger='current', level=30)
    return newest
