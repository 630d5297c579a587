"""Print the paper's Tables 1 and 2 (Markdown) with our runs' numbers.

    python tools/analysis_tools/results.py WORK_DIR [WORK_DIR ...] [--out FILE]

Each argument is an mmengine work_dir (pretraining, linear probe, ADE20K or
COCO run) or a folder with work_dirs below it, such as ``work_dirs/``.

The paper's rows are read from metafiles in OpenMMLab's model-index format:
this package's models from those ``model-index.yml`` imports, the other
works' rows from ``configs/references/metafile.yml``. A run fills a row only
in that row's setting: architecture (ViT-B/16), data set (ImageNet-1k for
Table 1, the transfer set for Table 2) and pretraining epochs, all read from
the run's saved config (and, for a transfer run, from the encoder it loads);
every other run is listed under "Runs of other settings", saying why.

A work_dir's kind is read from its config (parsed as data: it is code,
never run here) and what it logged: pretraining (an MRCL model), a linear
probe or a fine-tune (mmpretrain's ``ImageClassifier`` with or without
``frozen_stages``), ADE20K (mmseg's ``IoUMetric``) or COCO (mmdet's
``CocoMetric``). Its method (the MRCL learner, masked or the "w/ ViT"
baseline with ``mask_ratio=0`` and ``rec_head=None``; or MAE) comes from the
pretraining config, else from the meta of the checkpoint or encoder file
the config loads (``meta['mrcl']``, which the converters carry over as
``learner``, ``mask_ratio`` and ``rec_weights``), else from the
names of that file and of the work_dir (``mrcl-simclr...`` or
``mr-simclr...`` is MR SimCLR, ``simclr...`` its baseline).
"""
import argparse
import os.path as osp
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import yaml

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from work_dir import read_config_text, read_scalars, run_folders  # noqa

from mrcl_plugin.checkpoints import (CheckpointError, config_data,  # noqa
                                     config_part, load_checkpoint_file)
from mrcl_plugin.models import LEARNERS, learner_name  # noqa

ROOT = Path(__file__).resolve().parents[2]  # the checkout, or the .mim
REFERENCES = ROOT / 'configs' / 'references' / 'metafile.yml'
MAE = 'mae'  # the learner an MAE encoder's meta names
Method = Tuple[str, bool]  # (learner, masked and reconstructed?)


@dataclass
class Metric:
    """A column pair: the paper's value (``task``, ``metric`` of the
    metafile's Results; None: a column of ours only) and ours (``key``
    logged by runs of ``kind``, times ``scale`` to percent)."""
    header: str
    task: Optional[str]
    metric: Optional[str]
    kind: str
    key: str
    scale: float = 1


@dataclass
class Table:
    title: str
    dataset: str  # the benchmark's, as the metafiles' Results name it
    info: Tuple[str, ...]  # the row fields shown before the metrics
    metrics: List[Metric]


TABLES = [
    Table('Table 1: ImageNet-1k linear probe, top-1 (%)', 'ImageNet-1k',
          ('Arch', 'Params. (M)', 'Pretraining epochs', 'Supervision'), [
              Metric('Top-1', 'Image Classification', 'Top 1 Accuracy',
                     'linear', 'accuracy/top1'),
              Metric('kNN top-1', None, None, 'pretrain', 'knn/top1')]),
    Table('Table 2a: ADE20K semantic segmentation, UperNet', 'ADE20K',
          ('Pre-epochs', ), [
              Metric('mIoU', 'Semantic Segmentation', 'mIoU', 'ade20k',
                     'mIoU')]),
    Table('Table 2b: COCO detection and instance segmentation, Mask R-CNN',
          'COCO', ('Epochs', ), [
              Metric('AP box', 'Object Detection', 'box AP', 'coco',
                     'coco/bbox_mAP', 100),
              Metric('AP mask', 'Instance Segmentation', 'mask AP', 'coco',
                     'coco/segm_mAP', 100)]),
]
KIND_KEYS = dict(pretrain=['knn/top1'], linear=['accuracy/top1'],
                 finetune=['accuracy/top1'], ade20k=['mIoU'],
                 coco=['coco/bbox_mAP', 'coco/segm_mAP'])
