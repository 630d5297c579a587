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
import copy
import inspect
import os
import os.path as osp
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import DATASETS, LOOPS, RUNNERS
from mmengine.runner import (EpochBasedTrainLoop, FlexibleRunner,
                             IterBasedTrainLoop, Runner, TestLoop, ValLoop)
from mmpretrain.datasets import CustomDataset

from .checkpoints import (CheckpointError, check_zero_folder,
                          is_zero_checkpoint, latest_checkpoint,
                          load_checkpoint, saved_model_type)
from .checkpoints.config_text import code_in
from .datasets import STL10, STL10FileError

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


class AddedKey(NamedTuple):
    """A ``--cfg-options`` key that adds ``part`` to the dict at ``where``
    (``train_cfg``, ``model.backbone``, ``custom_hooks.2``), which has
    ``keys`` and, where it says, a ``type``."""
    where: str
    part: str
    keys: List[str]
    type: Optional[str]


def check_options(cfg: Config, options: dict) -> Dict[str, AddedKey]:
    """``--cfg-options`` keys must start at a key the config has or mmengine
    reads: mmengine would add a misspelt one (``train_dataloder.batch_size
    =8``) and never use it. ``compile`` is not an argument of ``Runner``
    (``Runner.from_cfg`` passes the whole config, where ``train`` reads it),
    hence the list.

    A key added below the top is often meant (``model.backbone.init_cfg.
    checkpoint``, a hook's field), and only the class that takes its dict
    can tell: it is refused here only where that class is certain, in the
    loops (``train_cfg``, ``val_cfg``, ``test_cfg``), which mmengine builds
    inside ``Runner.train``, after the run folder; :func:`clean_refusals`
    names the others when their build refuses them.

    Returns:
        dict: ``{option: AddedKey}`` of the keys added below the top.
    """
    known = set(cfg.keys()).union(RUNNER_CFG_KEYS,
                                  inspect.signature(Runner).parameters,
                                  inspect.signature(FlexibleRunner).parameters)
    added = {}
    for key in options or {}:
        top = key.split('.')[0]
        if top not in known:
            raise ConfigError(
                f'--cfg-options {key}: the config has no key {top!r} '
                f'(misspelt? its keys: {", ".join(sorted(cfg.keys()))})')
        new = _added_key(cfg, key)
        if new:
            added[key] = new
    merged = copy.deepcopy(cfg)  # the loop type the options leave
    merged.merge_from_dict(options or {})
    for key, new in added.items():
        loop = _loop_class(merged, new.where)
        if loop is not None and not _takes(loop, new.part):
            raise _not_taken(key, new, loop.__name__)
    return added


def _added_key(cfg: Config, key: str) -> Optional[AddedKey]:
    """What ``key`` adds below the config's top, or None where it changes a
    key the config has (or adds a top-level one)."""
    parts = key.split('.')
    node = cfg.get(parts[0])
    for depth, part in enumerate(parts[1:], 1):
        if isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict):
            type_ = node.get('type')
            return AddedKey('.'.join(parts[:depth]), part,
                            sorted(map(str, node)),
                            getattr(type_, '__name__', type_))
        else:
            return None  # replaces a value: its build says what is wrong
    return None


def _loop_class(cfg: Config, where: str) -> Optional[type]:
    """The class mmengine's Runner builds the loop ``cfg[where]`` with
    (``Runner.build_train_loop`` and the others), or None for other keys."""
    if where not in ('train_cfg', 'val_cfg', 'test_cfg'):
        return None
    loop = cfg.get(where) or {}
    if 'type' in loop:
        return _registered(LOOPS, loop['type'],
                           loop.get('_scope_', cfg.get('default_scope')))
    if where == 'val_cfg':
        return ValLoop
    if where == 'test_cfg':
        return TestLoop
    if 'by_epoch' not in loop:
        return None  # mmengine refuses it with its own message
    return EpochBasedTrainLoop if loop['by_epoch'] else IterBasedTrainLoop


def _takes(cls: type, name: str) -> bool:
    """Whether building ``cls`` from a dict can use the key ``name``: an
    argument, ``**kwargs``, or what the build takes out first."""
    if name in ('type', '_scope_', 'by_epoch'):
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD
               for p in inspect.signature(cls).parameters.values())


