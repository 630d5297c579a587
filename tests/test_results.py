"""The results tables and the curve plot, from real (tiny) work_dirs.

The pretraining and linear-probe work_dirs come from real runs on the
CIFAR-10 sample: MR-BarlowTwins pretraining (the small config, batch 8,
6 iterations, a log line each), then a linear probe inheriting mmpretrain's
MoCo v3 linear config on the converted encoder (2 iterations, then val and
test on 40 images). The ADE20K and COCO work_dirs are written the way
mmengine writes them (its ``LocalVisBackend``, the config dumped by it)
with the metric keys mmseg's ``IoUMetric`` and mmdet's ``CocoMetric`` log:
those trainings take far longer than this test's budget. The ``knn/top1``
values are logged during the pretraining by a stand-in for the kNN hook, as
``runner.visualizer.add_scalars`` writes them; they are not measured.
"""
import os
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.visualization import LocalVisBackend
from PIL import Image

from mrcl_plugin.analysis import (collect_runs, find_work_dirs, plot_curves,
                                  read_scalars, render_tables)
from mrcl_plugin.analysis.results import TABLE1, _name_method
from mrcl_plugin.converters import to_mmpretrain

ROOT = Path(__file__).resolve().parents[1]
SMALL_CIFAR = ROOT / ('configs/mrcl/'
                      'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
LINEAR_BASE = ('mmpretrain::mocov3/benchmarks/'
               'vit-base-p16_8xb128-linear-coslr-90e_in1k.py')
KNN_LOGGED = {3: 21.5, 6: 23.25}


class KnnStandIn(Hook):
    """Logs fixed ``knn/top1`` values as the kNN hook does (the same
    ``add_scalars`` call), without the cost of measuring them."""

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        value = KNN_LOGGED.get(runner.iter + 1)
        if value is not None:
            runner.visualizer.add_scalars(
                {'knn/top1': value}, step=runner.iter + 1,
                file_path=f'{runner.timestamp}.json')


def _inherit(base: str, folder: Path) -> Config:
    """The OpenMMLab config ``base`` (``pkg::path``) through a file that
    inherits it: ``Config.fromfile`` resolves ``pkg::`` only in ``_base_``."""
    folder.mkdir(parents=True, exist_ok=True)
    child = folder / (base.split('/')[-1])
    child.write_text(f'_base_ = {base!r}\n')
    return Config.fromfile(str(child))


def _pretrain(work_dir: Path, data_root: Path) -> Path:
    os.environ['MRCL_DATA'] = str(data_root)
    cfg = Config.fromfile(str(SMALL_CIFAR))
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'experiment_name': 'results_pretrain',
        'train_cfg.max_iters': 6,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 6,
        'custom_hooks': [],  # the stand-in below replaces any kNN hook
    })
    runner = Runner.from_cfg(cfg)
    runner.register_hook(KnnStandIn())
    runner.train()
    return work_dir / 'iter_6.pth'


def _linear_probe(work_dir: Path, backbone: Path, data_root: Path) -> dict:
    cifar = str(data_root / 'cls' / 'cifar10')
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]

    def loader(split, indices):
        return dict(
            _delete_=True, batch_size=8, num_workers=0, persistent_workers=False,
            dataset=dict(type='CustomDataset', data_root=cifar,
                         ann_file=f'meta/{split}.txt', data_prefix=split,
                         indices=indices, pipeline=pipeline),
            sampler=dict(type='DefaultSampler', shuffle=False))

    cfg = _inherit(LINEAR_BASE, work_dir.parent / 'configs')
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'experiment_name': 'results_linear',
        'model.backbone': dict(
            _delete_=True, type='VisionTransformer',
            arch=dict(embed_dims=192, num_layers=6, num_heads=3,
                      feedforward_channels=768),
            img_size=32, patch_size=4, out_type='cls_token',
            frozen_stages=6, norm_cfg=dict(type='LN', eps=1e-6),
            init_cfg=dict(type='Pretrained', checkpoint=str(backbone))),
        'model.head.in_channels': 192,
        'model.head.num_classes': 10,
        'data_preprocessor.num_classes': 10,
        # The splits are sorted by class: spread the indices over all ten.
        'train_dataloader': loader('train', list(range(0, 20000, 1250))),
        'val_dataloader': loader('test', list(range(0, 10000, 250))),
        'test_dataloader': loader('test', list(range(0, 10000, 250))),
        'val_evaluator': dict(type='Accuracy', topk=(1, )),
        'test_evaluator': dict(type='Accuracy', topk=(1, )),
        'train_cfg.max_epochs': 1,
        'param_scheduler': [],
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 100,
    })
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner.test()


