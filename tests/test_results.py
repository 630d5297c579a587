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

from mrcl_plugin.checkpoints.converters import to_mmpretrain

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / 'tools' / 'analysis_tools'
sys.path.insert(0, str(TOOLS))
from plot_curves import plot_curves  # noqa: E402
from results import paper_rows, render_tables  # noqa: E402
from runs import _name_method, collect_runs, find_work_dirs  # noqa: E402
from work_dir import read_scalars  # noqa: E402

BENCHMARKS = ROOT / 'configs' / 'benchmarks'
LINEAR = BENCHMARKS / 'mmpretrain' / ('vit-base-p16_8xb128-linear-coslr-100e_'
                                      'in1k.py')
ENCODER_600E = 'work_dirs/benchmarks/{}/epoch_600/encoder_mmpretrain.pth'
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
        # the stand-in below replaces any kNN hook
        'custom_hooks': [dict(type='MRCLMetaHook')],
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


def _encoder_file(work_dir: Path, backbone: Path, **meta) -> None:
    """A converted encoder where tools/benchmarks/*.sh put it, in the
    work_dir, with the ``meta`` of another pretraining (the tables read its
    meta, not its tensors): e.g. ``max_epochs=600``."""
    encoder = torch.load(backbone)
    encoder['meta'] = {k: v for k, v in encoder['meta'].items()
                       if k != 'max_iters'}
    encoder['meta'].update(meta)
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.save(encoder, work_dir / 'encoder_mmpretrain.pth')


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
    # Named without a learner: the tool finds it in the checkpoint's meta.
    test_metrics = _linear_probe(root / 'linear_probe', backbone, data_root)
    # The transfer runs of a 600-epoch ViT-B/16 encoder (the paper's
    # setting), as tools/benchmarks/*.sh name its file and put it in the
    # work_dir: its meta says the method and the pretraining epochs.
    _write_benchmark_log(
        root / 'mrcl-simclr_upernet_ade20k',
        str(BENCHMARKS / 'mmsegmentation' /
            'mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py'),
        dict(loss=2.31, decode_loss_ce=1.6, iter=1),
        {'aAcc': 71.2, 'mIoU': 41.27, 'mAcc': 52.0}, step=16, **{
            'model.backbone.init_cfg.checkpoint':
            ENCODER_600E.format('ade20k')})
    _write_benchmark_log(
        root / 'mrcl-barlowtwins_mask-rcnn_coco',
        str(BENCHMARKS / 'mmdetection' / 'mrcl_vit-base-p16_simple-fpn_'
            'mask-rcnn_8xb8-amp-lsj-100e_coco.py'),
        dict(loss=3.2, loss_cls=1.1, iter=1),
        {'coco/bbox_mAP': 0.123, 'coco/bbox_mAP_50': 0.25,
         'coco/segm_mAP': 0.101, 'coco/segm_mAP_50': 0.2}, step=8, **{
             'model.backbone.init_cfg.checkpoint':
             ENCODER_600E.format('coco')})
    _encoder_file(root / 'mrcl-simclr_upernet_ade20k', backbone,
                  learner='simclr', max_epochs=600)
    _encoder_file(root / 'mrcl-barlowtwins_mask-rcnn_coco', backbone,
                  learner='barlowtwins', max_epochs=600)
    return dict(root=root, top1=test_metrics['accuracy/top1'])


def _row(text: str, method: str) -> list:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if cells[0] == method:
            return cells
    raise AssertionError(f'no row {method!r} in\n{text}')


def _section(text: str, title: str) -> str:
    return text.split(f'## {title}')[1].split('\n## ')[0]


MR_BARTWINS, MR_SIMCLR = 'MR BarTwins (α=7, λ=2)', 'MR SimCLR (α=8, λ=5)'


def test_tables_put_each_run_in_its_cell(work_dirs):
    text = render_tables(collect_runs([str(work_dirs['root'])]))
    t2a = _section(text, 'Table 2a')
    assert _row(t2a, MR_SIMCLR)[1:] == ['600', '51.3', '41.3']
    assert _row(t2a, MR_BARTWINS)[1:] == ['600', '51.5', 'missing']
    assert _row(t2a, 'DINO [7]')[1:] == ['400', '47.2', '']
    t2b = _section(text, 'Table 2b')
    # mmdet logs fractions: the table shows percent, as the paper does
    assert _row(t2b, MR_BARTWINS)[1:] == ['600', '53.3', '12.3', '46.6',
                                         '10.1']
    assert _row(t2b, MR_SIMCLR)[1:] == ['600', '53.7', 'missing', '46.9',
                                       'missing']