def _not_taken(option: str, new: AddedKey, cls_name: str) -> ConfigError:
    return ConfigError(
        f'--cfg-options {option}: {cls_name} takes no argument {new.part!r} '
        f'(misspelt? {new.where} has: {", ".join(new.keys)})')


def check_train_config(cfg: Config) -> None:
    """Raise :class:`ConfigError` for the first problem found, in the order
    work_dir, hyper-parameters, checkpoint, data."""
    check_work_dir(cfg.work_dir)
    check_ranges(cfg)
    check_checkpoint(cfg)
    check_pretrained(cfg)
    check_dataset(cfg)


def check_test_config(cfg: Config) -> None:
    """The same for tools/test.py: work_dir, the checkpoint (``load_from``)
    and the test data, as its dataset class will read it."""
    check_work_dir(cfg.work_dir)
    check_checkpoint(cfg, 'tests')
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{cfg.filename} has no test_dataloader (test a '
                          'benchmark config, not a pretraining one)')
    _checked_count(cfg.test_dataloader.dataset, 'test_dataloader.dataset',
                   cfg)


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
    checkpoint of this model, read as data: a file, a URL (fetched, then
    read), or a DeepSpeed folder, each of whose files is read before
    DeepSpeed's own loader unpickles them."""
    path, key = cfg.get('load_from'), 'load_from'
    if cfg.get('resume') and path is None:
        path, key = latest_checkpoint(cfg.work_dir), 'resume'
        if not path:
            raise ConfigError(
                f'--resume: no checkpoint in work_dir {cfg.work_dir} (no '
                'last_checkpoint, iter_N.pth or epoch_N.pth); give one with '
                '--resume PATH')
    if path is None:
        return
    key = 'resume' if cfg.get('resume') else key
    deepspeed = (cfg.get('strategy') or {}).get('type') == 'DeepSpeedStrategy'
    if is_zero_checkpoint(path):
        if not deepspeed and cfg.get('resume'):
            raise ConfigError(
                f'resume {path}: a DeepSpeed checkpoint folder, and this '
                'config trains without DeepSpeed; use load_from to start '
                'from its weights')
        ckpt = check_zero_folder(path)  # raises a one-line CheckpointError
        needs = {'meta', 'optim_wrapper'}
    else:
        ckpt = load_checkpoint(path)  # raises a one-line CheckpointError
        needs = {'meta', 'optimizer'}
    want = cfg.model.get('type')
    want = want.rsplit('.', 1)[-1] if isinstance(want, str) else None
    saved = saved_model_type(ckpt)
    if want and saved and want != saved:
        raise ConfigError(
            f'{key} {path}: a checkpoint of another model ({saved}), '
            f'this config {does} {want}')
    if not cfg.get('resume'):
        return
    if not needs <= set(ckpt):
        raise ConfigError(
            f'resume {path}: not a training checkpoint (no '
            f'{"/".join(sorted(needs - set(ckpt)))}, keys: '
            f'{sorted(ckpt)[:6]}); use load_from to start from its weights')
    if deepspeed and not is_zero_checkpoint(path):
        raise ConfigError(
            f'resume {path}: a checkpoint file, and this config trains with '
            'DeepSpeed, which resumes from its own checkpoint folders')
    for name in ('epoch', 'iter'):
        if type(ckpt['meta'].get(name)) is not int:
            raise ConfigError(f"resume {path}: its meta['{name}'] is not an "
                              'integer, so it says not where to continue')
    code = code_in(ckpt['meta'].get('config', ''))
    if code:
        raise ConfigError(
            f"resume {path}: its meta['config'] is Python code ({code[:80]}), "
            'which a saved config never is; nothing in it was run')


def check_pretrained(cfg: Config) -> None:
    """Each ``init_cfg=dict(type='Pretrained', checkpoint=...)`` in the
    model names a checkpoint that reads as data: a file or a URL (fetched
    into torch hub's cache, where the model's init finds it again)."""
    if cfg.get('resume') or cfg.get('load_from'):
        return  # the Runner's checkpoint replaces the init
    todo = [cfg.get('model')]
    while todo:
        node = todo.pop()
        if isinstance(node, (list, tuple)):
            todo.extend(node)
        elif isinstance(node, dict):
            if node.get('type') == 'Pretrained' and isinstance(
                    node.get('checkpoint'), str):
                load_checkpoint(node['checkpoint'])  # one-line errors
            todo.extend(node.values())