SCALES = {m.key: m.scale for t in TABLES for m in t.metrics}
MISSING = 'missing'  # no run of this row
NOT_LOGGED = 'not logged'  # a run, but without this metric


@dataclass
class Row:
    """A row of the paper's tables: a model of a metafile."""
    label: str
    collection: str
    method: Optional[Method]  # what our runs of it are; None: another work's
    arch: str
    data: str  # pretraining data
    epochs: Optional[int]
    params: Optional[int]
    supervision: str
    results: Dict[Tuple[str, str, str], float]  # (task, dataset, metric)

    def info(self, table: Table) -> List:
        """The fields ``table.info`` names, in its order."""
        epochs = self.epochs or ''
        values = {'Arch': self.arch, 'Supervision': self.supervision,
                  'Params. (M)': round(self.params / 1e6) if self.params
                  else '', 'Pretraining epochs': epochs,
                  'Pre-epochs': epochs, 'Epochs': epochs}
        return [values[k] for k in table.info]


def method_name(method: Method) -> str:
    learner, masked = method
    if learner == MAE:
        return 'MAE, this recipe'
    name = learner_name(learner)
    return f'MR {name}' if masked else f'{name} (w/ ViT)'


def paper_rows() -> List[Row]:
    """Every model with results in the metafiles, in their order (the
    references first). The rows our runs fill are this package's models:
    those with a config, whose name says the method."""
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    rows = []
    for path in [REFERENCES] + [ROOT / p for p in index.get('Import', [])]:
        meta = yaml.safe_load(path.read_text()) or {}
        collections = {c['Name']: c.get('Metadata') or {}
                       for c in meta.get('Collections') or []}
        for model in meta.get('Models') or []:
            if not model.get('Results'):
                continue
            md = {**collections.get(model.get('In Collection'), {}),
                  **(model.get('Metadata') or {})}
            try:
                rows.append(Row(
                    model['Label'], model.get('In Collection', ''),
                    _name_method(model['Name']) if model.get('Config')
                    else None, md['Architecture'][0], md['Training Data'],
                    md.get('Epochs'), md.get('Parameters'),
                    md.get('Supervision', ''),
                    {(r['Task'], r['Dataset'], k): v
                     for r in model['Results']
                     for k, v in r['Metrics'].items()}))
            except (KeyError, TypeError, IndexError) as e:
                raise ValueError(f'{path}: model {model.get("Name")!r} has '
                                 f'no {e} (Label, Metadata Architecture and '
                                 'Training Data are needed)') from None
    return rows


@dataclass
class Run:
    """One work_dir: what it ran, in what setting, and the last value of
    each metric (in percent)."""
    work_dir: Path
    kind: Optional[str] = None
    method: Optional[Method] = None
    arch: str = '?'
    data: str = '?'  # pretraining data, or the benchmark's
    epochs: Optional[int] = None  # of the pretraining
    schedule: str = '?'  # the pretraining's, as read
    metrics: Dict[str, float] = field(default_factory=dict)
    problem: str = ''


def is_work_dir(path: Path) -> bool:
    return path.is_dir() and bool(run_folders(path))


def find_work_dirs(paths: Iterable[str]) -> List[Path]:
    """The work_dirs named, or found under the folders named."""
    found = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f'{p}: no such work_dir or folder')
        if is_work_dir(p):
            found.append(p)
            continue
        below = sorted(d for d in p.rglob('*') if is_work_dir(d))
        if not below:
            raise FileNotFoundError(
                f'{p}: no mmengine work_dir in it (a <timestamp>/vis_data/'
                'scalars.json or <timestamp>/<timestamp>.json)')
        found += below
    return list(dict.fromkeys(found))


def _walk(cfg: Any, key: str) -> List[Any]:
    """Every value of ``key`` at any depth of a config's data, in order."""
    found = []
    items = cfg.items() if isinstance(cfg, dict) else enumerate(
        cfg if isinstance(cfg, (list, tuple)) else ())
    for k, value in items:
        if k == key:
            found.append(value)
        found += _walk(value, key)
    return found


