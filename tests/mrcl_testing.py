"""Small builders shared by the MRCL tests: real CIFAR-10 views and tiny
models (ViT width 64, 32 px images in 4 px patches, 64 patches)."""
import contextlib
import copy
import itertools
import json
import os
import runpy
import socket
import sys
from collections import OrderedDict
from pathlib import Path

import mmcv
import numpy as np
import torch
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.utils import ManagerMixin

import mrcl_plugin  # noqa: F401
from mrcl_plugin.models import LEARNERS

DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
CIFAR = DATA / 'cls' / 'cifar10'
MEAN = torch.tensor([125.307, 122.961, 113.8575]).view(1, 3, 1, 1)
STD = torch.tensor([51.5865, 50.847, 51.255]).view(1, 3, 1, 1)

ARCH = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
LN = dict(type='LN', eps=1e-6)


def cifar_images(n: int = 8, split: str = 'test') -> torch.Tensor:
    """n real CIFAR-10 images, one class after another, (n, 3, 32, 32),
    normalised as the configs do."""
    classes = sorted(p.name for p in (CIFAR / split).iterdir())
    imgs = []
    for i in range(n):
        path = CIFAR / split / classes[i % len(classes)] / f'{i // 10:04d}.jpg'
        imgs.append(mmcv.imread(str(path), channel_order='rgb'))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float()
    return (x - MEAN) / STD


def two_views(n: int = 8) -> list:
    """Two different real views of n images: the image, and its mirror with
    a brightness shift."""
    x = cifar_images(n)
    return [x, torch.flip(x, dims=[3]) * 0.9 + 0.1]


def backbone_cfg(mask_ratio=0.2, **kw) -> dict:
    cfg = dict(
        type='MRCLViT',
        arch=ARCH,
        img_size=32,
        patch_size=4,
        mask_ratio=mask_ratio,
        norm_cfg=LN)
    cfg.update(kw)
    return cfg


def decoder_cfg(**kw) -> dict:
    cfg = dict(
        type='MAEPretrainDecoder',
        num_patches=64,
        patch_size=4,
        in_chans=3,
        embed_dim=64,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=4,
        mlp_ratio=2.)
    cfg.update(kw)
    return cfg


def rec_head_cfg(alpha=1.0, lambd=1.0, **kw) -> dict:
    cfg = dict(
        type='MRCLReconstructionHead', alpha=alpha, lambd=lambd, patch_size=4)
    cfg.update(kw)
    return cfg


NECK = dict(
    type='NonLinearNeck',
    in_channels=64,
    hid_channels=128,
    out_channels=128,
    num_layers=2,
    with_avg_pool=False,
    norm_cfg=dict(type='BN1d'))
PRED = dict(NECK, in_channels=128)
HEADS = dict(
    barlowtwins=dict(
        type='LatentCrossCorrelationHead',
        in_channels=128,
        loss=dict(type='CrossCorrelationLoss')),
    simclr=dict(
        type='ContrastiveHead',
        loss=dict(type='CrossEntropyLoss'),
        temperature=0.1),
    byol=dict(
        type='LatentPredictHead',
        loss=dict(type='CosineSimilarityLoss'),
        predictor=PRED),
    mocov3=dict(
        type='MoCoV3Head',
        predictor=PRED,
        loss=dict(type='CrossEntropyLoss', loss_weight=0.4),
        temperature=0.2),
)


def mrcl_cfg(learner='barlowtwins', mask_ratio=0.2, alpha=1.0, lambd=1.0,
             reconstruction=True, **kw) -> dict:
    cfg = dict(
        type=LEARNERS[learner].__name__,
        backbone=backbone_cfg(mask_ratio),
        neck=copy.deepcopy(NECK),
        head=copy.deepcopy(HEADS[learner]))
    if reconstruction:
        cfg.update(decoder=decoder_cfg(), rec_head=rec_head_cfg(alpha, lambd))
    cfg.update(kw)
    return cfg


def build(cfg: dict):
    """Build a model from the mmpretrain registry, initialised, SyncBN-free.
    mmpretrain stays the default scope for the rest of the test (until
    :func:`mmengine_state_restored` of tests/conftest.py ends it)."""
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(cfg)))
    model.init_weights()
    return model


def set_max_iters(max_iters: int = 100) -> None:
    """CosineEMA reads max_iters from the message hub, as in training."""
    from mmengine.logging import MessageHub
    MessageHub.get_current_instance().update_info('max_iters', max_iters)


# -- mmengine's process-wide state --------------------------------------------