def test_demo_like_runs_are_in_no_table1_row(work_dirs):
    # The pretraining is the README demo's setting (the small CIFAR-10
    # ViT config), and so is the linear probe of its encoder: neither is
    # the paper's ImageNet-1k ViT-B/16, so neither fills a Table 1 row.
    text = render_tables(collect_runs([str(work_dirs['root'])]))
    t1 = _section(text, 'Table 1')
    assert _row(t1, MR_BARTWINS)[5:] == ['80.4', 'missing', 'missing']
    assert _row(t1, 'DINO [7]')[1:] == ['ViT-B/16', '88', '300', 'RGB',
                                        '80.1', '', '']
    others = _section(text, 'Runs of other settings')
    pre = _row(others, f"`{work_dirs['root'] / 'mrcl-barlowtwins_pretrain'}`")
    assert pre[1:4] == ['pretrain', 'MR BarlowTwins', 'ViT-T/4, 6 layers']
    assert pre[4].endswith('cls/cifar10') and pre[5] == '6 iterations'
    assert pre[6] == 'knn/top1 23.2'
    assert pre[7] == (f'arch ViT-T/4, 6 layers, not ViT-B/16; data '
                      f'{pre[4]}, not ImageNet-1k; pretraining epochs '
                      'unknown, not 600')
    linear = _row(others, f"`{work_dirs['root'] / 'linear_probe'}`")
    assert linear[1:3] == ['linear', 'MR BarlowTwins']
    assert linear[6] == f"accuracy/top1 {work_dirs['top1']:.1f}"
    placed = ('mrcl-simclr_upernet_ade20k', 'mrcl-barlowtwins_mask-rcnn_coco')
    assert not any(name in others for name in placed)


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
    row = _row(_section(text, 'Runs of other settings'), f'`{anonymous}`')
    assert row[1:4] == ['ade20k', '?', 'ViT-B/16']
    assert row[7].startswith('no method found in its config')
    assert _row(_section(text, 'Table 2a'), MR_SIMCLR)[3] == 'missing'


def test_paper_rows_are_the_metafiles():
    """Every row the tool prints comes from a metafile that mim's own
    loader reads; this package's models are the rows our runs fill."""
    from modelindex.load_model_index import load
    index = load(str(ROOT / 'model-index.yml'))
    ours = {m.name: m for m in index.models}
    for model in ours.values():
        assert (ROOT / model.config).is_file(), model.config
    load(str(ROOT / 'configs/references/metafile.yml'))  # valid as well
    # Table 1's other works, Table 2's others not in Table 1, ours
    assert len(paper_rows()) == 14 + 5 + 4
    rows = {row.label: row for row in paper_rows()}
    top1 = ('Image Classification', 'ImageNet-1k', 'Top 1 Accuracy')
    assert rows[MR_BARTWINS].method == ('barlowtwins', True)
    assert rows[MR_BARTWINS].results[top1] == 80.4
    assert rows[MR_BARTWINS].results[('Object Detection', 'COCO',
                                      'box AP')] == 53.3
    assert rows['SimCLR (w/ ViT)'].method == ('simclr', False)
    assert (rows['SimCLR (w/ ViT)'].arch, rows['SimCLR (w/ ViT)'].epochs,
            rows['SimCLR (w/ ViT)'].data) == ('ViT-B/16', 600, 'ImageNet-1k')
    assert rows['MAE [20]'].method is None  # another work's: none of ours
    labels = {m.name: getattr(m, 'data', {}).get('Label') for m in
              ours.values()}
    assert labels['mrcl-simclr_vit-base-p16_8xb64-coslr-600e_in1k'] == \
        MR_SIMCLR


def test_tool_renders_a_root_folder(work_dirs, monkeypatch, capsys):
    # The command line, run in this process (a new interpreter would spend
    # seconds importing the stack again).
    out = work_dirs['root'] / 'tables.md'
    monkeypatch.setattr(sys, 'argv', [
        'results.py', str(work_dirs['root']), '--out', str(out)])
    runpy.run_path(str(TOOLS / 'results.py'), run_name='__main__')
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert f'| {MR_SIMCLR} | 600 | 51.3 | 41.3 |' in printed
    monkeypatch.setattr(sys, 'argv', ['results.py', str(ROOT / 'no_dir')])
    with pytest.raises(SystemExit,
                       match=f"error: {ROOT / 'no_dir'}: no such work_dir"):
        runpy.run_path(str(TOOLS / 'results.py'), run_name='__main__')


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
    runpy.run_path(str(TOOLS / 'plot_curves.py'), run_name='__main__')
    _check_png(out)
    printed = capsys.readouterr().out
    assert 'knn/top1: 2 points, iterations 3-6, last 23.25' in printed
    assert printed.endswith(f'curves written to {out}\n')


