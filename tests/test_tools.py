"""The demo's tools on a real (briefly trained) checkpoint."""
import os
import re
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch

from mrcl_plugin.checkpoints.converters import to_mmpretrain
from mrcl_testing import run_tool

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


# -- one line, before any work, for what a user can get wrong ----------------


def knn_eval(checkpoint, *args) -> str:
    """knn_eval.py run here; its ``error:`` line, or '' if it finished."""
    return run_tool('analysis_tools/knn_eval.py',
                    [CONFIG, checkpoint, *args])


def test_knn_eval_checks_k_against_the_bank_first(checkpoint, mrcl_data_env):
    """k used to be checked after the features of every image were
    computed, then end in a traceback."""
    cifar = f'{mrcl_data_env}/cls/cifar10/'
    assert knn_eval(checkpoint, '--per-class', 2, '--test-per-class', 1,
                    '-k', 21) == (
        f'error: -k 21: must be from 1 to the 20 bank images (the train '
        f'split of {cifar}, --per-class 2)')
    assert knn_eval(checkpoint, '--per-class', 2, '-k', 0).startswith(
        'error: -k 0: must be from 1 to the 20 bank images')


def test_knn_eval_names_a_wrong_data_root(checkpoint, tmp_path, monkeypatch):
    given = tmp_path / 'cifar10'
    assert knn_eval(checkpoint, '--cfg-options',
                    f'train_dataloader.dataset.data_root={given}') == (
        f'error: train_dataloader.dataset.data_root {given} is not a folder')
    # from $MRCL_DATA, which the config reads: the hint says so
    monkeypatch.setenv('MRCL_DATA', str(tmp_path))
    assert knn_eval(checkpoint) == (
        f'error: train_dataloader.dataset.data_root {tmp_path}/cls/cifar10/ '
        f'is not a folder (set MRCL_DATA? the config reads it, now '
        f'{tmp_path})')
    # a folder without the labelled splits
    assert knn_eval(checkpoint, '--cfg-options',
                    f'train_dataloader.dataset.data_root={tmp_path}') == (
        f'error: no train split for kNN: {tmp_path}/meta/train.txt does not '
        f"exist (data_root '{tmp_path}' must hold meta/train.txt and train/)")


def reconstruct(checkpoint, out, *args) -> str:
    return run_tool('analysis_tools/visualize_reconstruction.py',
                    [CONFIG, checkpoint, '--out', out, *args])


def test_reconstruction_refuses_a_mask_ratio_of_one(checkpoint, tmp_path):
    out = tmp_path / 'rec.png'
    assert reconstruct(checkpoint, out, '--mask-ratio', 1.0) == (
        'error: --mask-ratio 1.0: must be in [0, 1), the share of patches '
        'the encoder does not see')
    assert not out.exists()


def test_reconstruction_refuses_an_encoder_only_checkpoint(
        checkpoint, tmp_path, mrcl_data_env):
    """The converted encoder loaded into the backbone alone: the tool
    exited 0 with "prediction" rows from a random decoder."""
    encoder = tmp_path / 'encoder.pth'
    torch.save(to_mmpretrain(str(checkpoint)), encoder)
    out = tmp_path / 'rec.png'
    assert reconstruct(encoder, out) == (
        f'error: {encoder}: an encoder-only checkpoint, with no decoder to '
        'reconstruct with; give the pretraining checkpoint it was converted '
        'from (work_dirs/<run>/iter_N.pth)')
    assert not out.exists()