def manager_classes(cls=ManagerMixin):
    """``cls`` and every subclass imported so far: each class of mmengine's
    ``ManagerMixin`` keeps its own instances (``DefaultScope``,
    ``MessageHub``, ``MMLogger``, ``Visualizer`` and each of its
    subclasses: mmpretrain's, mmseg's, mmdet's)."""
    yield cls
    for sub in cls.__subclasses__():
        yield from manager_classes(sub)


@contextlib.contextmanager
def mmengine_state_restored():
    """On exit, mmengine's process-wide state as it was on entry: the
    instances of every ``ManagerMixin`` class, those made inside removed
    and the current one (the latest) restored. The latest ``DefaultScope``
    is the scope every registry build reads; a Runner makes one of each
    class, ``init_default_scope`` a ``DefaultScope``. The classes' own
    ``_instance_dict`` is what ``get_current_instance`` reads
    (mmengine/utils/manager.py), replaced whole as mmengine's
    ``DefaultScope.overwrite_default_scope`` does."""
    saved = {cls: list(cls._instance_dict.items())
             for cls in manager_classes()}
    try:
        yield
    finally:
        # a class imported inside had no instances on entry
        for cls in manager_classes():
            cls._instance_dict = OrderedDict(saved.get(cls, ()))


# -- tools/train.py on the small CIFAR-10 config, shrunk ----------------------

