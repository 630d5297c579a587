"""tools/analysis_tools/benchmark_train_step.py in miniature (the small
CIFAR-10 config cut to 2 encoder layers, 16 px images, 2 timed steps on the
CPU): it runs in fp32 and under bf16 autocast, and prints figures that parse
and make sense."""
import math
import re
import subprocess
import sys

import pytest
from mrcl_testing import ROOT, train_env

SCRIPT = ROOT / 'tools' / 'analysis_tools' / 'benchmark_train_step.py'
CONFIG = ROOT / 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'  # noqa


def result_table(stdout: str) -> dict:
    """{model: {column: float}} from the table after the RESULTS line."""
    lines = stdout[stdout.index('\nRESULTS ['):].splitlines()[2:]
    heads = re.split(r'\s{2,}', lines[0].strip())[1:]
    table = {}
    for line in lines[1:]:
        if not line.startswith(('baseline', 'mrcl')):
            break
        name, *cells = line.split()
        table[name] = {h: float(c.rstrip('x%')) for h, c in zip(heads, cells)}
    return table


# fp32 here; bf16 (CPUBF16OptimWrapper) in tests/test_gpu_check.py's
# miniature, which runs this script and checks its figures.
@pytest.mark.parametrize('amp, wrapper', [('none', 'OptimWrapper')])
def test_benchmark_in_miniature(amp, wrapper):
    out = subprocess.run(
        [sys.executable, SCRIPT, CONFIG, '--batch', '4', '--warmup', '1',
         '--iters', '2', '--amp', amp, '--img-size', '16', '--peak-tflops',
         '1', '--cfg-options', 'model.backbone.arch.num_layers=2'],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    # The size override reached the decoder (the model would not build
    # otherwise); the step ran in the wrapper the precision asks for.
    assert 'model.decoder.num_patches=16' in out.stdout
    assert f'cpu, {wrapper} (' in out.stdout
    table = result_table(out.stdout)
    assert set(table) == {'baseline', 'mrcl'}, out.stdout
    for name, row in table.items():
        assert 0 < row['min s'] <= row['median s'], (name, row)
        assert row['img/s'] == pytest.approx(4 / row['median s'], rel=0.01)
        assert row['peak MiB'] > 0 and row['VmHWM MiB'] > row['peak MiB']
        assert row['TFLOP/step'] > 0 and row['MFU'] > 0
        assert math.isfinite(row['loss'])
    assert table['baseline']['time ratio'] == 1.0
    # The decoder's FLOPs outweigh what masking 3 of 16 tokens saves.
    assert table['mrcl']['TFLOP/step'] > table['baseline']['TFLOP/step']
    ratios = re.search(r'MRCL/baseline: time ([\d.]+)x, peak memory '
                       r'([\d.]+)x', out.stdout)
    assert ratios, out.stdout
    time_ratio, mem_ratio = map(float, ratios.groups())
    assert time_ratio == table['mrcl']['time ratio'] > 0
    assert mem_ratio == table['mrcl']['mem ratio'] > 0


def test_profile_in_miniature():
    """--profile splits each model's step by part: the decoder's parts only
    in MRCL, forward FLOPs that add up to the counted step's, and a
    kernel table."""
    out = subprocess.run(
        [sys.executable, SCRIPT, CONFIG, '--batch', '4', '--warmup', '1',
         '--iters', '1', '--amp', 'bf16', '--img-size', '16', '--no-memory',
         '--profile', '--cfg-options', 'model.backbone.arch.num_layers=2'],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout[out.stdout.index('\nPROFILE ['):].splitlines()[3:]
    parts = {}
    for line in lines:
        if line.startswith('profiled op time'):
            break
        name, cells = re.split(r'\s{2,}', line, maxsplit=1)
        cells = re.split(r'\s{2,}', cells.strip())
        parts[name] = cells  # 'fwd + bwd', GFLOP, GFLOP/s, ... extra
    assert {'encoder: blocks', 'decoder: blocks', 'contrastive loss',
            'optimizer step'} <= set(parts)
    baseline_s = [float(t) for t in parts['decoder: blocks'][0].split('+')]
    mrcl_s = [float(t) for t in parts['decoder: blocks'][3].split('+')]
    assert baseline_s == [0, 0] and sum(mrcl_s) > 0
    mrcl_gflop = sum(float(c[4]) for c in parts.values())
    assert float(parts['encoder: blocks'][4]) > 0.5 * mrcl_gflop
    ratios = re.search(r'profiled op time: baseline ([\d.]+) s, MRCL '
                       r'([\d.]+) s, ratio [\d.]+x; forward FLOP ratio '
                       r'([\d.]+)x', out.stdout)
    assert ratios and all(float(v) > 0 for v in ratios.groups())
    assert 'kernels whose self time differs most' in out.stdout
