"""Checks of a training config before anything is built or written.

Each failure is one :class:`ConfigError` line naming the config key, the
file or folder, the value and what is allowed, where mmengine would
otherwise train silently on the wrong thing (resume from nothing, a
misspelt top-level key, a checkpoint of another model) or fail deep in a
worker. What mmengine and mmcv already report clearly (an unknown
``type``, a misspelt argument, an image that cannot be decoded) is left to
them.
"""
import inspect
import os
import os.path as osp
import uuid

from mmengine.config import Config
from mmengine.runner import Runner, find_latest_checkpoint

from .checkpoint import load_checkpoint_file, model_types

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


class ConfigError(ValueError):
    """A config that cannot train; the message is one line."""


def check_options(cfg: Config, options: dict) -> None:
    """``--cfg-options`` keys must start at a key the config has or the
    Runner takes: mmengine would add a misspelt one
    (``train_dataloder.batch_size=8``) and never use it."""
    known = set(cfg.keys()) | set(inspect.signature(Runner).parameters)
    for key in options or {}:
        top = key.split('.')[0]
        if top not in known:
            raise ConfigError(
                f'--cfg-options {key}: the config has no key {top!r} '
                f'(misspelt? its keys: {", ".join(sorted(cfg.keys()))})')


def check_train_config(cfg: Config) -> None:
    """Raise :class:`ConfigError` for the first problem found, in the order
    work_dir, hyper-parameters, checkpoint, data."""
    check_work_dir(cfg.work_dir)
    check_ranges(cfg)
    check_checkpoint(cfg)
    check_dataset(cfg.train_dataloader)


def check_work_dir(work_dir: str) -> None:
    try:
        os.makedirs(work_dir, exist_ok=True)
        probe = osp.join(work_dir, f'.write_test_{uuid.uuid4().hex}')
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f'work_dir {work_dir} is not writable: '
                          f'{e.strerror or e}') from None


def check_ranges(cfg: Config) -> None:
    """The schedule's numbers (the model checks its own when built)."""
    checks = [
        ('train_dataloader.batch_size', cfg.train_dataloader.get(
            'batch_size'), lambda v: isinstance(v, int) and v >= 1,
         'an integer >= 1'),
        ('optim_wrapper.optimizer.lr', cfg.optim_wrapper.get(
            'optimizer', {}).get('lr'), lambda v: v is None or v > 0, '> 0'),
    ]
    loop = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        if key in loop:
            checks.append((f'train_cfg.{key}', loop[key],
                           lambda v: isinstance(v, int) and v >= 1,
                           'an integer >= 1'))
    for key, value, ok, allowed in checks:
        if not ok(value):
            raise ConfigError(f'{key} = {value!r}: must be {allowed}')


def check_checkpoint(cfg: Config) -> None:
    """``--resume`` needs a checkpoint; ``resume``/``load_from`` must name a
    checkpoint of this model (loaded weights-only: a pickle is refused)."""
    path, key = cfg.get('load_from'), 'load_from'
    if cfg.get('resume') and path is None:
        path, key = find_latest_checkpoint(cfg.work_dir), 'resume'
        if not path:
            raise ConfigError(
                f'--resume: no checkpoint in work_dir {cfg.work_dir} (no '
                'last_checkpoint file); give one with --resume PATH')
    if path is None or '://' in str(path):
        return
    ckpt = load_checkpoint_file(path)  # raises a one-line CheckpointError
    want = cfg.model.get('type')
    types = model_types(ckpt)
    if want and types and want not in types:
        raise ConfigError(
            f'{key} {path}: a checkpoint of another model ({types[0]}), '
            f'this config trains {want}')
    if cfg.get('resume') and not {'optimizer', 'meta'} <= set(ckpt):
        raise ConfigError(
            f'resume {path}: not a training checkpoint (no optimizer/meta, '
            f'keys: {sorted(ckpt)[:6]}); use load_from to start from its '
            'weights')


def check_dataset(loader_cfg) -> None:
    """A folder or annotation dataset (mmpretrain's ``CustomDataset`` and
    its kind): the folder exists, every class folder and the annotation's
    files have images, and there are at least ``batch_size`` of them."""
    dataset = loader_cfg.dataset
    while 'dataset' in dataset:  # RepeatDataset and the like
        dataset = dataset.dataset
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', ''))
    folder = osp.join(root, prefix)
    key = 'train_dataloader.dataset'
    if not osp.isdir(folder):
        raise ConfigError(f'{key}: data folder {folder} does not exist '
                          '(data_root + data_prefix; set MRCL_DATA?)')
    ann_file = dataset.get('ann_file') or ''
    if ann_file:
        files = _annotated_files(osp.join(root, ann_file), folder)
    else:
        files = _folder_images(folder)
    batch_size = loader_cfg.get('batch_size', 1)
    if len(files) < batch_size:
        raise ConfigError(
            f'train_dataloader.batch_size = {batch_size} is larger than the '
            f'dataset ({len(files)} images in {folder})')


def _annotated_files(ann_file: str, folder: str) -> list:
    if not osp.isfile(ann_file):
        raise ConfigError(f'train_dataloader.dataset.ann_file {ann_file} '
                          'does not exist')
    with open(ann_file) as f:
        names = [line.split()[0] for line in f if line.strip()]
    for line_no, name in enumerate(names, 1):
        if not osp.isfile(osp.join(folder, name)):
            raise ConfigError(
                f'{ann_file} line {line_no}: {name} is not in {folder}')
    if not names:
        raise ConfigError(f'{ann_file} lists no images')
    return names


def _folder_images(folder: str) -> list:
    classes = sorted(e.path for e in os.scandir(folder) if e.is_dir())
    images = []
    for class_dir in classes or [folder]:
        found = [
            e.name for e in os.scandir(class_dir)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not found:
            raise ConfigError(
                f'train_dataloader.dataset: {class_dir} has no images '
                f'({", ".join(IMAGE_EXTENSIONS)})')
        images += found
    return images
