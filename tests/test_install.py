"""The README's install next to an existing OpenMMLab stack gives mim the
configs and tools: ``pip install -e .`` (setup.py's ``.mim`` stubs) and
``pip install .`` (the wheel's ``.mim`` copies), each into a scratch
environment that reuses this one's packages (a venv without pip whose
``.pth`` names this environment's site-packages), then ``mim train
mrcl_plugin NAME`` for one iteration, the config given by name only, and
``mim search mrcl_plugin``, which lists the models of the metafile. The
sdist and the wheel carry the LICENSE."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from mrcl_testing import DATA, ROOT

NAME = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'
ONE_ITERATION = [
    'train_cfg.max_iters=1', 'train_dataloader.batch_size=8',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1', 'custom_hooks.2.bank_per_class=2',
    'custom_hooks.2.query_per_class=2', 'custom_hooks.2.num_workers=0'
]


def run(cmd, **kw) -> str:
    env = dict(os.environ, MRCL_DATA=str(DATA))
    env.pop('PYTHONPATH', None)
    proc = subprocess.run(list(map(str, cmd)), env=env, capture_output=True,
                          text=True, timeout=300, **kw)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


def scratch_env(path: Path) -> Path:
    """A venv at ``path`` on this environment's packages; its python."""
    run([sys._base_executable, '-m', 'venv', '--without-pip', path])
    python = path / 'bin' / 'python'
    site = run([python, '-c', 'import sysconfig; '
                'print(sysconfig.get_paths()["purelib"])']).strip()
    Path(site, 'stack.pth').write_text(sysconfig.get_paths()['purelib'])
    return python


def checkout_copy(dst: Path) -> Path:
    """The checkout's files, tracked or new (links kept), without what git
    ignores (its build output, .venv)."""
    files = run(['git', '-C', ROOT, 'ls-files', '-z', '--cached', '--others',
                 '--exclude-standard']).split('\0')
    for name in filter(None, files):
        if not os.path.lexists(ROOT / name):  # deleted, not yet committed
            continue
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dst / name, follow_symlinks=False)
    return dst


@pytest.mark.parametrize('editable', [True, False],
                         ids=['pip install -e .', 'pip install .'])
def test_mim_train_and_search_after_pip_install(tmp_path, editable):
    python = scratch_env(tmp_path / 'env')
    source = ROOT if editable else checkout_copy(tmp_path / 'src')
    run([python, '-m', 'pip', 'install', '-q', '--no-deps',
         '--no-build-isolation', *(['-e'] if editable else []), '.'],
        cwd=source)
    package = run([python, '-c',
                   'import mrcl_plugin; print(mrcl_plugin.__file__)'],
                  cwd=tmp_path).strip()
    if editable:  # the checkout's package, not the .mim stub folder
        assert Path(package) == ROOT / 'mrcl_plugin' / '__init__.py'
    else:
        assert Path(package).parts[-3:] == ('site-packages', 'mrcl_plugin',
                                            '__init__.py')

    work = tmp_path / 'work'
    log = run([python, '-m', 'mim', 'train', 'mrcl_plugin', NAME,
               '--work-dir', work, '--cfg-options', *ONE_ITERATION],
              cwd=tmp_path)
    assert 'we find the config file in codebase mrcl_plugin' in log
    assert 'Saving checkpoint at 1 iterations' in log
    assert (work / 'iter_1.pth').is_file()
    dumped = (work / NAME).read_text()
    assert "type='MRBarlowTwins'" in dumped and "mask_ratio=0.2" in dumped

    # model-index.yml: in the wheel's .mim, or the editable stub importing
    # this checkout's
    log = run([python, '-m', 'mim', 'search', 'mrcl_plugin'], cwd=tmp_path)
    metafile = yaml.safe_load((ROOT / 'configs/mrcl/metafile.yml').read_text())
    listed = set(re.findall(r'config id: (\S+)', log))
    assert listed == {model['Name'] for model in metafile['Models']}


def test_sdist_and_wheel_carry_the_license(tmp_path):
    """setup.cfg's license_files: the Apache-2.0 text that setup.cfg's
    ``license`` names, in both archives."""
    license_text = (ROOT / 'LICENSE').read_bytes()
    assert b'Apache License\n                           Version 2.0' \
        in license_text
    source = checkout_copy(tmp_path / 'src')
    dist = tmp_path / 'dist'
    run([sys.executable, '-c', 'import sys; '
         'from setuptools import build_meta as b; '
         'out = sys.argv[1]; b.build_sdist(out); b.build_wheel(out)', dist],
        cwd=source)
    (sdist, ), (wheel, ) = dist.glob('*.tar.gz'), dist.glob('*.whl')
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split('/')[0]
        assert tar.extractfile(f'{top}/LICENSE').read() == license_text
    with zipfile.ZipFile(wheel) as whl:
        info = next(n.split('/')[0] for n in whl.namelist()
                    if n.endswith('.dist-info/METADATA'))
        assert whl.read(f'{info}/licenses/LICENSE') == license_text
        metadata = whl.read(f'{info}/METADATA').decode()
    assert 'License: Apache-2.0' in metadata
    assert 'License-File: LICENSE' in metadata