def test_plot_command_line_refuses_a_file(tmp_path, monkeypatch):
    """A log file where its work_dir belongs: one line, no traceback."""
    log = tmp_path / 'scalars.json'
    log.write_text('{"loss_contrastive": 5.0, "iter": 1}\n')
    monkeypatch.setattr(sys, 'argv', ['plot_curves.py', str(log)])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(TOOLS / 'plot_curves.py'), run_name='__main__')
    assert stop.value.code == (
        f'error: {log} is a file, not a work_dir: give the folder '
        'tools/train.py wrote into (with <timestamp>/vis_data/ in it)')


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


def _pretraining_log(work_dir: Path, cfg: Config, knn: float) -> None:
    """The last lines of a 600-epoch pretraining (2502 iterations an
    epoch at 8 x 64 images): the epochs are the log's."""
    backend = LocalVisBackend(save_dir=str(
        work_dir / '20261124_120000' / 'vis_data'))
    backend.add_config(cfg)
    last = 600 * 2502
    backend.add_scalars({'loss_contrastive': 5.0, 'epoch': 600,
                         'iter': last}, step=last)
    backend.add_scalars({'knn/top1': knn}, step=last)


def test_baseline_and_mr_are_told_apart(tmp_path):
    # From the pretraining config: the baseline has no mask and no decoder.
    baseline = Config.fromfile(str(
        ROOT / 'configs/baselines/barlowtwins_vit-base-p16_8xb64-coslr-'
        '600e_in1k.py'))
    mr = Config.fromfile(str(
        ROOT / 'configs/mrcl/mrcl-simclr_vit-base-p16_8xb64-coslr-600e_'
        'in1k.py'))
    _pretraining_log(tmp_path / 'run_a', baseline, 12.0)
    _pretraining_log(tmp_path / 'run_b', mr, 14.0)
    runs = collect_runs([str(tmp_path)])
    assert [r.method for r in runs] == [('barlowtwins', False),
                                        ('simclr', True)]
    assert 'MRSimCLR' in (tmp_path / 'run_b').joinpath(
        '20261124_120000/vis_data/config.py').read_text()
    t1 = _section(render_tables(runs), 'Table 1')
    assert _row(t1, 'BarTwins (w/ ViT)')[6:] == ['missing', '12.0']
    assert _row(t1, MR_SIMCLR)[6:] == ['missing', '14.0']
    assert _row(t1, MR_BARTWINS)[6:] == ['missing', 'missing']
    # From names, when the config does not say.
    assert [_name_method(n) for n in (
        'mrcl-simclr_vit-base_linear', 'mr_byol-upernet', 'simclr_vit-b',
        'work_dirs/barlowtwins_vit/iter_10.pth', 'mr-moco-v3_vit',
        'mae_vit-b')] == [
            ('simclr', True), ('byol', True), ('simclr', False),
            ('barlowtwins', False), ('mocov3', True), None]


def _ade20k_of_encoder(work_dir: Path, encoder: dict, **options) -> None:
    """An ADE20K run as tools/benchmarks/*.sh leave it: the work_dir named
    after the pretraining checkpoint, the converted encoder in it, its path
    relative to the cwd."""
    _write_benchmark_log(
        work_dir,
        str(BENCHMARKS / 'mmsegmentation' /
            'mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py'),
        dict(loss=2.0, iter=1), {'mIoU': 30.0}, step=4, **{
            'model.backbone.init_cfg.checkpoint':
            f'work_dirs/benchmarks/ade20k/{work_dir.name}/'
            'encoder_mmpretrain.pth', **options})
    torch.save(encoder, work_dir / 'encoder_mmpretrain.pth')


def test_encoder_in_the_work_dir_names_the_method(work_dirs, tmp_path):
    encoder = torch.load(work_dirs['root'] / 'backbone.pth')
    encoder['meta'] = dict(encoder['meta'], max_epochs=600)
    _ade20k_of_encoder(tmp_path / 'epoch_600', encoder)
    text = render_tables(collect_runs([str(tmp_path / 'epoch_600')]))
    assert _row(_section(text, 'Table 2a'), MR_BARTWINS)[3] == '30.0'


