"""Fixtures shared by the tests.

- ``repo_root``: the repository (a :class:`~pathlib.Path`).
- ``data_root``: the real sample data, ``../shared/data`` from the repo root
  (or ``$MRCL_DATA``, as the configs read it); the test fails with a clear
  message when it is missing.
- ``mrcl_data_env``: sets ``MRCL_DATA`` to ``data_root`` for the test, so the
  configs' ``{{$MRCL_DATA:../shared/data}}`` resolves whatever the cwd is.
- ``free_port``: a free TCP port on localhost (for ``torch.distributed``).
- ``venv_bin``: the folder of the Python running the tests (``.venv/bin``),
  where the ``mim`` executable lies.
"""
import os
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def data_root() -> Path:
    env = os.environ.get('MRCL_DATA')
    root = Path(env) if env else REPO_ROOT / '..' / 'shared' / 'data'
    root = root.resolve()
    if not (root / 'README.md').is_file() or not (root / 'cls').is_dir():
        pytest.fail(
            f'the real sample data is missing: expected it at {root} '
            "(../shared/data from the repo root, or set MRCL_DATA); the "
            'tests read real images and never download them', pytrace=False)
    return root


@pytest.fixture
def mrcl_data_env(monkeypatch, data_root) -> Path:
    monkeypatch.setenv('MRCL_DATA', str(data_root))
    return data_root


@pytest.fixture
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='session')
def venv_bin() -> Path:
    return Path(sys.executable).parent
