"""The paper's Tables 1 and 2 with our runs' numbers beside its own.

A work_dir is placed by what it ran (its config, read as text) and what it
logged: a pretraining run (``type='MRCL'``), a linear probe or a fine-tune
(mmpretrain's ``ImageClassifier``, with or without ``frozen_stages``),
ADE20K (mmseg's ``IoUMetric``) or COCO (mmdet's ``CocoMetric``). Its method
is the MRCL variant and whether it masks and reconstructs (MR) or is the
"w/ ViT" baseline (``mask_ratio=0`` and ``rec_head=None``): from the
pretraining config, else from the meta of the backbone checkpoint the
config loads (``mrcl_plugin.converters`` writes ``variant`` and
``mask_ratio`` there), else from the names of that checkpoint and of the
work_dir (``mrcl-simclr...`` or ``mr-simclr...`` is MR SimCLR,
``simclr...`` its baseline).
"""
import os.path as osp
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from ..checkpoint import (CheckpointError, config_values, load_checkpoint_file,
                          saved_config)
from .work_dir import read_config_text, read_scalars, run_folders

VARIANTS = {
    'barlowtwins': ('barlowtwins', 'barlow_twins', 'barlow-twins', 'bartwins'),
    'simclr': ('simclr', ),
    'byol': ('byol', ),
    'mocov3': ('mocov3', 'moco-v3', 'moco_v3'),
}
NAMES = dict(barlowtwins='BarTwins', simclr='SimCLR', byol='BYOL',
             mocov3='MoCo-v3')

# The paper's rows, as printed (arrows dropped). The key is the (variant,
# MR?) whose runs fill the row; None for other works' rows. Table 2b's
# MR BarTwins box AP is the table's 53.3 (Sec. 4.2's text says 52.3, but
# the table's "up 0.9 over MAE's 52.4" agrees with 53.3).
# Table 1: method, arch, params (M), pretraining epochs, supervision, top-1.
TABLE1 = [
    ('BYOL [19]', 'ResNet-50', 23, 1000, 'RGB', 74.3, None),
    ('SimCLR [8]', 'ResNet-50', 23, 1000, 'RGB', 69.3, None),
    ('BarTwins [47]', 'ResNet-50', 23, 1000, 'RGB', 73.2, None),
    ('InfoMin [30]', 'ResNet-50', 23, 800, 'RGB', 73.0, None),
    ('MoCo-v2 [10]', 'ResNet-50', 23, 800, 'RGB', 71.1, None),
    ('InfoCL [36]', 'ResNet-50', 23, 200, 'RGB', 61.6, None),
    ('CAE [9]', 'ViT-B', 88, 600, 'DALLE+RGB', 68.3, None),
    ('MoCo-v3 [12]', 'ViT-B', 88, 600, 'RGB', 76.5, None),
    ('DINO [7]', 'ViT-B', 88, 300, 'RGB', 80.1, None),
    ('BEiT [4]', 'ViT-B', 86, 800, 'RGB', 56.7, None),
    ('SimMIM [44]', 'ViT-B', 88, 800, 'RGB', 56.7, None),
    ('iBOT [50]', 'ViT-B', 88, 1600, 'RGB', 79.5, None),
    ('MaskFeat [40]', 'ViT-L', 218, 1600, 'HOG', 67.7, None),
    ('MAE [20]', 'ViT-L', 218, 1600, 'RGB', 75.1, None),
    ('SimCLR (w/ ViT)', 'ViT-B', 87, 600, 'RGB', 73.1, ('simclr', False)),
    ('MR SimCLR (α=8, λ=5)', 'ViT-B', 113, 600, 'RGB', 80.0,
     ('simclr', True)),
    ('BarTwins (w/ ViT)', 'ViT-B', 87, 600, 'RGB', 74.1,
     ('barlowtwins', False)),
    ('MR BarTwins (α=7, λ=2)', 'ViT-B', 113, 600, 'RGB', 80.4,
     ('barlowtwins', True)),
]
# Table 2a, ADE20K with UperNet: method, pretraining epochs, mIoU.
TABLE2_ADE20K = [
    ('MoCo-v3 [12]', 300, 47.3, None),
    ('BEiT [4]', 800, 47.1, None),
    ('iBOT [50]', 1600, 50.0, None),
    ('CAE [9]', 1600, 44.0, None),
    ('DINO [7]', 400, 47.2, None),
    ('MAE [20]', 1600, 48.1, None),
    ('MR BarTwins', 600, 51.5, ('barlowtwins', True)),
    ('MR SimCLR', 600, 51.3, ('simclr', True)),
]
# Table 2b, COCO with Mask R-CNN: method, pretraining epochs, box AP, mask AP.
TABLE2_COCO = [
    ('MoCo-v3 [12]', 300, 47.9, 42.7, None),
    ('BEiT [4]', 800, 49.8, 44.4, None),
    ('iBOT [50]', 1600, 51.2, 44.2, None),
    ('CAE [9]', 1600, 50.1, 44.0, None),
    ('SIM [29]', 1600, 49.1, 43.8, None),
    ('MAE [20]', 1600, 52.4, 46.5, None),
    ('MR BarTwins', 600, 53.3, 46.6, ('barlowtwins', True)),
    ('MR SimCLR', 600, 53.7, 46.9, ('simclr', True)),
]

