"""tools/analysis_tools/gpu_check.py in its CPU miniature (the benchmark of
the small config at 16 px, 2 iterations of the shrunk ImageNet
MR-BarlowTwins config on the real Tiny-ImageNet sample, 2 runs of the
``micro`` study preset on the real CIFAR-10 sample, a 1-layer model
compiled through aot_eager): every figure the GPU
run reports is printed, parses and is finite; and its one-line errors."""
import math
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from mrcl_testing import ROOT, train_env

SCRIPT = ROOT / 'tools' / 'analysis_tools' / 'gpu_check.py'
LINE = re.compile(r'^GPU-CHECK \[(.+?)\] (\S+) (.*)$')


def figures(stdout: str) -> dict:
    """{part: [{name: value}]} of the GPU-CHECK lines."""
    parts = defaultdict(list)
    for line in stdout.splitlines():
        match = LINE.match(line)
        if match:
            gpu, part, values = match.groups()
            assert gpu == 'cpu miniature', line
            parts[part].append(dict(v.split('=', 1) for v in values.split()))
    return parts


def number(text: str) -> float:
    value = float(text.rstrip('x%'))
    assert math.isfinite(value), text
    return value


def test_cpu_miniature_prints_every_figure(tmp_path):
    out = subprocess.run(
        [sys.executable, SCRIPT, '--cpu-miniature', '--peak-tflops', '1',
         '--work-dir', tmp_path], cwd=ROOT, env=train_env(),
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    parts = figures(out.stdout)
    # a: each model's step time, throughput, memory and MFU
    bench = {row['model']: row for row in parts['a']}
    assert set(bench) == {'baseline', 'mrcl'}, out.stdout
    for row in bench.values():
        assert row['amp'] == 'bf16' and row['batch'] == '4'
        assert 0 < number(row['median_s'])
        assert number(row['img_per_s']) == pytest.approx(
            4 / number(row['median_s']), rel=0.01)
        assert number(row['peak_alloc_mib']) > 0
        assert number(row['reserved_mib']) >= number(row['peak_alloc_mib'])
        assert number(row['mfu']) > 0
        number(row['loss'])
    assert number(bench['baseline']['time_ratio']) == 1.0
    assert number(bench['mrcl']['time_ratio']) > 0
    assert number(bench['mrcl']['mem_ratio']) > 0
    # b: the shrunk ImageNet config trained, every loss finite
    (train, ) = parts['b']
    assert train['iters'] == '2' and train['img_size'] == '32'
    assert train['optim'] == 'CPUBF16OptimWrapper'
    assert train['all_losses_finite'] == 'True'
    number(train['first_loss']), number(train['last_loss'])
    assert number(train['s_per_iter']) > 0
    assert [row['iter'] for row in parts['b-iter']] == ['2']
    # c: the study's finished runs, each with its kNN and linear top-1
    (study, ) = parts['c']
    assert study['preset'] == 'micro' and study['cut_at_time'] == 'False'
    assert [row['name'] for row in parts['c-run']] == [
        'init_s0', 'barlowtwins_baseline_s0']
    for row in parts['c-run']:
        assert 0 <= number(row['knn_top1']) <= 100
        assert 0 <= number(row['linear_top1']) <= 100
    # d: the compiled step against eager and eager's noise floor
    (compiled, ) = parts['d']
    assert number(compiled['compile_s']) > 0
    assert number(compiled['speed_up']) > 0
    assert len(compiled['drift'].split(',')) == len(
        compiled['noise_floor'].split(',')) == 3
    assert all(number(v) >= 0 for v in compiled['noise_floor'].split(','))
    assert compiled['within_floor'] in ('True', 'False')
    assert parts['done'][0]['within_budget'] == 'True'


def test_missing_data_and_missing_gpu_are_one_line_errors(tmp_path):
    env = dict(train_env(), MRCL_DATA=str(tmp_path))
    out = subprocess.run([sys.executable, SCRIPT, '--cpu-miniature'],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        f'error: no {tmp_path}/cls/cifar10: set MRCL_DATA to the folder '
        'holding the samples (cls/cifar10, cls/tiny_imagenet_10cls)')
    out = subprocess.run([sys.executable, SCRIPT], cwd=ROOT, env=dict(
        train_env(), CUDA_VISIBLE_DEVICES=''), capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(
        'error: no GPU (torch.cuda.is_available() is False)')