ROOT = Path(__file__).resolve().parents[1]
SMALL_CIFAR = ('configs/mrcl/'
               'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
# The ARCH sizes above, batch 8, no workers, a log line per iteration with
# the iteration's own losses (window 1), a fixed seed.
TINY_TRAIN_OPTIONS = dict({
    'model.backbone.arch.embed_dims': 64,
    'model.backbone.arch.num_layers': 2,
    'model.backbone.arch.num_heads': 4,
    'model.backbone.arch.feedforward_channels': 128,
    'model.decoder.embed_dim': 64,
    'model.neck.in_channels': 64,
    'train_dataloader.batch_size': 8,
    'train_dataloader.num_workers': 0,
    'train_dataloader.persistent_workers': False,
    'train_cfg.max_iters': 4,
    'default_hooks.checkpoint.interval': 2,
    'default_hooks.logger.interval': 1,
    'log_processor.window_size': 1,
    'randomness.seed': 0,
    # the small config's KNNHook (third in custom_hooks) on 2 images a class
    'custom_hooks.2.bank_per_class': 2,
    'custom_hooks.2.query_per_class': 2,
    'custom_hooks.2.num_workers': 0,
})


_RUNNERS = itertools.count()


def free_port() -> int:
    """A free TCP port on localhost, for a process group's rendezvous
    (torchrun's ``--master_port=0`` hangs on gloo)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def experiment_name(tag: str = 'test') -> str:
    """A Runner ``experiment_name`` no other Runner of this test process
    has. mmengine keys its global ``Visualizer``, ``MessageHub`` and logger
    by the experiment name, ``<config>_<timestamp>`` by default with a
    one-second timestamp: two Runners of one config started in the same
    second of one process share the first one's visualizer, and the second
    run's ``vis_data`` lands in the first one's folder. A real process
    starts one Runner; the tests start hundreds, so every in-process Runner
    gets its own name."""
    return f'{tag}_{next(_RUNNERS)}'


def train_command(work_dir, *extra, config=SMALL_CIFAR, **options) -> list:
    """``python tools/train.py CONFIG --work-dir W [extra] --cfg-options``
    with :data:`TINY_TRAIN_OPTIONS` updated by ``options``, under an
    :func:`experiment_name` of its own (tools/train.py runs in the test
    process in :func:`run_tool`)."""
    opts = dict(TINY_TRAIN_OPTIONS, experiment_name=experiment_name('train'),
                **options)
    return [
        sys.executable, 'tools/train.py', str(config), '--work-dir',
        str(work_dir), *map(str, extra), '--cfg-options',
        *(f'{k}={v}' for k, v in opts.items())
    ]


def run_tool(script, argv: list) -> str:
    """Run tools/<script> (or the script at a path, e.g. mmpretrain's own
    train.py) in this process (``runpy``, as ``python script`` would) with
    ``argv``; its one-line error, or '' if it finished."""
    path = ROOT / 'tools' / script if isinstance(script, str) else script
    old = sys.argv
    sys.argv = [str(path), *map(str, argv)]
    try:
        runpy.run_path(str(path), run_name='__main__')
    except SystemExit as e:
        assert e.code not in (0, None)
        message = str(e.code)
        assert '\n' not in message, message
        return message
    finally:
        sys.argv = old
    return ''


def train_env() -> dict:
    """The environment for a tools/ subprocess: this checkout's code first,
    the real sample data."""
    return dict(os.environ, PYTHONPATH=str(ROOT), MRCL_DATA=str(DATA))


def logged_iterations(work_dir) -> dict:
    """{iteration: logged scalars} from every run's json log in work_dir."""
    logs = {}
    for path in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if 'iter' in record:  # not the kNN hook's lines
                logs[record['iter']] = record
    return logs


def mim_finds(found: Path, real: Path) -> bool:
    """``found`` (a file mim found under ``mrcl_plugin/.mim``) is ``real``:
    the checkout's own file through its ``.mim`` links, or one of setup.py's
    editable-install stubs, which names it."""
    return Path(found).resolve() == real or repr(str(real)) in Path(
        found).read_text()


# -- STL-10 in its release's binary layout ------------------------------------

TINY_IMAGENET = DATA / 'cls' / 'tiny_imagenet_10cls'


def stl10_images(n: int, offset: int = 0) -> np.ndarray:
    """n real Tiny-ImageNet train images resized to STL-10's 96 px,
    (n, 96, 96, 3) BGR uint8, one class after another; and their labels."""
    lines = (TINY_IMAGENET / 'meta' / 'train.txt').read_text().splitlines()
    picked = lines[offset::len(lines) // n][:n]
    images, labels = [], []
    for line in picked:
        name, label = line.rsplit(' ', 1)
        img = mmcv.imread(str(TINY_IMAGENET / 'train' / name), 'color')
        images.append(mmcv.imresize(img, (96, 96)))
        labels.append(int(label))
    return np.stack(images), np.array(labels)


def write_stl10(root: Path, train: int = 8, unlabeled: int = 8,
                test: int = 4) -> dict:
    """``root/stl10_binary/{train,unlabeled,test}_X.bin`` and the label
    files as the release writes them: uint8 RGB, each image channel by
    channel, column-major; labels 1..10. Returns {part: (BGR, labels)}."""
    folder = root / 'stl10_binary'
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for offset, (part, n) in enumerate(
            [('train', train), ('unlabeled', unlabeled), ('test', test)]):
        bgr, labels = stl10_images(n, offset)
        # (N, H, W, C) BGR -> RGB -> (N, C, W, H): C-order bytes of that are
        # the column-major (H, W, C) planes of the release
        planes = bgr[..., ::-1].transpose(0, 3, 2, 1)
        (folder / f'{part}_X.bin').write_bytes(
            np.ascontiguousarray(planes).tobytes())
        if part != 'unlabeled':
            (folder / f'{part}_y.bin').write_bytes(
                (labels + 1).astype(np.uint8).tobytes())
        written[part] = (bgr, labels)
    return written


# -- a config change as command-line --cfg-options ----------------------------


def cfg_options(original, changed, prefix: str = '') -> list:
    """``key=value`` strings that turn config dict ``original`` into
    ``changed`` through mmengine's ``--cfg-options`` (``DictAction``): a
    changed leaf as itself, a changed list element by its index, a new
    dict by its leaves, a dict that lost keys or replaced a non-dict with
    ``key._delete_=True`` and all its leaves."""
    if isinstance(changed, dict):
        if original is not None and (not isinstance(original, dict)
                                     or set(original) - set(changed)):
            return [f'{prefix}_delete_=True'] + [
                opt for k, v in changed.items()
                for opt in cfg_options(None, v, f'{prefix}{k}.')
            ]
        return [
            opt for k, v in changed.items()
            for opt in cfg_options((original or {}).get(k), v,
                                   f'{prefix}{k}.')
        ]
    if (isinstance(changed, (list, tuple)) and isinstance(original, type(
            changed)) and len(original) == len(changed)
            and any(isinstance(v, (dict, list)) for v in changed)):
        return [
            opt for i, (a, b) in enumerate(zip(original, changed))
            for opt in cfg_options(a, b, f'{prefix}{i}.')
        ]
    if original == changed and original is not None:
        return []
    return [f'{prefix[:-1]}={_option_value(changed)}']


def _option_value(value) -> str:
    if isinstance(value, (list, tuple)):
        assert not any(isinstance(v, dict) for v in value), value
        inner = ','.join(_option_value(v) for v in value)
        return f'[{inner}]' if isinstance(value, list) else f'({inner},)'
    return str(value)
