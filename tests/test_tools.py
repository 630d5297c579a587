"""The demo's tools on a real (briefly trained) checkpoint."""
import os
import re
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))  # this tree's code, not main's
CONFIG = ROOT / 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'  # noqa


@pytest.fixture
def checkpoint(mrcl_checkpoint):
    return mrcl_checkpoint


def run(*args):
    out = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_knn_eval(checkpoint):
    out = run('tools/analysis_tools/knn_eval.py', CONFIG, checkpoint,
              '--per-class', 10, '--test-per-class', 5, '-k', 5)
    assert '100 bank images, 50 queries, k=5' in out
    accs = re.findall(
        r'(random init|pretrained): kNN top-1 ([\d.]+)% '
        r'\(binomial SE ([\d.]+);', out)
    assert [name for name, _, _ in accs] == ['random init', 'pretrained']
    for _, acc, se in accs:
        p = float(acc) / 100
        assert float(se) == pytest.approx(100 * (p * (1 - p) / 50)**.5,
                                          abs=0.01)


def test_knn_eval_refuses_a_file_that_is_no_checkpoint(tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint')
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/knn_eval.py', str(CONFIG), str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith(f'error: {bad}: ')


def test_reconstruction_image(checkpoint, tmp_path):
    out_png = tmp_path / 'rec.png'
    out = run('tools/analysis_tools/visualize_reconstruction.py', CONFIG,
              checkpoint, '--out', out_png, '--mask-ratio', 0.5,
              '--num-images', 4, '--scale', 1)
    assert 'mask ratio 0.5' in out
    grid = mmcv.imread(str(out_png))
    assert grid.shape == (4 * 32, 4 * 32, 3)
    view, visible, _, pasted = (grid[32 * i:32 * (i + 1)] for i in range(4))
    same = np.all(np.abs(visible.astype(int) - view.astype(int)) <= 1,
                  axis=-1)
    # per 4x4 patch (8 rows x 32 columns of them): as in the view, or grey
    per_patch = same.reshape(8, 4, 32, 4).all(axis=(1, 3))
    assert per_patch.sum() == 4 * 32  # int(64 * 0.5) visible patches x 4
    # the last row pastes the visible patches back over the prediction
    assert np.abs(pasted.astype(int) - view.astype(int))[same].max() <= 1


def test_reconstruction_refuses_a_bad_output_path(checkpoint):
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/visualize_reconstruction.py',
         str(CONFIG), str(checkpoint), '--out', 'rec.jpg'],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode != 0 and '--out must be a .png' in out.stderr
