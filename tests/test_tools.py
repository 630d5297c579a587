"""The demo's tools on a real (briefly trained) checkpoint."""
import re
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'  # noqa


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    from mmengine.config import Config
    from mmengine.runner import Runner
    work = tmp_path_factory.mktemp('demo')
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict({
        'work_dir': str(work),
        'train_cfg.max_iters': 2,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'default_hooks.checkpoint.interval': 2,
    })
    Runner.from_cfg(cfg).train()
    return work / 'iter_2.pth'


def run(*args):
    out = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_knn_eval(checkpoint):
    out = run('tools/analysis/knn_eval.py', CONFIG, checkpoint,
              '--per-class', 10, '--test-per-class', 5, '-k', 5)
    assert '100 bank images, 50 test images, k=5' in out
    accs = re.findall(r'(random init|pretrained): kNN top-1 ([\d.]+)%', out)
    assert [name for name, _ in accs] == ['random init', 'pretrained']
    assert all(0 <= float(acc) <= 100 for _, acc in accs)


def test_knn_top1_on_known_features():
    sys.path.insert(0, str(ROOT / 'tools/analysis'))
    from knn_eval import knn_top1
    bank = torch.nn.functional.normalize(torch.eye(3)[[0, 0, 1, 1, 2, 2]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    query = torch.nn.functional.normalize(
        torch.tensor([[1., .1, 0], [0, 1., .2], [.1, 0, 1.], [1., 0, 0]]))
    assert knn_top1((bank, labels), (query, torch.tensor([0, 1, 2, 0])),
                    k=2, temperature=0.07) == 100
    assert knn_top1((bank, labels), (query, torch.tensor([1, 1, 2, 0])),
                    k=2, temperature=0.07) == 75


def test_reconstruction_image(checkpoint, tmp_path):
    out_png = tmp_path / 'rec.png'
    out = run('tools/analysis/visualize_reconstruction.py', CONFIG,
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
        [sys.executable, 'tools/analysis/visualize_reconstruction.py',
         str(CONFIG), str(checkpoint), '--out', 'rec.jpg'],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and '--out must be a .png' in out.stderr