def _write_benchmark_log(work_dir: Path, config: str, train_line: dict,
                         metrics: dict, step: int, **options) -> None:
    """A work_dir as mmengine leaves it: config (with the ``--cfg-options``
    ``options``) and scalars through its LocalVisBackend, into both files
    its LoggerHook fills."""
    stamp = '20261124_120000'
    backend = LocalVisBackend(save_dir=str(work_dir / stamp / 'vis_data'))
    cfg = _inherit(config, work_dir.parent / 'configs')
    cfg.merge_from_dict(options)
    backend.add_config(cfg)
    for record, at in ((train_line, 1), (metrics, step)):
        backend.add_scalars(record, step=at, file_path=f'{stamp}.json')


@pytest.fixture(scope='module')
def work_dirs(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp('work_dirs')
    old = os.environ.get('MRCL_DATA')
    try:
        pretrain_ckpt = _pretrain(root / 'mrcl-barlowtwins_pretrain',
                                  data_root)
    finally:
        if old is None:
            os.environ.pop('MRCL_DATA', None)
        else:
            os.environ['MRCL_DATA'] = old
    backbone = root / 'backbone.pth'
    torch.save(to_mmpretrain(str(pretrain_ckpt)), backbone)
    # Named without a variant: the tool finds it in the checkpoint's meta.
    test_metrics = _linear_probe(root / 'linear_probe', backbone, data_root)
    _write_benchmark_log(
        root / 'mrcl-simclr_upernet_ade20k',
        'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        dict(loss=2.31, decode_loss_ce=1.6, iter=1),
        {'aAcc': 71.2, 'mIoU': 41.27, 'mAcc': 52.0}, step=16)
    _write_benchmark_log(
        root / 'mrcl-barlowtwins_mask-rcnn_coco',
        'mmdet::mask_rcnn/mask-rcnn_r50_fpn_8xb8-amp-lsj-200e_coco.py',
        dict(loss=3.2, loss_cls=1.1, iter=1),
        {'coco/bbox_mAP': 0.123, 'coco/bbox_mAP_50': 0.25,
         'coco/segm_mAP': 0.101, 'coco/segm_mAP_50': 0.2}, step=8)
    return dict(root=root, top1=test_metrics['accuracy/top1'])


def _row(text: str, method: str) -> list:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if cells[0] == method:
            return cells
    raise AssertionError(f'no row {method!r} in\n{text}')


def _section(text: str, title: str) -> str:
    return text.split(f'## {title}')[1].split('\n## ')[0]


def test_tables_put_each_run_in_its_cell(work_dirs):
    text = render_tables(collect_runs([str(work_dirs['root'])]))
    t1 = _section(text, 'Table 1')
    row = _row(t1, 'MR BarTwins (α=7, λ=2)')
    # paper top-1, our linear top-1 (the test run's), our last kNN top-1
    assert row[5:] == ['80.4', f"{work_dirs['top1']:.1f}", '23.2']
    assert _row(t1, 'MR SimCLR (α=8, λ=5)')[5:] == ['80.0', 'missing',
                                                  'missing']
    assert _row(t1, 'BarTwins (w/ ViT)')[5:] == ['74.1', 'missing',
                                               'missing']
    assert _row(t1, 'DINO [7]')[5:] == ['80.1', '', '']

    t2a = _section(text, 'Table 2a')
    assert _row(t2a, 'MR SimCLR')[1:] == ['600', '51.3', '41.3']
    assert _row(t2a, 'MR BarTwins')[1:] == ['600', '51.5', 'missing']
    t2b = _section(text, 'Table 2b')
    # mmdet logs fractions: the table shows percent, as the paper does
    assert _row(t2b, 'MR BarTwins')[1:] == ['600', '53.3', '12.3', '46.6',
                                           '10.1']
    assert _row(t2b, 'MR SimCLR')[1:] == ['600', '53.7', 'missing', '46.9',
                                         'missing']
    assert 'not placed' not in text


def test_linear_probe_log_holds_val_and_test_records(work_dirs):
    records = read_scalars(work_dirs['root'] / 'linear_probe')
    val = [r for r in records if 'accuracy/top1' in r and 'mode' not in r]
    test = [r for r in records if r.get('mode') == 'test']
    assert len(val) == 1 and val[0]['step'] == 1  # epoch-based: the epoch
    assert test[0]['accuracy/top1'] == pytest.approx(work_dirs['top1'])


def test_unplaceable_work_dir_is_listed_with_the_reason(work_dirs, tmp_path):
    anonymous = tmp_path / 'run42'
    _write_benchmark_log(
        anonymous,
        'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        dict(loss=2.0, iter=1), {'mIoU': 30.0}, step=4)
    text = render_tables(collect_runs([str(anonymous)]))
    line = next(l for l in text.splitlines() if 'run42`' in l)
    assert line.startswith(f'- `{anonymous}`: ade20k')
    assert 'not placed: no MRCL variant' in line
    assert _row(_section(text, 'Table 2a'), 'MR SimCLR')[3] == 'missing'


def test_paper_rows_agree_with_the_metafile():
    meta = yaml.safe_load((ROOT / 'configs/mrcl/metafile.yml').read_text())
    paper = {key: top1 for *_, top1, key in TABLE1 if key}
    for model in meta['Models']:
        for result in model.get('Results') or []:
            variant = model['Name'].split('_')[0].split('-')[1]
            top1 = result['Metrics']['Top 1 Accuracy']
            assert paper[(variant, True)] == top1


def test_tool_renders_a_root_folder(work_dirs, monkeypatch, capsys):
    # The command line, run in this process (a new interpreter would spend
    # seconds importing the stack again).
    out = work_dirs['root'] / 'tables.md'
    monkeypatch.setattr(sys, 'argv', [
        'results.py', str(work_dirs['root']), '--out', str(out)])
    runpy.run_path(str(ROOT / 'tools/analysis/results.py'),
                   run_name='__main__')
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert '| MR SimCLR | 600 | 51.3 | 41.3 |' in printed
    monkeypatch.setattr(sys, 'argv', ['results.py', str(ROOT / 'no_dir')])
    with pytest.raises(SystemExit,
                       match=f"error: {ROOT / 'no_dir'}: no such work_dir"):
        runpy.run_path(str(ROOT / 'tools/analysis/results.py'),
                       run_name='__main__')


def test_bad_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=f'{tmp_path}/nothing: no such work_dir'):
        find_work_dirs([str(tmp_path / 'nothing')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError,
                       match=f'{tmp_path}/empty: no mmengine work_dir in it'):
        find_work_dirs([str(tmp_path / 'empty')])
    bad = tmp_path / 'bad' / '20261124_120000' / 'vis_data'
    bad.mkdir(parents=True)
    (bad / 'scalars.json').write_text('{"loss": 1.0, "iter": 1}\n{"loss": \n')
    with pytest.raises(ValueError, match='scalars.json, line 2: not a JSON'):
        read_scalars(tmp_path / 'bad')


def _check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as img:
        assert img.size == (700, 600)


def test_plot_draws_the_three_losses_and_knn(work_dirs, tmp_path):
    pre = work_dirs['root'] / 'mrcl-barlowtwins_pretrain'
    out = tmp_path / 'curves.png'
    curves = plot_curves(pre, out)
    _check_png(out)
    lines = [r for r in read_scalars(pre) if 'loss_contrastive' in r]
    for key in ('loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked'):
        iters, values = curves[key]
        assert iters == [1, 2, 3, 4, 5, 6]
        assert values == [r[key] for r in lines]
    assert curves['knn/top1'] == ([3, 6], [21.5, 23.25])


def test_plot_command_line(work_dirs, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'cli.png'
    monkeypatch.setattr(sys, 'argv', [
        'plot_curves.py', str(work_dirs['root'] / 'mrcl-barlowtwins_pretrain'),
        '--out', str(out)])
    runpy.run_path(str(ROOT / 'tools/analysis/plot_curves.py'),
                   run_name='__main__')
    _check_png(out)
    printed = capsys.readouterr().out
    assert 'knn/top1: 2 points, iterations 3-6, last 23.25' in printed
    assert printed.endswith(f'curves written to {out}\n')


def test_plot_without_knn_says_so_and_without_losses_fails(work_dirs,
                                                          tmp_path):
    # The pretraining log's first three lines, without the kNN records.
    pre = work_dirs['root'] / 'mrcl-barlowtwins_pretrain'
    stamp = next(p for p in pre.iterdir() if p.name.startswith('20'))
    lines = (stamp / 'vis_data' / 'scalars.json').read_text().splitlines()
    vis = tmp_path / 'short' / stamp.name / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text('\n'.join(
        l for l in lines[:4] if 'knn' not in l) + '\n')
    curves = plot_curves(tmp_path / 'short', tmp_path / 'short.png')
    _check_png(tmp_path / 'short.png')
    assert sorted(curves) == ['loss_contrastive', 'loss_rec_masked',
                              'loss_rec_unmasked']
    assert len(curves['loss_contrastive'][0]) == 3

    with pytest.raises(ValueError, match='mrcl-simclr_upernet_ade20k: no '
                       'loss_contrastive'):
        plot_curves(work_dirs['root'] / 'mrcl-simclr_upernet_ade20k',
                    tmp_path / 'x.png')


def test_baseline_and_mr_are_told_apart(tmp_path):
    # From the pretraining config: the baseline has no mask and no decoder.
    for name, config in (('run_a', 'baselines/barlowtwins_vit-base-p16_'
                          '8xb64-coslr-600e_in1k.py'),
                         ('run_b', 'mrcl/mrcl-simclr_vit-base-p16_'
                          '8xb64-coslr-600e_in1k.py')):
        vis = tmp_path / name / '20261124_120000' / 'vis_data'
        backend = LocalVisBackend(save_dir=str(vis))
        backend.add_config(Config.fromfile(str(ROOT / 'configs' / config)))
        backend.add_scalars({'loss_contrastive': 5.0, 'iter': 1}, step=1)
        backend.add_scalars({'knn/top1': 12.0}, step=1)
    runs = collect_runs([str(tmp_path)])
    assert [(r.variant, r.masked) for r in runs] == [('barlowtwins', False),
                                                    ('simclr', True)]
    t1 = _section(render_tables(runs), 'Table 1')
    assert _row(t1, 'BarTwins (w/ ViT)')[6:] == ['missing', '12.0']
    assert _row(t1, 'MR SimCLR (α=8, λ=5)')[6:] == ['missing', '12.0']
    assert _row(t1, 'MR BarTwins (α=7, λ=2)')[6:] == ['missing', 'missing']
    # From names, when the config does not say.
    assert [_name_method(n) for n in (
        'mrcl-simclr_vit-base_linear', 'mr_byol-upernet', 'simclr_vit-b',
        'work_dirs/barlowtwins_vit/iter_10.pth', 'mae_vit-b')] == [
            ('simclr', True), ('byol', True), ('simclr', False),
            ('barlowtwins', False), (None, None)]


def test_encoder_in_the_work_dir_names_the_method(work_dirs, tmp_path):
    # As tools/benchmarks/*.sh run it: work_dir named after the pretraining
    # checkpoint, the converted encoder in it, its path relative to the cwd.
    work_dir = tmp_path / 'epoch_600'
    _write_benchmark_log(
        work_dir,
        'mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
        dict(loss=2.0, iter=1), {'mIoU': 30.0}, step=4, **{
            'model.backbone.init_cfg.checkpoint':
            'work_dirs/benchmarks/ade20k/epoch_600/encoder_mmpretrain.pth'})
    shutil.copy(work_dirs['root'] / 'backbone.pth',
                work_dir / 'encoder_mmpretrain.pth')
    text = render_tables(collect_runs([str(work_dir)]))
    assert _row(_section(text, 'Table 2a'), 'MR BarTwins')[3] == '30.0'