# What each benchmark logs, and the factor to percent: mmpretrain and mmseg
# log percentages, mmdet's CocoMetric fractions.
METRICS = {
    'pretrain': [('knn/top1', 1)],
    'linear': [('accuracy/top1', 1)],
    'finetune': [('accuracy/top1', 1)],
    'ade20k': [('mIoU', 1)],
    'coco': [('coco/bbox_mAP', 100), ('coco/segm_mAP', 100)],
}
MISSING = 'missing'  # no run of this row
NOT_LOGGED = 'not logged'  # a run, but without this metric


@dataclass
class Run:
    """One work_dir: what it is and the last value of each metric."""
    work_dir: Path
    kind: Optional[str] = None
    variant: Optional[str] = None
    masked: Optional[bool] = None
    metrics: Dict[str, float] = field(default_factory=dict)
    last_iter: Optional[int] = None
    data: str = ''
    problem: str = ''

    @property
    def method(self) -> str:
        name = NAMES.get(self.variant, self.variant or '?')
        return f'MR {name}' if self.masked else f'{name} (w/ ViT)'


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


def _kind(cfg: str, logged: set) -> Tuple[Optional[str], str]:
    if "type='MRCL'" in cfg or 'loss_contrastive' in logged:
        return 'pretrain', ''
    if 'CocoMetric' in cfg or 'coco/bbox_mAP' in logged:
        return 'coco', ''
    if 'IoUMetric' in cfg or 'mIoU' in logged:
        if 'ADE20K' in cfg or not cfg:
            return 'ade20k', ''
        return None, 'a segmentation run, but not on ADE20K'
    if "type='ImageClassifier'" in cfg or 'accuracy/top1' in logged:
        frozen = config_values(cfg, 'frozen_stages', r'(-?\d+)')
        return ('linear' if frozen and int(frozen[0]) > 0 else
                'finetune'), ''
    return None, 'neither pretraining nor a benchmark of the paper'


def _name_method(name: str) -> Tuple[Optional[str], Optional[bool]]:
    """(variant, MR?) from a file or folder name, or (None, None)."""
    name = name.lower()
    for variant, aliases in VARIANTS.items():
        for alias in aliases:
            at = name.find(alias)
            if at >= 0:
                return variant, bool(
                    re.search(r'(^|[^a-z])mr(cl)?[-_ ]?$', name[:at]))
    return None, None