def _types(cfg: Dict) -> set:
    return {t.rsplit('.', 1)[-1] for t in _walk(cfg, 'type')
            if isinstance(t, str)}


def _learner(cfg: Dict) -> Optional[str]:
    kind = str(config_part(cfg, 'model').get('type', '')).rsplit('.', 1)[-1]
    return next((v for v, cls in LEARNERS.items() if cls.__name__ == kind),
                None)


def _kind(cfg: Dict, logged: set) -> Tuple[Optional[str], str]:
    types = _types(cfg)
    if _learner(cfg) or 'loss_contrastive' in logged:
        return 'pretrain', ''
    if 'CocoMetric' in types or 'coco/bbox_mAP' in logged:
        return 'coco', ''
    if 'IoUMetric' in types or 'mIoU' in logged:
        if 'ADE20KDataset' in types or not cfg:
            return 'ade20k', ''
        return None, 'a segmentation run, but not on ADE20K'
    if 'ImageClassifier' in types or 'accuracy/top1' in logged:
        frozen = config_part(cfg, 'model', 'backbone').get('frozen_stages')
        linear = isinstance(frozen, int) and frozen > 0
        return ('linear' if linear else 'finetune'), ''
    return None, 'neither pretraining nor a benchmark of the paper'


def _arch(cfg: Dict) -> str:
    """'ViT-B/16', 'ViT-T/4, 6 layers', 'ResNet-50' or '?': the backbone
    of a config (a named mmpretrain arch or its sizes)."""
    backbone = config_part(cfg, 'model', 'backbone')
    if str(backbone.get('type', '')).endswith('ResNet'):
        return f'ResNet-{backbone.get("depth", "?")}'
    from mmpretrain.models import VisionTransformer
    # a named arch, an arch dict, or (mmseg's MAE) the sizes in the backbone
    arch = backbone.get('arch', backbone)
    zoo = VisionTransformer.arch_zoo.get(arch.lower(), {}) if isinstance(
        arch, str) else arch if isinstance(arch, dict) else {}
    dims, layers = zoo.get('embed_dims'), zoo.get('num_layers')
    if not dims or not layers:
        return '?'
    size, full = {192: ('T', 12), 384: ('S', 12), 768: ('B', 12),
                  1024: ('L', 24), 1280: ('H', 32)}.get(dims, (dims, 0))
    patch = backbone.get('patch_size', 16)  # mmpretrain's default
    return f'ViT-{size}/{patch}' + (f', {layers} layers'
                                    if layers != full else '')


def _data(cfg: Dict) -> str:
    """The data set a config trains on: 'ImageNet-1k', 'ADE20K', 'COCO',
    else its data roots."""
    types = _types(cfg)
    for dataset, name in (('ADE20KDataset', 'ADE20K'), ('CocoDataset', 'COCO'),
                          ('ImageNet', 'ImageNet-1k')):
        if dataset in types:
            return name
    roots = dict.fromkeys(
        r.rstrip('/') for r in _walk(cfg, 'data_root') if isinstance(r, str))
    return ', '.join(roots) or '?'


def _schedule(cfg: Dict) -> Tuple[Optional[int], str]:
    loop = config_part(cfg, 'train_cfg')
    if loop.get('max_epochs'):
        return loop['max_epochs'], f'{loop["max_epochs"]} epochs'
    return None, f'{loop["max_iters"]} iterations' if loop.get(
        'max_iters') else '?'


def _name_method(name: str) -> Optional[Method]:
    """The method a file or folder name says, or None."""
    name = re.sub(r'(barlow|moco)[-_]', r'\1', name.lower())
    for alias, learner in [(v, v) for v in LEARNERS] + [
            ('bartwins', 'barlowtwins')]:
        at = name.find(alias)
        if at >= 0:
            return learner, bool(
                re.search(r'(^|[^a-z])mr(cl)?[-_ ]?$', name[:at]))
    return None


