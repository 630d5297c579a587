"""The project's command-line tools print no ``pkg_resources`` deprecation
notice: mmengine's ``Config.fromfile`` imports ``pkg_resources`` to resolve
``mmpretrain::`` bases, setuptools warns on that import, and each tool that
reads a config filters exactly that message. Each case runs a tool on a
config in a subprocess under ``-X importtime``, so that the test sees that
``pkg_resources`` was imported in that run (the warning's cause) and that
its warning was not printed."""
import os
import re
import subprocess
import sys

import pytest
import torch

from mrcl_testing import DATA, ROOT

SMALL = ROOT / ('configs/mrcl/'
                'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
WARNING = 'pkg_resources is deprecated'


def imported_modules(stderr: str) -> set:
    """The modules ``-X importtime`` lists."""
    return {
        line.rsplit('|', 1)[-1].strip()
        for line in stderr.splitlines() if line.startswith('import time:')
    }


def python(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, MRCL_DATA=str(DATA))
    env.pop('PYTHONWARNINGS', None)
    return subprocess.run(
        [sys.executable, '-X', 'importtime', *map(str, args)], cwd=cwd,
        env=env, capture_output=True, text=True, timeout=120)


def test_config_reading_still_warns_without_a_filter():
    """The control: without the tools' filter, reading the config warns,
    so the cases below can fail. (When setuptools drops pkg_resources this
    fails: then the filters can go.)"""
    proc = python('-c', 'from mmengine.config import Config; '
                  f'Config.fromfile({str(SMALL)!r})')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'pkg_resources' in imported_modules(proc.stderr)
    assert WARNING in proc.stderr


@pytest.mark.parametrize('tool, extra', [
    ('tools/test.py', []),
    ('tools/analysis_tools/dense_eval.py',
     ['--data-root', DATA / 'coco_semseg_ade_layout']),
])
def test_tool_reads_a_config_without_the_pkg_resources_warning(
        tmp_path, tool, extra):
    # an empty checkpoint: each tool reads the config, then stops with one
    # line (test.py: a pretraining config has no test_dataloader;
    # dense_eval.py: the checkpoint holds no encoder)
    checkpoint = tmp_path / 'empty.pth'
    torch.save({'state_dict': {}, 'meta': {}}, checkpoint)
    proc = python(tool, SMALL, checkpoint, *extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r'^error: ', proc.stdout + proc.stderr, re.M), out[-2000:]
    assert 'pkg_resources' in imported_modules(proc.stderr), out[-2000:]
    assert WARNING not in out