def _checkpoint_method(path: str) -> Tuple[Optional[str], Optional[bool]]:
    """(variant, MR?) from the meta of a checkpoint file (converted backbone
    or pretraining checkpoint); (None, None) when it says nothing."""
    try:
        ckpt = load_checkpoint_file(path)
    except CheckpointError:
        return None, None
    meta, cfg = ckpt.get('meta') or {}, saved_config(ckpt)
    variant = meta.get('variant') or _cfg_str(cfg, 'variant')
    if variant not in VARIANTS:
        return None, None
    ratio = meta.get('mask_ratio')
    if ratio is None:
        ratio = _cfg_float(cfg, 'mask_ratio')
    return variant, bool(ratio) or 'dict' in config_values(cfg, 'rec_head')


def _cfg_str(cfg: str, key: str) -> Optional[str]:
    found = config_values(cfg, key, r"'([\w.-]+)'")
    return found[0] if found else None


def _cfg_float(cfg: str, key: str) -> Optional[float]:
    found = config_values(cfg, key, r'([0-9.eE+-]+)')
    return float(found[0]) if found else None


def _method(work_dir: Path, cfg: str,
            kind: str) -> Tuple[Optional[str], Optional[bool]]:
    if kind == 'pretrain' and _cfg_str(cfg, 'variant'):
        # The baselines are MRCL with no mask and no decoder.
        masked = bool(_cfg_float(cfg, 'mask_ratio')) or \
            'None' not in config_values(cfg, 'rec_head')
        return _cfg_str(cfg, 'variant'), masked
    checkpoints = config_values(cfg, '(?:checkpoint|load_from|pretrained)',
                                r"'([^']+)'")
    for ckpt in checkpoints:
        # A relative path is the training's cwd's; the benchmark scripts
        # put the converted encoder in the work_dir itself.
        for path in (ckpt, str(work_dir / osp.basename(ckpt))):
            variant, masked = (_checkpoint_method(path) if osp.isfile(path)
                               else (None, None))
            if variant:
                return variant, masked
    for name in [work_dir.resolve().name] + checkpoints:
        variant, masked = _name_method(name)
        if variant:
            return variant, masked
    return None, None


def read_run(work_dir: Path) -> Run:
    """A work_dir's kind, method and last logged metrics."""
    records = read_scalars(work_dir)
    cfg = read_config_text(work_dir)
    logged = {k for r in records for k in r}
    run = Run(Path(work_dir))
    iters = [r['iter'] for r in records if 'iter' in r]
    run.last_iter = iters[-1] if iters else None
    run.data = ', '.join(dict.fromkeys(
        d.rstrip('/') for d in config_values(cfg, 'data_root', r"'([^']+)'")))
    run.kind, run.problem = _kind(cfg, logged)
    if run.kind is None:
        return run
    for key, scale in METRICS[run.kind]:
        values = [r[key] for r in records if key in r]
        if values:
            run.metrics[key] = values[-1] * scale
    run.variant, run.masked = _method(Path(work_dir), cfg, run.kind)
    if run.variant is None:
        run.problem = ('no MRCL variant found in its config, its checkpoint '
                       'or its name (name the work_dir e.g. mrcl-simclr_...)')
    elif run.kind != 'pretrain' and not run.metrics:
        run.problem = f'no {METRICS[run.kind][0][0]} logged yet'
    return run


def collect_runs(paths: Iterable[str]) -> List[Run]:
    return [read_run(w) for w in find_work_dirs(paths)]


def _ours(runs: List[Run], kind: str, key: Tuple[str, bool],
          metric: str) -> str:
    matching = [
        r for r in runs if r.kind == kind and (r.variant, r.masked) == key
    ]
    values = [r.metrics[metric] for r in matching if metric in r.metrics]
    if values:
        return ' / '.join(f'{v:.1f}' for v in values)
    return NOT_LOGGED if matching else MISSING