def test_mae_encoder_gets_its_own_row_in_its_setting(work_dirs, tmp_path):
    # An MAE encoder (its converter writes meta['learner'] = 'mae'): beside
    # the paper's MAE row in the paper's setting, else with the others.
    encoder = torch.load(work_dirs['root'] / 'backbone.pth')
    encoder['meta'] = dict(encoder['meta'], learner='mae', max_epochs=1600)
    _ade20k_of_encoder(tmp_path / 'a' / 'epoch_1600', encoder)
    encoder['meta']['max_epochs'] = 600
    _ade20k_of_encoder(tmp_path / 'b' / 'epoch_600', encoder,
                       **{'model.backbone.arch': 'deit-small'})
    text = render_tables(collect_runs([str(tmp_path)]))
    lines = _section(text, 'Table 2a').splitlines()
    at = next(i for i, line in enumerate(lines) if '| MAE [20] |' in line)
    assert lines[at + 1] == '| MAE, this recipe | 1600 |  | 30.0 |'
    other = _row(_section(text, 'Runs of other settings'),
                 f"`{tmp_path / 'b' / 'epoch_600'}`")
    assert other[1:4] == ['ade20k', 'MAE, this recipe', 'ViT-S/16']
    assert other[7] == 'arch ViT-S/16, not ViT-B/16'


# -- what the run says, not its names -----------------------------------------


def _logged_run(work_dir: Path, config: Path, lines: list) -> None:
    """A work_dir as mmengine leaves it: the config, then ``lines``."""
    backend = LocalVisBackend(save_dir=str(
        work_dir / '20261124_120000' / 'vis_data'))
    backend.add_config(Config.fromfile(str(config)))
    for line in lines:
        backend.add_scalars(line, step=line['iter'])


def test_a_run_that_never_trained_is_skipped(tmp_path, mrcl_data_env):
    """A run that stopped before its first iteration was listed as
    "pretrain, 300 iterations"; one cut short, as its config planned."""
    _logged_run(tmp_path / 'crashed', SMALL_CIFAR, [])
    _logged_run(tmp_path / 'cut_short', SMALL_CIFAR, [
        {'loss_contrastive': 5.0, 'iter': i} for i in (1, 2, 3)])
    runs = collect_runs([str(tmp_path)])
    assert [(r.work_dir.name, r.schedule) for r in runs] == [
        ('cut_short', '3 of 300 iterations')]
    assert 'crashed' not in render_tables(runs)


def test_a_cifar10_probe_through_the_imagenet_config_is_not_imagenet(
        work_dirs, tmp_path, data_root):
    """The sample data mirror ImageNet's layout, so the ImageNet config
    reads CIFAR-10 with a new data_root: its dataset class was taken for
    the data set, and the probe filled the paper's ImageNet-1k row."""
    cifar = str(data_root / 'cls' / 'cifar10')
    for name, root in (('cifar10_probe', cifar), ('imagenet_probe', None)):
        options = {f'{loader}_dataloader.dataset.data_root': root
                   for loader in ('train', 'val', 'test') if root}
        _write_benchmark_log(
            tmp_path / name, str(LINEAR), dict(loss=2.0, iter=1),
            {'accuracy/top1': 55.0 if root else 60.0}, step=1, **options,
            **{'model.backbone.init_cfg.checkpoint':
               'encoder_mmpretrain.pth'})
        _encoder_file(tmp_path / name, work_dirs['root'] / 'backbone.pth',
                      max_epochs=600)
    text = render_tables(collect_runs([str(tmp_path)]))
    assert _row(_section(text, 'Table 1'), MR_BARTWINS)[6] == '60.0'
    probe = _row(_section(text, 'Runs of other settings'),
                 f"`{tmp_path / 'cifar10_probe'}`")
    assert probe[4] == cifar
    assert probe[7] == f'data {cifar}, not ImageNet-1k'


def test_a_test_of_the_probe_checkpoint_is_no_pretraining_epochs(
        work_dirs, tmp_path):
    """tools/test.py on the probe's own ``epoch_1.pth`` (``load_from``):
    its ``epoch_1`` was read as the encoder's pretraining epochs."""
    probe = work_dirs['root'] / 'linear_probe'
    cfg = Config.fromfile(str(next(probe.glob('2*/vis_data/config.py'))))
    cfg.load_from = str(probe / 'epoch_1.pth')
    stamp = tmp_path / 'test_epoch_1' / '20261124_120000'
    LocalVisBackend(save_dir=str(stamp / 'vis_data')).add_config(cfg)
    (stamp / f'{stamp.name}.json').write_text('{"accuracy/top1": 12.5}')
    run, = collect_runs([str(tmp_path)])
    # the method and epochs from the encoder's meta: a 6-iteration run
    assert (run.kind, run.method, run.epochs, run.schedule) == (
        'linear', ('barlowtwins', True), None, 'unknown')
    assert run.metrics == {'accuracy/top1': 12.5}
