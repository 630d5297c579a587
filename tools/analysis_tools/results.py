"""Print the paper's Tables 1 and 2 (Markdown) with our runs' numbers.

    python tools/analysis_tools/results.py WORK_DIR [WORK_DIR ...] [--out FILE]

Each argument is an mmengine work_dir (pretraining, linear probe, ADE20K or
COCO run) or a folder with work_dirs below it, such as ``work_dirs/``;
:mod:`runs` reads what each ran.

The paper's rows are read from metafiles in OpenMMLab's model-index format:
this package's models from those ``model-index.yml`` imports, the other
works' rows from ``configs/references/metafile.yml``. A run fills a row only
in that row's setting: architecture (ViT-B/16), data set (ImageNet-1k for
Table 1, the transfer set for Table 2) and pretraining epochs; every other
run is listed under "Runs of other settings", saying why.
"""
import argparse
import os.path as osp
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
# _encoder: the checkpoint tests read an encoder file through results
from runs import (MAE, Method, Run, _encoder, _name_method,  # noqa
                  collect_runs)

from mrcl_plugin.models import learner_name  # noqa

ROOT = Path(__file__).resolve().parents[2]  # the checkout, or the .mim
REFERENCES = ROOT / 'configs' / 'references' / 'metafile.yml'


@dataclass
class Metric:
    """A column pair: the paper's value (``task``, ``metric`` of the
    metafile's Results; None: a column of ours only) and ours (``key``
    logged by runs of ``kind``, in percent)."""
    header: str
    task: Optional[str]
    metric: Optional[str]
    kind: str
    key: str


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
                     'coco/bbox_mAP'),
              Metric('AP mask', 'Instance Segmentation', 'mask AP', 'coco',
                     'coco/segm_mAP')]),
]
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
