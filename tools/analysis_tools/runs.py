"""What each work_dir ran, read from what the run says; results.py puts the
runs in the paper's tables.

A work_dir's kind is read from its config (parsed as data: it is code,
never run here) and what it logged: pretraining (an MRCL model), a linear
probe or a fine-tune (mmpretrain's ``ImageClassifier`` with or without
``frozen_stages``), ADE20K (mmseg's ``IoUMetric``) or COCO (mmdet's
``CocoMetric``). A work_dir that logged no training iteration and no test
never ran: it is skipped.

Its setting: the backbone (from the config), the data set (the config's
dataset and ``data_root``: ``ImageNet-1k``, ``ADE20K`` or ``COCO`` where the
dataset class is the benchmark's and reads its usual folder, else the data
roots) and the pretraining epochs (a pretraining's logged epochs; for a
transfer run, ``max_epochs`` in the meta of the encoder it loads).

Its method (the MRCL learner, masked or the "w/ ViT" baseline with
``mask_ratio=0`` and ``rec_head=None``; or MAE) comes from the pretraining
config, else from the meta of the encoder file the config loads
(``meta['mrcl']``, which the converters carry over as ``learner``,
``mask_ratio`` and ``rec_weights``), else from the names of that file and
of the work_dir (``mrcl-simclr...`` or ``mr-simclr...`` is MR SimCLR,
``simclr...`` its baseline).
"""
import os.path as osp
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from work_dir import read_config_text, read_scalars, run_folders  # noqa

from mrcl_plugin.checkpoints import (CheckpointError, config_data,  # noqa
                                     config_part, load_checkpoint_file)
from mrcl_plugin.models import LEARNERS  # noqa

MAE = 'mae'  # the learner an MAE encoder's meta names
Method = Tuple[str, bool]  # (learner, masked and reconstructed?)
KIND_KEYS = dict(pretrain=['knn/top1'], linear=['accuracy/top1'],
                 finetune=['accuracy/top1'], ade20k=['mIoU'],
                 coco=['coco/bbox_mAP', 'coco/segm_mAP'])
SCALES = {'coco/bbox_mAP': 100, 'coco/segm_mAP': 100}  # mmdet logs fractions
# A benchmark's data set: its dataset class reading the folder OpenMMLab's
# configs read it from (anywhere below a root). The sample data mirror
# these layouts: a CIFAR-10 folder read with ``ImageNet`` is no ImageNet-1k.
BENCHMARK_DATA = {
    'ImageNet': ('ImageNet-1k', 'data/imagenet'),
    'ADE20KDataset': ('ADE20K', 'data/ade/ADEChallengeData2016'),
    'CocoDataset': ('COCO', 'data/coco'),
}


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
    schedule: str = '?'  # the pretraining's, as logged
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


def collect_runs(paths: Iterable[str]) -> List[Run]:
    """The runs of the work_dirs found, less those that never ran."""
    runs = (read_run(w) for w in find_work_dirs(paths))
    return [run for run in runs if run is not None]


def read_run(work_dir: Path) -> Optional[Run]:
    """A work_dir's kind, method, setting and last logged metrics; None
    where it logged no training iteration and no test (a run that stopped
    before its first iteration)."""
    records = read_scalars(work_dir)
    trained = any('iter' in r for r in records)
    if not trained and not any(r.get('mode') == 'test' for r in records):
        return None
    cfg = config_data(read_config_text(work_dir))
    run = Run(Path(work_dir))
    run.kind, run.problem = _kind(cfg, {k for r in records for k in r})
    if run.kind is None:
        return run
    for key in KIND_KEYS[run.kind]:
        values = [r[key] for r in records if key in r]
        if values:
            run.metrics[key] = values[-1] * SCALES.get(key, 1)
    run.arch = _arch(cfg)
    run.data = _data(cfg, 'train_dataloader' if trained else
                     'test_dataloader')
    if run.kind == 'pretrain':
        _pretraining(run, cfg, records)
    else:
        _transfer(run, cfg)
    if run.method is None:
        run.problem = ('no method found in its config, its checkpoint or '
                       'its name (name the work_dir e.g. mrcl-simclr_...)')
    elif run.kind != 'pretrain' and not run.metrics:
        run.problem = f'no {KIND_KEYS[run.kind][0]} logged yet'
    return run


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