def _encoder(path: str) -> Tuple[Optional[Method], Optional[int]]:
    """The method of an encoder or pretraining checkpoint file and its
    pretraining epochs, from its meta: ``meta['mrcl']`` in a pretraining
    checkpoint, the converter's ``meta`` in an encoder file."""
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError:
        return None, None
    meta = ckpt.get('meta') or {}
    info = meta.get('mrcl') if isinstance(meta.get('mrcl'), dict) else meta
    # 'variant': what converted files said before it was called learner
    learner = info.get('learner') or info.get('variant')
    epochs = info.get('max_epochs')
    epochs = epochs if type(epochs) is int else None
    if learner == MAE:
        return (MAE, True), epochs
    if not isinstance(learner, str) or learner not in LEARNERS:
        return None, epochs
    ratio, weights = info.get('mask_ratio'), info.get('rec_weights')
    masked = (isinstance(ratio, (int, float)) and ratio > 0) or \
        (isinstance(weights, dict) and bool(weights))
    return (learner, masked), epochs


def _method(run: Run, cfg: Dict) -> None:
    """Set the run's method and, for a transfer run, its pretraining
    epochs (from the encoder file, else an ``epoch_N`` in its name)."""
    if run.kind == 'pretrain':
        model = config_part(cfg, 'model')
        masked = bool(config_part(model, 'backbone').get('mask_ratio', 0)) or \
            model.get('rec_head') is not None
        run.method = (_learner(cfg), masked) if _learner(cfg) else \
            _name_method(run.work_dir.resolve().name)
        run.epochs, run.schedule = _schedule(cfg)
        return
    checkpoints = [
        v for key in ('checkpoint', 'load_from', 'pretrained')
        for v in _walk(cfg, key) if isinstance(v, str) and v
    ]
    names = [run.work_dir.resolve().name] + checkpoints
    for ckpt in checkpoints:
        # A relative path is the training's cwd's; the benchmark scripts
        # put the converted encoder in the work_dir itself.
        for path in (ckpt, str(run.work_dir / osp.basename(ckpt))):
            if osp.isfile(path) and not run.method:
                run.method, run.epochs = _encoder(path)
    run.method = run.method or next(
        filter(None, map(_name_method, names)), None)
    if run.epochs is None:  # mmengine names checkpoints epoch_N.pth
        found = [int(n) for n in re.findall(r'epoch_(\d+)', ' '.join(names))]
        run.epochs = found[0] if found else None
    run.schedule = f'{run.epochs} epochs' if run.epochs else 'unknown'


def read_run(work_dir: Path) -> Run:
    """A work_dir's kind, method, setting and last logged metrics."""
    records = read_scalars(work_dir)
    cfg = config_data(read_config_text(work_dir))
    run = Run(Path(work_dir))
    run.kind, run.problem = _kind(cfg, {k for r in records for k in r})
    if run.kind is None:
        return run
    for key in KIND_KEYS[run.kind]:
        values = [r[key] for r in records if key in r]
        if values:
            run.metrics[key] = values[-1] * SCALES.get(key, 1)
    run.arch, run.data = _arch(cfg), _data(cfg)
    _method(run, cfg)
    if run.method is None:
        run.problem = ('no method found in its config, its checkpoint or '
                       'its name (name the work_dir e.g. mrcl-simclr_...)')
    elif run.kind != 'pretrain' and not run.metrics:
        run.problem = f'no {KIND_KEYS[run.kind][0]} logged yet'
    return run


def collect_runs(paths: Iterable[str]) -> List[Run]:
    return [read_run(w) for w in find_work_dirs(paths)]


def _setting(run: Run) -> tuple:
    return run.arch, run.data, run.epochs


def _row_setting(row: Row, table: Table, kind: str) -> tuple:
    return (row.arch, row.data if kind == 'pretrain' else table.dataset,
            row.epochs)


def _cell(runs: List[Run], metric: Metric) -> str:
    values = [r.metrics[metric.key] for r in runs
              if r.kind == metric.kind and metric.key in r.metrics]
    if values:
        return ' / '.join(f'{v:.1f}' for v in values)
    return NOT_LOGGED if any(r.kind == metric.kind for r in runs) else MISSING


