"""tools/setup.sh's choice of mmcv's compiled ops (tools/mmcv_ops_choice.sh)
with a fake nvcc and a fake python answering for torch: CUDA ops where nvcc,
a CUDA torch of the same major version and a GPU to build for are there, CPU
ops elsewhere, and a wheel-cache key that keeps the two apart. Nothing is
built."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHOICE = ROOT / 'tools' / 'mmcv_ops_choice.sh'
# what setup.sh reads back, one NAME=value a line
SHOW = ('set -euo pipefail; . "$0"; mmcv_ops_choice "$1"; '
        'echo "MMCV_OPS=$MMCV_OPS"; echo "KEY=$MMCV_OPS_KEY"; '
        'echo "WHY=$MMCV_OPS_WHY"; for w in $MMCV_BUILD_ENV; do echo "$w"; '
        'done')


def choose(tmp_path, torch_cuda, gpus='', nvcc=None, **env):
    """The choice with torch built for CUDA ``torch_cuda`` ('None': a CPU
    build) seeing GPUs of compute capabilities ``gpus`` ('9.0;8.0'), and
    nvcc of release ``nvcc`` on PATH (None: no nvcc)."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    python = bin_dir / 'python'
    python.write_text(f'#!/bin/sh\necho "{torch_cuda} {gpus}"\n')
    if nvcc:
        (bin_dir / 'nvcc').write_text(
            '#!/bin/sh\necho "Cuda compilation tools, release '
            f'{nvcc}, V{nvcc}.99"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    out = subprocess.run(
        ['bash', '-c', SHOW, str(CHOICE), str(python)],
        env={'PATH': f'{bin_dir}:/usr/bin:/bin', **env},
        capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return dict(line.split('=', 1) for line in out.stdout.splitlines())


def test_cuda_ops_with_nvcc_a_cuda_torch_and_a_gpu(tmp_path):
    got = choose(tmp_path, '13.0', '9.0', nvcc='13.0')
    assert got['MMCV_OPS'] == 'cuda'
    assert got['FORCE_CUDA'] == '1' and got['MMCV_WITH_OPS'] == '1'
    # built for the GPU that is there, and cached under that name
    assert got['TORCH_CUDA_ARCH_LIST'] == '9.0'
    assert got['KEY'] == 'cuda13.0-sm9.0'
    assert 'CUDA_VISIBLE_DEVICES' not in got
    assert got['WHY'].startswith('CUDA ops for compute capability 9.0')


@pytest.mark.parametrize('torch_cuda, gpus, nvcc, why', [
    ('13.0', '9.0', None, 'no nvcc is on PATH'),
    ('None', '', '13.0', 'torch is a CPU build'),
    ('13.0', '9.0', '12.4', "nvcc 12.4 does not match torch's CUDA 13.0"),
    ('13.0', '', '13.0', 'no GPU is visible'),
])
def test_cpu_ops_elsewhere(tmp_path, torch_cuda, gpus, nvcc, why):
    got = choose(tmp_path, torch_cuda, gpus, nvcc)
    assert got['MMCV_OPS'] == 'cpu' and got['KEY'] == 'cpu'
    assert got['FORCE_CUDA'] == '0' and got['MMCV_WITH_OPS'] == '1'
    # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: hidden
    assert got['CUDA_VISIBLE_DEVICES'] == ''
    assert got['WHY'].startswith('CPU ops only: ') and why in got['WHY']


def test_arch_list_builds_cuda_ops_without_a_gpu(tmp_path):
    # a cluster's login node: no GPU, the compute nodes' capabilities named
    got = choose(tmp_path, '12.4', '', nvcc='12.4',
                 TORCH_CUDA_ARCH_LIST='8.0 9.0')
    assert got['MMCV_OPS'] == 'cuda' and got['FORCE_CUDA'] == '1'
    assert got['TORCH_CUDA_ARCH_LIST'] == '8.0;9.0'
    assert got['KEY'] == 'cuda12.4-sm8.0_9.0'


def test_forced_choice(tmp_path):
    got = choose(tmp_path, '13.0', '9.0', nvcc='13.0', MRCL_MMCV_OPS='cpu')
    assert got['MMCV_OPS'] == 'cpu' and got['FORCE_CUDA'] == '0'
    assert got['WHY'] == 'CPU ops only: MRCL_MMCV_OPS=cpu'


def test_bad_forced_choice_is_a_one_line_error(tmp_path):
    (tmp_path / 'python').write_text('#!/bin/sh\necho "None "\n')
    (tmp_path / 'python').chmod(0o755)
    out = subprocess.run(['bash', '-c', SHOW, str(CHOICE),
                          str(tmp_path / 'python')],
                         env={'PATH': '/usr/bin:/bin', 'MRCL_MMCV_OPS': 'gpu'},
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr == ('error: MRCL_MMCV_OPS=gpu: expected cpu, cuda or '
                          'auto\n')


def test_setup_builds_and_caches_by_the_choice():
    setup = (ROOT / 'tools' / 'setup.sh').read_text()
    assert '. tools/mmcv_ops_choice.sh' in setup
    assert re.search(r'WHEELS="\$CACHE/mmcv-\S*\$MMCV_OPS_KEY"', setup)
    assert re.search(r'env \$MMCV_BUILD_ENV .*\\\n\s+\$PIP wheel', setup)
    assert 'FORCE_CUDA=0' not in setup  # no fixed choice left