def check_dataset(cfg: Config) -> None:
    """The train data as its dataset class will read it.

    The dataset is built lazily (``lazy_init=True``, no pipeline), so its
    class resolves ``split``, ``data_root``, ``data_prefix`` and
    ``ann_file`` as it will when training (mmpretrain's ``ImageNet`` fills in
    ``train/`` and ``meta/train.txt`` from ``split='train'``); the checks
    then read those paths. Known kinds: mmpretrain's ``CustomDataset`` and
    its subclasses (the folder exists, every class folder and every file the
    annotation names is there, at least ``batch_size`` images), this
    plugin's ``STL10`` (its files are whole), and the wrappers
    ``ConcatDataset``/``RepeatDataset``/``ClassBalancedDataset`` around them.
    Any other type is left to its own loader: nothing is refused that this
    cannot know."""
    loader = cfg.train_dataloader
    found = _checked_count(loader.dataset, 'train_dataloader.dataset', cfg)
    batch_size = loader.get('batch_size', 1)
    if found is not None and found[0] < batch_size:
        raise ConfigError(
            f'train_dataloader.batch_size = {batch_size} is larger than the '
            f'dataset ({found[0]} images in {found[1]})')


def _checked_count(dataset, key: str,
                   cfg: Config) -> Optional[Tuple[int, str]]:
    """The number of samples ``dataset`` (a part of ``cfg``) gives and where
    they are, once its files are checked; None where it is not known."""
    if 'datasets' in dataset:  # ConcatDataset
        found = [
            _checked_count(d, f'{key}.datasets.{i}', cfg)
            for i, d in enumerate(dataset.datasets)
        ]
        if None in found:
            return None
        return sum(n for n, _ in found), ', '.join(w for _, w in found)
    if 'dataset' in dataset:  # RepeatDataset, ClassBalancedDataset
        found = _checked_count(dataset.dataset, f'{key}.dataset', cfg)
        if found is None or dataset.get('type') != 'RepeatDataset':
            return None  # ClassBalancedDataset's length depends on labels
        return found[0] * dataset.get('times', 1), found[1]
    # `mmpretrain::` inheritance stamps its scope on the base's dicts
    cls = _registered(DATASETS, dataset.get('type'),
                      dataset.get('_scope_', cfg.get('default_scope')))
    if cls is None or not issubclass(cls, (CustomDataset, STL10)):
        return None
    args = {k: v for k, v in dataset.items() if k not in ('type', '_scope_')}
    try:
        built = cls(**{**args, 'lazy_init': True, 'pipeline': []})
    except STL10FileError as e:
        raise ConfigError(f'{key}: {e}') from None
    except (AssertionError, TypeError, ValueError) as e:
        raise ConfigError(f'{key} does not build: {e}') from None
    if isinstance(built, STL10):
        count, where = sum(built.counts.values()), built.folder
    else:
        count = len(_custom_dataset_files(built, key, cfg))
        where = built.img_prefix
    indices = dataset.get('indices')
    if isinstance(indices, int):
        count = min(count, indices)
    elif indices is not None:
        count = len(indices)
    return count, where


def _registered(registry, type_, scope) -> Optional[type]:
    """The class ``type_`` names in ``registry`` under ``scope``."""
    if isinstance(type_, type):
        return type_
    with registry.switch_scope_and_registry(scope) as found:
        return found.get(type_)


def mrcl_data_hint(cfg: Config, folder: str) -> str:
    """'set MRCL_DATA? ...' where ``folder`` can come from ``$MRCL_DATA``:
    the config's text (its file and bases) reads it and ``folder`` is under
    the value it read (the environment's, else the config's default);
    else '' (the folder was given some other way)."""
    text = cfg.text or ''
    if 'MRCL_DATA' not in text:
        return ''
    default = re.search(r'\$MRCL_DATA\s*:\s*([^}]*?)\s*}}', text)
    value = os.environ.get('MRCL_DATA', default[1] if default else '')
    if value and not str(folder).startswith(value.rstrip('/')):
        return ''
    now = os.environ.get('MRCL_DATA')
    return 'set MRCL_DATA? the config reads it, ' + (f'now {now}' if now
                                                      else 'unset here')