def _markdown(header: List[str], rows: List[List]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _collection(method: Method) -> str:
    return 'MAE' if method[0] == MAE else 'MRCL'


def render_table(table: Table, rows: List[Row], runs: List[Run],
                 placed: set) -> str:
    """One of the paper's tables, beside each of our rows the runs of its
    method and setting. A method we ran that no row is for (MR BYOL, an
    MAE encoder) gets a row of its own after the last row of its
    collection, with its runs in the setting of our rows or of that
    collection's. Adds the runs shown to ``placed``."""
    kinds = {m.kind for m in table.metrics}
    rows = [r for r in rows if any(
        (m.task, table.dataset, m.metric) in r.results for m in table.metrics)]
    runs = [r for r in runs if r.method and not r.problem and r.kind in kinds]
    lines = []  # (row, our runs of it; None: another work's row)
    for row in rows:
        lines.append((row, row.method and [
            r for r in runs if r.method == row.method and
            _setting(r) == _row_setting(row, table, r.kind)]))
    extra = {}
    for run in runs:
        if run.method in {r.method for r in rows}:
            continue
        if any(_setting(run) == _row_setting(r, table, run.kind)
               for r in rows
               if r.method or r.collection == _collection(run.method)):
            extra.setdefault(run.method, []).append(run)
    for method, found in extra.items():
        at = max((i + 1 for i, (row, _) in enumerate(lines)
                  if row.collection == _collection(method)),
                 default=len(lines))
        first = found[0]
        lines.insert(at, (Row(method_name(method), _collection(method),
                              method, first.arch, first.data, first.epochs,
                              None, '', {}), found))
    cells = []
    for row, found in lines:
        cells.append([row.label, *row.info(table)])
        for m in table.metrics:
            if m.task:
                cells[-1].append(
                    row.results.get((m.task, table.dataset, m.metric), ''))
            cells[-1].append('' if found is None else _cell(found, m))
        placed.update(r.work_dir for r in found or [])
    header = ['Method', *table.info]
    for m in table.metrics:
        header += [f'{m.header} (paper)'] if m.task else []
        header.append(f'{m.header} (ours)')
    return f'## {table.title}\n\n' + _markdown(header, cells)


def _why_not(run: Run, ours: Row) -> str:
    """What keeps a run out of the paper's rows: its problem, or each part
    of its setting that is not our rows' (``ours``)."""
    if run.problem:
        return run.problem
    if run.kind == 'finetune':
        return "a fine-tune: in none of the paper's tables"
    data = ours.data if run.kind == 'pretrain' else next(
        t.dataset for t in TABLES for m in t.metrics if m.kind == run.kind)
    return '; '.join(
        f'{what} {mine or "unknown"}, not {theirs}'
        for what, mine, theirs in zip(
            ('arch', 'data', 'pretraining epochs'), _setting(run),
            (ours.arch, data, ours.epochs)) if mine != theirs)


def render_tables(runs: List[Run]) -> str:
    """Tables 1 and 2 as Markdown: the paper's rows and numbers, ours beside
    them (``missing`` where we have no run of the row's setting), then
    every run placed in no row."""
    rows, placed = paper_rows(), set()
    out = [render_table(t, rows, runs, placed) for t in TABLES]
    ours = next(r for r in rows if r.method)
    others = [[f'`{r.work_dir}`', r.kind or '?',
               method_name(r.method) if r.method else '?', r.arch, r.data,
               r.schedule,
               ', '.join(f'{k} {v:.1f}' for k, v in r.metrics.items()),
               _why_not(r, ours)]
              for r in runs if r.work_dir not in placed]
    out.append('## Runs of other settings\n\n' + (_markdown(
        ['Run', 'Kind', 'Method', 'Arch', 'Data', 'Pretraining',
         'Metrics', 'Not in a paper row because'], others)
        if others else 'None: every run is in a row above.'))
    return '\n\n'.join(out) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--out', help='also write the Markdown here')
    args = parser.parse_args()
    try:
        text = render_tables(collect_runs(args.work_dirs))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(text, end='')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