def _table(header: List[str], rows: List[List]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return '\n'.join(lines)


def _extra_keys(runs: List[Run], paper_rows: List[tuple],
                kinds: Tuple[str, ...]) -> List[Tuple[str, bool]]:
    """(variant, MR?) pairs we ran that the paper has no row for."""
    known = {row[-1] for row in paper_rows}
    return list(dict.fromkeys(
        (r.variant, r.masked) for r in runs
        if r.kind in kinds and r.variant and not r.problem
        and (r.variant, r.masked) not in known))


def _method_name(key: Tuple[str, bool]) -> str:
    return Run(Path('.'), variant=key[0], masked=key[1]).method


def render_tables(runs: List[Run]) -> str:
    """Tables 1 and 2 as Markdown: the paper's rows and numbers, ours beside
    them (``missing`` where we have no run), then the runs read."""
    rows = []
    for *paper, key in TABLE1:
        ours = ([_ours(runs, 'linear', key, 'accuracy/top1'),
                 _ours(runs, 'pretrain', key, 'knn/top1')] if key else
                ['', ''])
        rows.append(paper + ours)
    for key in _extra_keys(runs, TABLE1, ('linear', 'pretrain')):
        rows.append([_method_name(key), 'ViT', '', '', 'RGB', '',
                     _ours(runs, 'linear', key, 'accuracy/top1'),
                     _ours(runs, 'pretrain', key, 'knn/top1')])
    out = ['## Table 1: ImageNet-1k linear probe, top-1 (%)', '',
           _table(['Method', 'Arch', 'Params. (M)', 'Pretraining epochs',
                   'Supervision', 'Top-1 (paper)', 'Top-1 (ours)',
                   'kNN top-1 (ours)'], rows)]

    rows = []
    for method, epochs, miou, key in TABLE2_ADE20K:
        rows.append([method, epochs, miou,
                     _ours(runs, 'ade20k', key, 'mIoU') if key else ''])
    for key in _extra_keys(runs, TABLE2_ADE20K, ('ade20k', )):
        rows.append([_method_name(key), '', '',
                     _ours(runs, 'ade20k', key, 'mIoU')])
    out += ['', '## Table 2a: ADE20K semantic segmentation, UperNet', '',
            _table(['Method', 'Pre-epochs', 'mIoU (paper)', 'mIoU (ours)'],
                   rows)]

    rows = []
    for method, epochs, box, mask, key in TABLE2_COCO:
        ours = ([_ours(runs, 'coco', key, 'coco/bbox_mAP'),
                 _ours(runs, 'coco', key, 'coco/segm_mAP')] if key else
                ['', ''])
        rows.append([method, epochs, box, ours[0], mask, ours[1]])
    for key in _extra_keys(runs, TABLE2_COCO, ('coco', )):
        rows.append([_method_name(key), '', '',
                     _ours(runs, 'coco', key, 'coco/bbox_mAP'), '',
                     _ours(runs, 'coco', key, 'coco/segm_mAP')])
    out += ['', '## Table 2b: COCO detection and instance segmentation, '
            'Mask R-CNN', '',
            _table(['Method', 'Epochs', 'AP box (paper)', 'AP box (ours)',
                    'AP mask (paper)', 'AP mask (ours)'], rows)]

    out += ['', '## Runs read', '']
    for r in runs:
        what = ', '.join(f'{k} {v:.1f}' for k, v in r.metrics.items())
        line = f'- `{r.work_dir}`: {r.kind or "?"}'
        if r.variant:
            line += f', {r.method}'
        if r.data:
            line += f', data {r.data}'
        if r.last_iter is not None:
            line += f', last iteration {r.last_iter}'
        if what:
            line += f', {what}'
        if r.kind == 'finetune' and not r.problem:
            line += ' (beyond the paper: in no table)'
        if r.problem:
            line += f' -- not placed: {r.problem}'
        out.append(line)
    return '\n'.join(out) + '\n'
