"""Checks of a training or test config before anything is built or
written, and the one-line errors of tools/train.py and tools/test.py.

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
from mmengine.registry import RUNNERS
from mmengine.runner import FlexibleRunner, Runner, find_latest_checkpoint

from .checkpoint import CheckpointError, load_checkpoint_file, model_types

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif',
                    '.tiff', '.webp')


# Top-level keys mmengine reads from the config besides the arguments of
# Runner and FlexibleRunner: ``runner_type`` (tools/train.py) and what
# Runner reads from ``self.cfg`` (``compile`` in ``_maybe_compile``, the
# others when it wraps the model).
RUNNER_CFG_KEYS = ('runner_type', 'compile', 'model_wrapper_cfg', 'sync_bn',
                   'find_unused_parameters', 'activation_checkpointing',
                   'efficient_conv_bn_eval')


class ConfigError(ValueError):
    """A config that cannot train or test; the message is one line."""


def check_options(cfg: Config, options: dict) -> None:
    """``--cfg-options`` keys must start at a key the config has or mmengine
    reads: mmengine would add a misspelt one (``train_dataloder.batch_size
    =8``) and never use it. ``compile`` is not an argument of ``Runner``
    (``Runner.from_cfg`` passes the whole config, where ``train`` reads it),
    hence the list."""
    known = set(cfg.keys()).union(RUNNER_CFG_KEYS,
                                  inspect.signature(Runner).parameters,
                                  inspect.signature(FlexibleRunner).parameters)
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


def check_test_config(cfg: Config) -> None:
    """The same for tools/test.py: work_dir, the checkpoint (``load_from``)
    and that the test data folder exists."""
    check_work_dir(cfg.work_dir)
    check_checkpoint(cfg, 'tests')
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{cfg.filename} has no test_dataloader (test a '
                          'benchmark config, not a pretraining one)')
    data_folder(inner_dataset(cfg.test_dataloader), 'test_dataloader.dataset')


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
    if 'compile' in cfg:  # mmengine asserts it deep in train()
        checks.append(('compile', cfg.compile,
                       lambda v: isinstance(v, (bool, dict)),
                       "True, False or a dict of torch.compile's options"))
    loop = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        if key in loop:
            checks.append((f'train_cfg.{key}', loop[key],
                           lambda v: isinstance(v, int) and v >= 1,
                           'an integer >= 1'))
    for key, value, ok, allowed in checks:
        if not ok(value):
            raise ConfigError(f'{key} = {value!r}: must be {allowed}')


def check_checkpoint(cfg: Config, does: str = 'trains') -> None:
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
            f'this config {does} {want}')
    if cfg.get('resume') and not {'optimizer', 'meta'} <= set(ckpt):
        raise ConfigError(
            f'resume {path}: not a training checkpoint (no optimizer/meta, '
            f'keys: {sorted(ckpt)[:6]}); use load_from to start from its '
            'weights')


def check_dataset(loader_cfg) -> None:
    """A folder or annotation dataset (mmpretrain's ``CustomDataset`` and
    its kind): the folder exists, every class folder and the annotation's
    files have images, and there are at least ``batch_size`` of them."""
    dataset = inner_dataset(loader_cfg)
    folder = data_folder(dataset, 'train_dataloader.dataset')
    root = dataset.get('data_root') or ''
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


def inner_dataset(loader_cfg):
    """The dataset config inside RepeatDataset and the like."""
    dataset = loader_cfg.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset


def data_folder(dataset, key: str) -> str:
    """The image folder of a dataset config, which must exist: data_root +
    data_prefix (or mmpretrain's ImageNet ``split``)."""
    prefix = dataset.get('data_prefix') or dataset.get('split') or ''
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', ''))
    folder = osp.join(dataset.get('data_root') or '', prefix)
    if not osp.isdir(folder):
        raise ConfigError(f'{key}: data folder {folder} does not exist '
                          '(data_root + data_prefix; set MRCL_DATA?)')
    return folder


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


# -- the tools' one-line errors ----------------------------------------------


def last_line(error: BaseException) -> str:
    """The message of an error, also one re-raised from a data worker."""
    text = error.args[0] if isinstance(error, KeyError) else str(error)
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def build_runner(cfg: Config):
    """``Runner.from_cfg``, or the ``runner_type``'s; an unknown type or
    argument is one :class:`ConfigError` line."""
    try:
        return (Runner.from_cfg(cfg)
                if 'runner_type' not in cfg else RUNNERS.build(cfg))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(
            f'the config does not build: {last_line(e)}') from None


def run_logged(runner, step):
    """``step()`` (``runner.train``, ``runner.test``); an error it raises is
    logged with its traceback in the run's log and ends the tool with one
    ``error:`` line."""
    try:
        return step()
    except (AssertionError, FloatingPointError, OSError, RuntimeError,
            ValueError) as e:
        runner.logger.exception(f'{step.__name__} stopped')
        raise SystemExit(f'error: {last_line(e)}')


def one_line_errors(main) -> None:
    """Run a tool's ``main``; a :class:`ConfigError` or
    :class:`CheckpointError` ends it with one ``error:`` line."""
    try:
        main()
    except (ConfigError, CheckpointError) as e:
        raise SystemExit(f'error: {e}')
