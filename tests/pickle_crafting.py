"""Pickles written opcode by opcode, as an attacker would write them, for
the checkpoint reader's tests and its fuzzer. torch's weights-only
unpickler reads protocol 2 (``GLOBAL`` names, no ``STACK_GLOBAL``)."""
import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch

PROTO = b'\x80\x02'


def glob(path: str) -> bytes:
    """``GLOBAL module name`` for 'module.name' (the last dot splits)."""
    module, name = path.rsplit('.', 1)
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def integer(i: int) -> bytes:
    if 0 <= i < 256:
        return b'K' + bytes([i])
    if -2**31 <= i < 2**31:
        return b'J' + struct.pack('<i', i)
    data = i.to_bytes((i.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(data)]) + data  # LONG1


def text(s: str) -> bytes:
    data = s.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def tuple_of(*items: bytes) -> bytes:
    return b'(' + b''.join(items) + b't'


def call(function: str, *args: bytes) -> bytes:
    """``function(*args)``: GLOBAL, a tuple of the args, REDUCE."""
    return glob(function) + tuple_of(*args) + b'R'


def dict_of(**items: bytes) -> bytes:
    return b'}(' + b''.join(text(k) + v for k, v in items.items()) + b'u'


def pickled(ops: bytes) -> bytes:
    """A whole protocol-2 pickle of ``ops`` (which leave one object)."""
    return PROTO + ops + b'.'


def torch_file(pkl: bytes) -> bytes:
    """A torch zip checkpoint whose ``data.pkl`` is ``pkl``: the records
    of a real ``torch.save`` around it, so that torch reads it as its own
    (a bare pickle reaches torch's legacy reader instead)."""
    template = io.BytesIO()
    torch.save({}, template)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(template.getvalue())) as src, \
            zipfile.ZipFile(out, 'w', zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, pkl if name.endswith('data.pkl')
                         else src.read(name))
    return out.getvalue()


def write_torch_file(path: Path, ops: bytes) -> Path:
    Path(path).write_bytes(torch_file(pickled(ops)))
    return Path(path)


class Canary:
    """Unpickling it (with a full unpickler) creates ``path``: whether the
    file exists tells whether a loader ran what a pickle names."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def canary_checkpoint(path: Path, canary: Path) -> Path:
    """A checkpoint that looks like one (state_dict, meta) and, unpickled
    by anything but a weights-only reader, creates ``canary``."""
    torch.save({'state_dict': {'w': torch.ones(2)},
                'meta': {'iter': 1, 'payload': Canary(canary)}}, path)
    assert pickle.dumps(Canary(canary))  # the payload really pickles
    return Path(path)
