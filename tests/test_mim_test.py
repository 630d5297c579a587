"""``mim test`` evaluates a linear-probe checkpoint with the plugin's
linear-probe config on the real CIFAR-10 sample, through mmpretrain's test
script and through the plugin's own (tools/test.py), shrunk by
``--cfg-options`` alone: ViT-Tiny's width (``deit-tiny``) at 32 px in 4 px
patches, 40 test images, 4 of each class. The printed top-1 and the
dumped class scores must be those of the checkpoint, computed in the test."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import mmengine
import torch
from mim.utils import get_installed_path
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

CONFIG_NAME = 'vit-base-p16_8xb128-linear-coslr-100e_in1k.py'
TEST_IMAGES = list(range(0, 10000, 250))  # meta/test.txt is class by class
ACCURACY = re.compile(r'Epoch\(test\) \[5/5\]\s+accuracy/top1: ([\d.]+)')


def overrides(data_root):
    """Small sizes, as ``key=value`` for --cfg-options."""
    return {
        'model.backbone.arch': 'deit-tiny',
        'model.backbone.img_size': 32,
        'model.backbone.patch_size': 4,
        'model.head.in_channels': 192,
        'model.head.num_classes': 10,
        'test_dataloader.batch_size': 8,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False,
        'test_dataloader.dataset.data_root': str(data_root / 'cls/cifar10'),
        'test_dataloader.dataset.ann_file': 'meta/test.txt',
        'test_dataloader.dataset.data_prefix': 'test',
        'test_dataloader.dataset.indices': TEST_IMAGES,
        'test_dataloader.dataset.pipeline.1.scale': 32,  # ResizeEdge
        'test_dataloader.dataset.pipeline.2.crop_size': 32,  # CenterCrop
    }


def cli(options):
    return [
        f"{k}={str(v).replace(' ', '')}" for k, v in options.items()
    ]


def small_classifier(repo_root, data_root, path):
    """Saves a linear-probe classifier of the small config at ``path``
    (random weights: what is tested is the tool, not the model)."""
    cfg = Config.fromfile(
        str(repo_root / 'configs/benchmarks/mmpretrain' / CONFIG_NAME))
    cfg.merge_from_dict(overrides(data_root))
    torch.manual_seed(0)
    init_default_scope('mmpretrain')
    model = MODELS.build(
        dict(cfg.model, data_preprocessor=cfg.data_preprocessor)).eval()
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model, cfg


def scores_and_top1(model, cfg):
    """The model's class scores and top-1 on the test images, computed
    here."""
    scores, correct = [], 0
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            for sample in model.test_step(batch):
                scores.append(sample.pred_score)
                correct += int(sample.pred_label == sample.gt_label)
    return torch.stack(scores), 100 * correct / len(TEST_IMAGES)


def check_result(log, out, scores, top1):
    """The printed top-1 and the dumped scores (``--out``) are the
    checkpoint's on the test images."""
    assert float(ACCURACY.search(log).group(1)) == top1
    dumped = torch.stack([torch.as_tensor(r['pred_score'])
                          for r in mmengine.load(out)])
    torch.testing.assert_close(dumped, scores)


def site_of_this_checkout(repo_root, site):
    """A folder that, first on PYTHONPATH, makes mim take this checkout for
    the installed mrcl_plugin: mim runs ``<location of the package's
    dist-info>/mrcl_plugin/.mim/tools/test.py``, and the installed one is
    wherever ``pip install -e`` was run (tools/setup.sh links it;
    tests/test_mim_train.py checks that link)."""
    installed = Path(get_installed_path('mrcl_plugin')).parent
    site.mkdir()
    for dist_info in installed.glob('mrcl_plugin-*.dist-info'):
        shutil.copytree(dist_info, site / dist_info.name)
    (site / 'mrcl_plugin').symlink_to(repo_root / 'mrcl_plugin')
    return site


def start_mim_test(venv_bin, repo_root, data_root, package, config,
                   checkpoint, work_dir):
    cmd = [
        str(venv_bin / 'mim'), 'test', package, config, '--checkpoint',
        str(checkpoint), '--work-dir',
        str(work_dir), '--out',
        str(work_dir / 'results.pkl'), '--cfg-options'
    ] + cli(overrides(data_root))
    site = site_of_this_checkout(repo_root, work_dir.with_suffix('.site'))
    env = dict(os.environ, PYTHONPATH=f'{site}:{repo_root}')
    return subprocess.Popen(
        cmd, cwd=repo_root, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def log_of(proc):
    try:
        log, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, log[-3000:]
    return log


def test_mim_test_runs_the_linear_probe_config(tmp_path, repo_root,
                                                data_root, venv_bin):
    checkpoint = tmp_path / 'linear.pth'
    model, cfg = small_classifier(repo_root, data_root, checkpoint)
    # Both at once (each spends most of its time importing).
    # mmpretrain's own test script, the config by path:
    config = repo_root / 'configs/benchmarks/mmpretrain' / CONFIG_NAME
    by_mmpretrain = start_mim_test(venv_bin, repo_root, data_root,
                                   'mmpretrain', str(config), checkpoint,
                                   tmp_path / 'mmpretrain')
    # the plugin's tools/test.py, the config by name (found in
    # mrcl_plugin/.mim/configs):
    by_plugin = start_mim_test(venv_bin, repo_root, data_root, 'mrcl_plugin',
                               CONFIG_NAME, checkpoint,
                               tmp_path / 'mrcl_plugin')
    scores, top1 = scores_and_top1(model, cfg)

    log = log_of(by_mmpretrain)
    script = re.search(r'Testing command is \S+ (\S+)', log).group(1)
    assert script.endswith('mmpretrain/.mim/tools/test.py')
    check_result(log, tmp_path / 'mmpretrain/results.pkl', scores, top1)

    log = log_of(by_plugin)
    assert 'we find the config file in codebase mrcl_plugin' in log
    script = re.search(r'Testing command is \S+ (\S+)', log).group(1)
    assert Path(script).resolve() == repo_root / 'tools' / 'test.py'
    check_result(log, tmp_path / 'mrcl_plugin/results.pkl', scores, top1)
