"""A local file backend whose writes are atomic, for mmengine's
``CheckpointHook``.

mmengine writes every checkpoint through a file backend: ``save_checkpoint``
ends in ``file_backend.put(bytes, path)``, the backend chosen by the hook's
``backend_args``. Its ``LocalBackend`` opens the final name and writes into
it, so a kill or a full disk during a save leaves a truncated ``iter_N.pth``
that ``--resume`` then fails on. :class:`AtomicLocalBackend` writes the
bytes to ``.iter_N.pth.part`` beside it, fsyncs and renames (``os.replace``,
atomic on one file system). The base runtimes select it with
``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``.
"""
from mmengine.fileio.backends import LocalBackend, register_backend

from .checkpoint import atomic_path


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
