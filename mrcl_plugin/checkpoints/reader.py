"""Checkpoints are data: every checkpoint is read by :func:`read_checkpoint`.

torch's weights-only unpickler builds tensors, containers and numbers and
refuses any other global a pickle names. mmengine's checkpoints pickle a few
more (its ``HistoryBuffer``, numpy arrays and scalars in ``message_hub``),
which :func:`allowed_globals` admits as stand-ins that check what they are
given; nothing a file names is imported or run. Around torch's unpickler:

- before it, a scan of each pickle's opcodes (:mod:`pickletools`, which
  builds nothing) refuses ``bytearray``, which torch allows and no
  checkpoint holds: ``bytearray(10**10)`` would fill 10 GB;
- after it, :func:`_rebuilt` turns the ``HistoryBuffer`` stand-ins into
  real ones through their constructor (a file never touches the class's
  statistics registry), and refuses tensors that hold more bytes than the
  file (an uninitialised ``torch.FloatTensor(10**10)``), expanded views,
  tensors that are not dense, and nesting deeper than a checkpoint's;
- :func:`check_layout` checks the shape of mmengine's layout that the
  entry points rely on (string keys, a state dict of tensors, ``meta`` a
  dict, ``meta['mrcl']`` as :mod:`.meta` defines it).

Every failure, whatever unpickling raised, is one :class:`CheckpointError`
line: ``<file>: <what is wrong>``.
"""
import io
import os
import os.path as osp
import pickle
import pickletools
import re
import warnings
import zipfile
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

# Globals torch's weights-only unpickler allows that no checkpoint holds.
REFUSED_GLOBALS = ('builtins.bytearray', )
MAX_DEPTH = 64  # an mmengine checkpoint nests about 6 levels
# The built-in statistics of mmengine's HistoryBuffer: the only names the
# ``getattr`` stand-in resolves.
HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')
HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line:
    ``<file>: <what is wrong>``."""

    def __init__(self, path: str, reason: str) -> None:
        reason = ' '.join(str(reason).split())  # one line, whatever it quotes
        super().__init__(f'{path}: {reason}')
        self.path, self.reason = str(path), reason


class _Refused(Exception):
    """Raised by the stand-ins: ``what`` the file pickles that no
    checkpoint holds. Not an ``UnpicklingError``, which torch rewraps."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class _Malformed(Exception):
    """Raised by the stand-ins: a known class with a state it never has."""


# -- the allow-list ----------------------------------------------------------


class _HistoryBufferState:
    """Stands in for mmengine's ``HistoryBuffer`` while unpickling. mmengine
    pickles one by its state (``NEWOBJ`` then ``BUILD``), and the real
    ``__setstate__`` copies the file's ``statistics_methods`` into a
    class-level registry that every later buffer uses. Here the state is
    only checked and kept; :func:`_rebuilt` makes the ``HistoryBuffer`` with
    its constructor."""

    def __init__(self, *args, **kwargs) -> None:
        raise _Refused('a call of HistoryBuffer(...) (a checkpoint '
                       'restores one from its state)')

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not set(state) <= {
                'max_length', '_log_history', '_count_history',
                'statistics_methods'}:
            raise _Malformed(f'a HistoryBuffer with the state {_kind(state)}')
        log, count = state.get('_log_history'), state.get('_count_history')
        length = state.get('max_length', 1000000)
        if not (isinstance(log, np.ndarray) and isinstance(count, np.ndarray)
                and log.ndim == count.ndim == 1 and len(log) == len(count)
                and log.dtype.kind in 'biuf' and count.dtype.kind in 'biuf'
                and type(length) is int and length >= 1):
            raise _Malformed('a HistoryBuffer whose histories are not two '
                             'numeric vectors of one length')
        self.state = (log, count, length)


def _history_buffer_statistic(owner: Any, name: Any) -> Any:
    """Stands in for ``getattr`` while unpickling: a ``HistoryBuffer``
    pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
    A real ``getattr`` would reach any attribute of any allowed object (e.g.
    ``ndarray.tofile``), so only the four built-in names resolve, and what
    they resolve to is dropped with the rest of ``statistics_methods``."""
    from mmengine.logging import HistoryBuffer
    if owner is _HistoryBufferState and name in HISTORY_STATISTICS:
        return getattr(HistoryBuffer, name)
    owner_name = getattr(owner, '__name__', type(owner).__name__)
    if owner is _HistoryBufferState:
        owner_name = 'HistoryBuffer'
    raise _Refused(f'getattr({owner_name}, {str(name)[:40]!r})')