def _custom_dataset_files(dataset: CustomDataset, key: str,
                          cfg: Config) -> list:
    """The image files a lazily built ``CustomDataset`` will read."""
    folder = dataset.img_prefix
    if folder and not osp.isdir(folder):
        hint = mrcl_data_hint(cfg, folder)
        raise ConfigError(f'{key}: data folder {folder} does not exist '
                          f'(data_root + data_prefix{hint and "; " + hint})')
    if dataset.ann_file:
        return _annotated_files(dataset.ann_file, folder, dataset.with_label,
                                key)
    return _folder_images(folder, key, dataset.with_label)


def _annotated_files(ann_file: str, folder: str, with_label: bool,
                     key: str) -> list:
    if not osp.isfile(ann_file):
        raise ConfigError(f'{key}.ann_file {ann_file} does not exist')
    with open(ann_file) as f:
        lines = [line.strip() for line in f if line.strip()]
    # as CustomDataset.load_data_list splits them
    names = [line.rsplit(' ', 1)[0] if with_label else line for line in lines]
    if not names:
        raise ConfigError(f'{ann_file} lists no images')
    listings = {}  # one listing per directory, not one stat per file
    for line_no, name in enumerate(names, 1):
        directory, base = osp.split(osp.join(folder, name))
        if directory not in listings:
            listings[directory] = (set(os.listdir(directory))
                                   if osp.isdir(directory) else set())
        if base not in listings[directory]:
            raise ConfigError(
                f'{ann_file} line {line_no}: {name} is not in {folder}')
    return names


def _folder_images(folder: str, key: str, with_label: bool) -> list:
    """Images in class folders (with labels: each must have one), or
    anywhere under ``folder`` (``with_label=False``)."""
    if not with_label:
        images = [
            name for _, _, files in os.walk(folder, followlinks=True)
            for name in files if name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not images:
            raise ConfigError(f'{key}: {folder} has no images '
                              f'({", ".join(IMAGE_EXTENSIONS)})')
        return images
    classes = sorted(e.path for e in os.scandir(folder) if e.is_dir())
    images = []
    for class_dir in classes or [folder]:
        found = [
            e.name for e in os.scandir(class_dir)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        ]
        if not found:
            raise ConfigError(f'{key}: {class_dir} has no images '
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
    # an unknown type or key, a package the config needs (DeepSpeed)
    except (AssertionError, ImportError, KeyError, TypeError,
            ValueError) as e:
        raise ConfigError(
            f'the config does not build: {last_line(e)}') from None


# mmengine's words for a keyword argument a class does not take
UNEXPECTED = re.compile(
    r"(?:(\w+)\.__init__\(\) )?got an unexpected keyword argument '(\w+)'")
# what a Runner's start writes: <timestamp>/, and <timestamp>.py for a
# config without a file name
STARTED = re.compile(r'^\d{8}_\d{6}(\.py)?$')


@contextmanager
def clean_refusals(cfg: Config, added: Optional[Dict[str, AddedKey]] = None):
    """Around a Runner's build and its ``train``: where the config is
    refused there (a :class:`ConfigError` of :func:`build_runner`, or a
    ``TypeError`` of a class that takes no argument a ``--cfg-options`` key
    of ``added`` gave it; the optimizer and the schedulers are built in
    ``train``), what the Runner's start wrote goes (its ``<timestamp>/``
    folder, and its copy of the config, restored where an earlier run left
    one), and the error names the option: a refused start writes nothing.
    A run that saved a checkpoint keeps everything."""
    work_dir = cfg.work_dir
    before = set(os.listdir(work_dir))
    copied = Path(work_dir, osp.basename(cfg.filename or ''))
    earlier = copied.read_bytes() if copied.is_file() else None
    try:
        yield
    except (ConfigError, TypeError) as e:
        option = _option_refused(e, added or {})
        if isinstance(e, TypeError) and option is None:
            raise  # not the config's
        new = set(os.listdir(work_dir)) - before
        if not any(name.endswith('.pth') for name in new):
            for path in (Path(work_dir, n) for n in new if STARTED.match(n)):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            if earlier is not None:
                copied.write_bytes(earlier)
            elif copied.name in new:
                copied.unlink()
        if option is None:
            raise
        raise option from None


def _option_refused(error: Exception,
                    added: Dict[str, AddedKey]) -> Optional[ConfigError]:
    """The error naming the option whose added key a class refused."""
    found = UNEXPECTED.search(str(error))
    for option, new in added.items():
        if found and new.part == found[2]:
            return _not_taken(option, new, new.type or found[1] or 'it')
    return None


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