def _type_name(node: Dict) -> str:
    return str(node.get('type', '')).rsplit('.', 1)[-1]


def _types(cfg: Dict) -> set:
    return {t.rsplit('.', 1)[-1] for t in _walk(cfg, 'type')
            if isinstance(t, str)}


def _learner(cfg: Dict) -> Optional[str]:
    kind = _type_name(config_part(cfg, 'model'))
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
    if _type_name(backbone).endswith('ResNet'):
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


def _datasets(node: Any) -> List[Dict]:
    """The datasets a loader's ``dataset`` reads, inside any wrappers."""
    if not isinstance(node, dict):
        return []
    inner = node.get('datasets') or [node.get('dataset')]
    if any(isinstance(d, dict) for d in inner):  # Concat-, RepeatDataset
        return [leaf for d in inner for leaf in _datasets(d)]
    return [node]


def _data(cfg: Dict, loader: str) -> str:
    """The data set of a config's ``loader``: 'ImageNet-1k', 'ADE20K',
    'COCO' (:data:`BENCHMARK_DATA`), else its data roots."""
    names = []
    for dataset in _datasets(config_part(cfg, loader).get('dataset')):
        root = str(dataset.get('data_root') or '').rstrip('/')
        name, usual = BENCHMARK_DATA.get(_type_name(dataset), (None, None))
        if name and (root == usual or root.endswith('/' + usual)):
            names.append(name)
        else:
            names.append(root or _type_name(dataset) or '?')
    return ', '.join(dict.fromkeys(names)) or '?'


def _pretraining(run: Run, cfg: Dict, records: List[Dict]) -> None:
    """A pretraining's method (from its config, else its name) and how far
    it trained, as logged: the last epoch (epoch-based) or iteration of the
    training lines, of what its config planned."""
    model = config_part(cfg, 'model')
    masked = bool(config_part(model, 'backbone').get('mask_ratio', 0)) or \
        model.get('rec_head') is not None
    run.method = (_learner(cfg), masked) if _learner(cfg) else \
        _name_method(run.work_dir.resolve().name)
    loop = config_part(cfg, 'train_cfg')
    unit = 'epoch' if loop.get('max_epochs') else 'iter'
    done = max((r.get(unit, 0) for r in records if 'iter' in r), default=0)
    planned = loop.get(f'max_{unit}s')
    run.schedule = (f'{done}' if done == planned or not planned else
                    f'{done} of {planned}') + \
        (' epochs' if unit == 'epoch' else ' iterations')
    run.epochs = done if unit == 'epoch' else None


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


def _transfer(run: Run, cfg: Dict) -> None:
    """A transfer run's method and pretraining epochs, from the meta of the
    encoder its config loads (``init_cfg``'s ``checkpoint``, a
    ``pretrained``; not ``load_from``, which a test run points at the
    benchmark's own checkpoint); the method else from names."""
    encoders = [
        v for key in ('checkpoint', 'pretrained')
        for v in _walk(cfg, key) if isinstance(v, str) and v
    ]
    for ckpt in encoders:
        # A relative path is the training's cwd's; the benchmark scripts
        # put the converted encoder in the work_dir itself.
        for path in (ckpt, str(run.work_dir / osp.basename(ckpt))):
            if osp.isfile(path) and not run.method:
                run.method, run.epochs = _encoder(path)
    run.method = run.method or next(filter(None, map(
        _name_method, [run.work_dir.resolve().name] + encoders)), None)
    run.schedule = f'{run.epochs} epochs' if run.epochs else 'unknown'