def _numpy_reconstruct(cls: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct``, which numpy pickles as
    ``_reconstruct(ndarray, (0,), b'b')`` before setting the array's state;
    any other shape would allocate memory the file does not hold."""
    if cls is not np.ndarray or shape != (0, ) or dtype != b'b':
        raise _Malformed('a numpy array rebuilt from other than numpy\'s '
                         f'(ndarray, (0,), b"b"): shape {str(shape)[:40]}')
    return np.core.multiarray._reconstruct(cls, shape, dtype)


def allowed_globals() -> List[Any]:
    """The globals besides torch's own that mmengine 0.10 checkpoints
    pickle, as ``(object, 'module.Name')`` pairs. numpy 2 names its
    rebuilders ``numpy._core.multiarray.*``, numpy 1 ``numpy.core
    .multiarray.*``: both names are allowed, so a checkpoint saved under
    either loads under either."""
    dtypes = {type(np.dtype(t)) for t in np.typecodes['All'] if t}
    rebuilders = [(fn, f'numpy.{core}.multiarray.{name}')
                  for fn, name in ((_numpy_reconstruct, '_reconstruct'),
                                   (np.core.multiarray.scalar, 'scalar'))
                  for core in ('core', '_core')]
    return [
        (_HistoryBufferState, HISTORY_BUFFER), np.ndarray, np.dtype,
        *rebuilders, *sorted(dtypes, key=str),
        (_history_buffer_statistic, 'builtins.getattr')
    ]


# -- reading -----------------------------------------------------------------


def load_checkpoint_file(path: str, map_location='cpu',
                         stand_ins: Sequence[Tuple[Any, str]] = ()
                         ) -> Dict[str, Any]:
    """Read the checkpoint file ``path`` as data: see :func:`read_checkpoint`.

    Raises:
        CheckpointError: the file is missing or a folder, or
            :func:`read_checkpoint` refuses it.
    """
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        raise CheckpointError(
            path, 'a folder, not a checkpoint file (a DeepSpeed checkpoint '
            'folder holds mp_rank_00_model_states.pt; this one does not)')
    if not osp.isfile(path):
        raise CheckpointError(path, 'no such file')
    return read_checkpoint(path, path, map_location, stand_ins)


def read_checkpoint(source: Union[str, bytes], name: str,
                    map_location='cpu',
                    stand_ins: Sequence[Tuple[Any, str]] = ()
                    ) -> Dict[str, Any]:
    """Unpickle a checkpoint as data.

    Args:
        source (str | bytes): a file path, or the file's bytes (a download
            kept in memory).
        name (str): what messages call it (the path or URL).
        map_location: as for ``torch.load``.
        stand_ins: ``(object, 'module.Name')`` pairs that the pickle may
            name besides :func:`allowed_globals` (built as ``object``,
            never imported; the ZeRO reader's DeepSpeed classes).

    Returns:
        dict: the checkpoint as saved (mmengine's has ``state_dict``,
        ``meta``, ``optimizer``, ``message_hub``, ...), its layout checked
        (:func:`check_layout`).

    Raises:
        CheckpointError: the data is truncated or corrupt, not a torch
            checkpoint, pickles code or classes a checkpoint never holds,
            holds more or other than a checkpoint does, or is not a dict.
    """
    data = source if isinstance(source, bytes) else None
    size = len(data) if data is not None else os.path.getsize(source)
    try:
        _scan(data if data is not None else source)
        allowed = [*allowed_globals(), *stand_ins]
        with torch.serialization.safe_globals(allowed), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore')  # pickle-protocol notices
            ckpt = torch.load(
                io.BytesIO(data) if data is not None else source,
                map_location=map_location, weights_only=True)
        ckpt = _rebuilt(ckpt, size)
    except _Refused as e:
        raise CheckpointError(
            name, f'refused: it pickles {e.what}, which no checkpoint holds '
            '(nothing in it was run)') from None
    except _Malformed as e:
        raise CheckpointError(name, f'not a checkpoint: it holds {e} '
                              '(nothing in it was run)') from None
    except pickle.UnpicklingError as e:
        unsafe = re.search(r'GLOBAL (\S+?)(?: was not|\.? whose|$)', str(e))
        if unsafe:
            raise CheckpointError(
                name, f'refused: it pickles {unsafe.group(1)}, which no '
                'checkpoint holds (nothing in it was run)') from None
        raise CheckpointError(
            name, 'not a torch checkpoint: cannot be read as data '
            f'({_unpickler_reason(e)}; nothing in it was run)') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            name, f'truncated or corrupt checkpoint ({_first_line(e)})'
        ) from None
    except Exception as e:  # MemoryError, RecursionError included
        # Bytes that begin like a pickle, or a pickle of allowed things in
        # an order no checkpoint has, fail in every other way ("pop from
        # empty list", a bad memo key, a BUILD on a set, an overflow).
        raise CheckpointError(
            name, 'not a torch checkpoint: cannot be read as data '
            f'({type(e).__name__}: {_first_line(e)}; nothing in it was run)'
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            name, f'not a checkpoint: it holds {a_kind(ckpt)}, not a dict '
            'of tensors')
    check_layout(ckpt, name)
    return ckpt


def _scan(source: Union[str, bytes]) -> None:
    """Refuse :data:`REFUSED_GLOBALS` in the pickles of ``source``: the
    ``.pkl`` records of a zip checkpoint, else the pickles at the start of
    a legacy file (each read up to its STOP; raw tensor bytes end the
    scan). Reading opcodes builds nothing."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else None
    with (stream or open(source, 'rb')) as f:
        if f.read(4) == b'PK\x03\x04':
            f.seek(0)
            with zipfile.ZipFile(f) as archive:
                pickles = [archive.read(n) for n in archive.namelist()
                           if n.endswith('.pkl')]
            for data in pickles:
                _scan_pickles(io.BytesIO(data))
        else:
            f.seek(0)
            _scan_pickles(f)


def _scan_pickles(f, max_pickles: int = 5) -> None:
    for _ in range(max_pickles):  # a legacy file's first five are pickles
        try:
            for opcode, arg, _ in pickletools.genops(f):
                if opcode.name == 'GLOBAL' and \
                        str(arg).replace(' ', '.') in REFUSED_GLOBALS:
                    raise _Refused(str(arg).replace(' ', '.'))
        except (ValueError, EOFError):  # not (or no longer) a pickle
            return


def _rebuilt(obj: Any, file_bytes: int) -> Any:
    """``obj`` with each ``HistoryBuffer`` stand-in made a real one, checked
    to hold no more tensor bytes than the file, no tensor that is not dense
    or is an expanded view, and no nesting deeper than :data:`MAX_DEPTH`.
    Shared objects are walked once."""
    from mmengine.logging import HistoryBuffer
    done: Dict[int, Any] = {}
    storages: Dict[int, int] = {}

    def walk(x: Any, depth: int) -> Any:
        if id(x) in done:
            return done[id(x)]
        if depth > MAX_DEPTH:
            raise _Malformed(f'data nested more than {MAX_DEPTH} levels deep')
        if isinstance(x, _HistoryBufferState):
            if not hasattr(x, 'state'):
                raise _Malformed('a HistoryBuffer without its state')
            log, count, length = x.state
            new = HistoryBuffer(log, count, length)
        elif isinstance(x, torch.Tensor):
            _check_tensor(x, storages)
            new = x
        elif isinstance(x, dict):
            new = x  # dict, OrderedDict, Counter: their items in place
            done[id(x)] = new
            for k in list(x):
                x[k] = walk(x[k], depth + 1)
        elif isinstance(x, list):
            new = x
            done[id(x)] = new
            x[:] = [walk(v, depth + 1) for v in x]
        elif isinstance(x, tuple):  # tuple, torch.Size
            items = [walk(v, depth + 1) for v in x]
            new = x if all(a is b for a, b in zip(items, x)) else \
                tuple(items)
        elif isinstance(x, np.ndarray) and x.dtype.kind == 'O':
            new = x
            for i, v in enumerate(x.flat):
                x.flat[i] = walk(v, depth + 1)
        else:
            new = x
        done[id(x)] = new
        return new

    obj = walk(obj, 0)
    if sum(storages.values()) > file_bytes:
        raise _Malformed(f'tensors of {sum(storages.values())} bytes in a '
                         f'file of {file_bytes} (memory it does not hold)')
    return obj


def _check_tensor(t: torch.Tensor, storages: Dict[int, int]) -> None:
    if t.layout != torch.strided or t.is_quantized or t.is_nested \
            or t.is_meta:
        raise _Malformed(f'a {t.layout} {t.device.type} tensor (a '
                         'checkpoint holds dense tensors with data)')
    storage = t.untyped_storage()
    storages[storage.data_ptr()] = storage.nbytes()
    if t.numel() * t.element_size() > storage.nbytes():
        raise _Malformed(f'a tensor of {tuple(t.shape)} over a storage of '
                         f'{storage.nbytes()} bytes (an expanded view)')


# -- the layout the entry points read ---------------------------------------


def check_layout(ckpt: Dict, name: str) -> None:
    """Raise a :class:`CheckpointError` naming the key where ``ckpt`` is
    not laid out as mmengine saves: string keys; ``state_dict`` (and MAE's
    ``model``) a dict of tensors under string keys; ``meta`` a dict with
    string keys, its saved configs (``cfg``, ``config``) text and its
    ``mrcl`` as :func:`mrcl_plugin.checkpoints.meta.mrcl_meta_problem`
    wants. Keys a checkpoint may lack are not required here; each reader
    says what it needs."""
    from .meta import mrcl_meta_problem
    _string_keys(ckpt, name, 'the checkpoint')
    for key in ('state_dict', 'model'):
        if key in ckpt:
            state = ckpt[key]
            if not isinstance(state, dict):
                raise CheckpointError(
                    name, f"'{key}' is {a_kind(state)}, not a dict "
                    'of tensors')
            _string_keys(state, name, f"'{key}'")
            wrong = next((k for k, v in state.items()
                          if not isinstance(v, torch.Tensor)), None)
            if wrong is not None:
                raise CheckpointError(
                    name, f"'{key}' holds {a_kind(state[wrong])} "
                    f'under {wrong!r}, not a tensor')
    if 'meta' not in ckpt:
        return
    meta = ckpt['meta']
    if not isinstance(meta, dict):
        raise CheckpointError(
            name, f"'meta' is {a_kind(meta)}, not a dict")
    _string_keys(meta, name, "'meta'")
    for key in ('cfg', 'config'):
        if key in meta and not isinstance(meta[key], str):
            raise CheckpointError(
                name, f"meta['{key}'] is {a_kind(meta[key])}, not "
                'the text of a config')
    if 'mrcl' in meta:
        problem = mrcl_meta_problem(meta['mrcl'])
        if problem:
            raise CheckpointError(name, f"meta['mrcl'] {problem}")


def _string_keys(d: Dict, name: str, what: str) -> None:
    wrong = next((k for k in d if not isinstance(k, str)), None)
    if wrong is not None:
        raise CheckpointError(
            name, f'{what} has a key that is not a string: '
            f'{a_kind(wrong)}, {str(wrong)[:40]}')


def a_kind(x: Any) -> str:
    """'a list', 'an int', 'None': what ``x`` is (or, for a type, what its
    instances are), for messages."""
    if x is None:
        return 'None'
    name = x.__name__ if isinstance(x, type) else type(x).__name__
    return ('an ' if name[0].lower() in 'aeiou' else 'a ') + name


def _kind(x: Any) -> str:
    return type(x).__name__ if not isinstance(x, dict) else \
        'keys ' + ', '.join(sorted(map(str, x))[:6])


def _unpickler_reason(error: Exception) -> str:
    """The line of torch's weights-only error that says what it met."""
    boilerplate = ('Weights only load failed', 'Please file', 'Check the doc')
    lines = [
        line.split('WeightsUnpickler error:')[-1].strip()
        for line in str(error).splitlines()
        if line.strip() and not line.startswith(boilerplate)
    ]
    return next((line for line in lines if line), _first_line(error))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
