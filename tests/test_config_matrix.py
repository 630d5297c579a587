"""Every shipped config starts, through each launcher the README names for
it, on the real sample laid out as that config expects, and trains two
shrunk iterations.

Layouts: the ImageNet configs read the Tiny-ImageNet sample in the form
they are written for (``ImageNet(split='train')``: ``train/<wnid>/``,
``meta/train.txt``), only ``data_root`` set; the STL-10 configs the
release's binary files, written by the test from real images; the small
configs their CIFAR-10 / Tiny-ImageNet samples; ADE20K ``ade_tiny``; COCO
``coco_tiny``. Shrinking is ``--cfg-options`` only (a 2-layer, 64-wide ViT
at 32 px, 64-wide projectors, 16 training images, one epoch).

Launchers: ``tools/train.py`` (what ``mim train mrcl_plugin`` and
``tools/dist_train.sh`` run) in this process for every config, with
``--launcher none`` and with ``--launcher pytorch`` as torchrun starts it
with one process; mmpretrain's own ``tools/train.py`` (what ``mim train
mmpretrain`` runs) in this process for every mmpretrain config; and each
wrapper once for real in a subprocess: ``tools/dist_train.sh CONFIG 1``,
``mim train mrcl_plugin NAME``, ``mim train mmpretrain``, ``mim train
mmseg`` and ``mim train mmdet``. Our launchers run the configs as shipped
(they fit AMP and NCCL to a machine without a GPU themselves); OpenMMLab's
get the override a CPU user passes: ``optim_wrapper.type=
CPUBF16OptimWrapper`` where the config has AMP, and for mmseg/mmdet the
CPU-size settings of the transfer tests."""
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import mrcl_plugin  # noqa: F401
from mrcl_plugin.checkpoints.converters import to_mmpretrain
from mrcl_testing import (DATA, ROOT, cfg_options, experiment_name,
                          mim_finds, run_tool, write_stl10)

CONFIGS = ROOT / 'configs'
PRETRAIN = sorted((CONFIGS / 'mrcl').glob('*.py')) + sorted(
    (CONFIGS / 'baselines').glob('*.py'))
CLASSIFY = sorted((CONFIGS / 'benchmarks' / 'mmpretrain').glob('*.py'))
FLEXIBLE = [p for p in PRETRAIN if p.stem.endswith(('_fsdp', '_deepspeed'))]
TINY_IMAGENET = DATA / 'cls' / 'tiny_imagenet_10cls'
ARCH = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
SIZE, PATCH = 32, 8  # 16 patches
IN1K_NAME = 'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'
# 'Iter(train) [1/2]', 'Epoch(train) [1][1/2]'; mmdet's log processor
# counts an iteration loop in epochs of its dataset: 'Epoch(train) [1][1/196]'
ITER_LINE = re.compile(r'(?:Epoch\(train\)\s+\[1\]|Iter\(train\)) ?'
                       r'\[\s*(\d+)/\d+\].*\sloss: ([-\d.e+]+)')


def test_every_config_is_in_the_matrix():
    shipped = {
        p
        for p in CONFIGS.rglob('*.py') if '_base_' not in p.parts
    }
    # the study's CamVid readouts, which tools/study/finetune.py launches:
    # tests/test_camvid_readouts.py trains each
    camvid = set(SEG_CONFIG.parent.glob('*_camvid-*.py'))
    matrix = set(PRETRAIN + CLASSIFY) | {SEG_CONFIG, DET_CONFIG}
    assert shipped == matrix | camvid
    assert len(PRETRAIN) == 16 and len(CLASSIFY) == 2 and len(camvid) == 2


# -- the shrinking, as --cfg-options -----------------------------------------


def _shrink_channels(part: dict) -> None:
    for key in ('in_channels', 'hid_channels', 'out_channels'):
        if key in part:
            part[key] = 64
    if isinstance(part.get('predictor'), dict):
        _shrink_channels(part['predictor'])


def _shrink_pipeline(pipeline) -> None:
    for t in pipeline:
        if isinstance(t, list):
            _shrink_pipeline(t)
        elif t['type'] == 'MultiView':
            _shrink_pipeline(t['transforms'])
        elif t['type'] in ('RandomResizedCrop', 'ResizeEdge'):
            t['scale'] = SIZE
        elif t['type'] == 'CenterCrop':
            t['crop_size'] = SIZE


def _leaf(dataset: dict) -> dict:
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    return dataset


def layout(cfg: Config, stl10_root: Path) -> None:
    """Point each of the config's datasets at the real sample in the
    layout it names: only the root changes (and 16 / 8 images)."""
    for loader, n in (('train_dataloader', 16), ('val_dataloader', 8)):
        if not cfg.get(loader):
            continue
        dataset = _leaf(cfg[loader]['dataset'])
        if dataset['type'] == 'ImageNet':
            dataset['data_root'] = str(TINY_IMAGENET)
        elif dataset['type'] == 'STL10':
            dataset['data_root'] = str(stl10_root)
        dataset['indices'] = n  # the small configs: on their own samples
        cfg[loader].update(batch_size=8 if n == 16 else 4, num_workers=0,
                           persistent_workers=False)


def shrink(cfg: Config, stl10_root: Path, encoder: Path = None) -> Config:
    """The config with a 2-layer ViT at 32 px, narrow heads, its data on the
    sample, one epoch (or two iterations), logged every iteration."""
    cfg = copy.deepcopy(cfg)
    model = cfg.model
    model.backbone.update(arch=dict(ARCH), img_size=SIZE, patch_size=PATCH)
    if 'frozen_stages' in model.backbone:  # the linear probe: all of them
        model.backbone.frozen_stages = ARCH['num_layers']
    if model.get('decoder'):
        model.decoder.update(num_patches=(SIZE // PATCH)**2,
                             patch_size=PATCH, embed_dim=64,
                             decoder_embed_dim=32, decoder_depth=1,
                             decoder_num_heads=4)
    if model.get('rec_head'):
        model.rec_head.patch_size = PATCH
    for part in ('neck', 'head'):
        if isinstance(model.get(part), dict):
            _shrink_channels(model[part])
    if encoder is not None:
        model.backbone.init_cfg.checkpoint = str(encoder)
    layout(cfg, stl10_root)
    for loader in ('train_dataloader', 'val_dataloader'):
        if cfg.get(loader):
            _shrink_pipeline(_leaf(cfg[loader]['dataset'])['pipeline'])
    if 'max_iters' in cfg.train_cfg:
        cfg.train_cfg.max_iters = 2
    else:
        cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 1
    for hook in cfg.get('custom_hooks', []):
        if hook['type'] == 'KNNHook':  # 2 images a class, at the end
            hook.update(bank_per_class=2, query_per_class=2, num_workers=0)
    return cfg


def options(config: Path, stl10_root: Path, encoder: Path = None,
            **extra) -> list:
    cfg = Config.fromfile(str(config))
    changed = shrink(cfg, stl10_root, encoder)
    changed.merge_from_dict(extra)
    return [*cfg_options(cfg.to_dict(), changed.to_dict()),
            f'experiment_name={experiment_name("matrix")}']


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def _data_env(mrcl_data_env):
    pass


@pytest.fixture(scope='module')
def stl10_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('stl10')
    write_stl10(root, train=8, unlabeled=8, test=4)
    return root


@pytest.fixture(scope='module')
def encoder(tmp_path_factory, stl10_root):
    """The encoder of the ImageNet MR-BarlowTwins config, pretrained shrunk
    on the Tiny-ImageNet sample for 2 iterations and converted, as a user
    feeds it to the linear probe, the fine-tune and the dense benchmarks."""
    work = tmp_path_factory.mktemp('in1k_pretrain')
    assert tools_train(CONFIGS / 'mrcl' / IN1K_NAME, work,
                       options(CONFIGS / 'mrcl' / IN1K_NAME,
                               stl10_root)) == ''
    path = work / 'encoder.pth'
    torch.save(to_mmpretrain(str(work / 'epoch_1.pth')), path)
    return path


# -- the launchers ------------------------------------------------------------


def tools_train(config, work, opts, launcher='none') -> str:
    return run_tool('train.py', [
        config, '--work-dir', work, '--launcher', launcher, '--cfg-options',
        *opts
    ])


@pytest.fixture
def torchrun_env(monkeypatch, free_port):
    """What torchrun sets for one process; the process group is ended
    after the run (the Runner leaves it open)."""
    for key, value in dict(RANK=0, LOCAL_RANK=0, WORLD_SIZE=1,
                           LOCAL_WORLD_SIZE=1, MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=free_port).items():
        monkeypatch.setenv(key, str(value))
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def trained(work: Path, iterations: int = 2) -> None:
    """The run logged every iteration with a finite loss and saved its
    checkpoint."""
    logs = list(work.glob('*/*.log'))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    lines = ITER_LINE.findall(text)
    assert [i for i, _ in lines] == [str(i) for i in range(1, iterations + 1)
                                     ], text[-2000:]
    assert all(abs(float(loss)) < 1e6 for _, loss in lines), text[-2000:]
    saved = (work / 'last_checkpoint').read_text().strip()
    assert Path(saved).parent == work and Path(saved).is_file(), saved


def _config_id(path: Path) -> str:
    return path.stem


NOT_FLEXIBLE = [p for p in PRETRAIN if p not in FLEXIBLE]
FSDP = [p for p in FLEXIBLE if p.stem.endswith('_fsdp')]


@pytest.mark.parametrize('config', NOT_FLEXIBLE, ids=_config_id)
def test_tools_train(config, tmp_path, stl10_root):
    assert tools_train(config, tmp_path, options(config, stl10_root)) == ''
    trained(tmp_path)


@pytest.mark.parametrize('config', NOT_FLEXIBLE + FSDP,
                         ids=_config_id)
def test_tools_train_launcher_pytorch(config, tmp_path, stl10_root,
                                      torchrun_env):
    """As ``tools/dist_train.sh CONFIG 1`` starts it: the config's NCCL
    and AMP give way to gloo and bf16 on this CPU, FSDP wraps on it."""
    assert tools_train(config, tmp_path, options(config, stl10_root),
                       launcher='pytorch') == ''
    trained(tmp_path)


@pytest.mark.parametrize('launcher', ['none', 'pytorch'])
@pytest.mark.parametrize('config', CLASSIFY, ids=_config_id)
def test_tools_train_classification(config, launcher, tmp_path, stl10_root,
                                    encoder, torchrun_env):
    """The linear probe and the fine-tune from the converted encoder, train
    and validation on the sample's ImageNet layout (split='val'), as
    ``tools/train.py`` and as ``tools/dist_train.sh CONFIG 1`` start them."""
    assert tools_train(config, tmp_path, options(config, stl10_root, encoder),
                       launcher=launcher) == ''
    trained(tmp_path)
    assert 'accuracy/top1' in next(tmp_path.glob('*/*.log')).read_text()


MMPRETRAIN_TRAIN = Path(
    __import__('mmpretrain').__file__).parent / '.mim' / 'tools' / 'train.py'


def cpu_user_options(config: Path) -> dict:
    """What a CPU user passes to OpenMMLab's own train script."""
    wrapper = Config.fromfile(str(config)).optim_wrapper
    if wrapper.get('type') == 'AmpOptimWrapper':
        return {'optim_wrapper.type': 'CPUBF16OptimWrapper'}
    return {}


@pytest.mark.parametrize('config', NOT_FLEXIBLE + CLASSIFY, ids=_config_id)
def test_mmpretrain_train(config, tmp_path, stl10_root, encoder):
    """mmpretrain's tools/train.py, what ``mim train mmpretrain`` runs."""
    opts = options(config, stl10_root,
                   encoder if config in CLASSIFY else None,
                   **cpu_user_options(config))
    assert run_tool(MMPRETRAIN_TRAIN, [
        config, '--work-dir', tmp_path, '--cfg-options', *opts
    ]) == ''
    trained(tmp_path)


# -- each wrapper once, for real ----------------------------------------------


def subprocess_run(cmd, cwd=ROOT, **env) -> str:
    env = dict(os.environ, MRCL_DATA=str(DATA),
               PATH=f'{Path(sys.executable).parent}:{os.environ["PATH"]}',
               **env)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    errors = [line for line in log.splitlines() if "Error" in line]
    assert proc.returncode == 0, "\n".join(errors[-5:])[-3000:]
    return log


def test_dist_train_sh_one_cpu_process(tmp_path, stl10_root, free_port):
    config = CONFIGS / 'mrcl' / IN1K_NAME
    log = subprocess_run([
        'bash', 'tools/dist_train.sh', str(config), '1', '--work-dir',
        str(tmp_path), '--cfg-options', *options(config, stl10_root)
    ], PORT=str(free_port))
    assert 'no GPU: env_cfg.dist_cfg.backend nccl -> gloo' in log
    assert 'no GPU: optim_wrapper AmpOptimWrapper -> CPUBF16OptimWrapper' \
        in log
    trained(tmp_path)


def test_mim_train_mrcl_plugin_by_name(tmp_path, stl10_root, free_port):
    """The README's form: by name, ``--launcher pytorch --gpus N`` (mim's
    torch.distributed.launch, one CPU process here)."""
    config = CONFIGS / 'mrcl' / IN1K_NAME
    log = subprocess_run([
        'mim', 'train', 'mrcl_plugin', IN1K_NAME, '--launcher', 'pytorch',
        '--gpus', '1', '--port', str(free_port), '--work-dir',
        str(tmp_path), '--cfg-options', *options(config, stl10_root)
    ], cwd=tmp_path)
    assert 'no GPU: env_cfg.dist_cfg.backend nccl -> gloo' in log
    found = re.search(r'we find the config file in codebase mrcl_plugin, '
                      r'will use (\S+) instead', log)
    assert found and found.group(1).endswith(f'configs/mrcl/{IN1K_NAME}')
    # mim runs the plugin's train script (torch.distributed.launch's arg)
    script = re.search(r'Training command is .*?(\S+/tools/train\.py)',
                       log).group(1)
    assert Path(script).parts[-4:] == ('mrcl_plugin', '.mim', 'tools',
                                       'train.py')
    trained(tmp_path)


def test_every_config_is_found_by_name():
    """``mim train mrcl_plugin NAME`` finds each config of ours by its name
    alone, as mim looks (its own functions, in the installed package: the
    checkout's links, or setup.py's stubs, whichever mim's lookup of the
    dist-info gives from here)."""
    from mim.utils import get_installed_path, recursively_find
    root = get_installed_path('mrcl_plugin')
    for config in PRETRAIN + CLASSIFY + [SEG_CONFIG, DET_CONFIG]:
        found = recursively_find(root, config.name, followlinks=True)
        assert len(found) == 1 and mim_finds(found[0], config), found


def test_mim_train_mmpretrain(tmp_path, stl10_root):
    config = CONFIGS / 'mrcl' / IN1K_NAME
    log = subprocess_run([
        'mim', 'train', 'mmpretrain',
        str(config), '--work-dir',
        str(tmp_path), '--cfg-options',
        *options(config, stl10_root, **cpu_user_options(config))
    ])
    assert 'mmpretrain/.mim/tools/train.py' in log
    trained(tmp_path)


SEG_CONFIG = CONFIGS / 'benchmarks' / 'mmsegmentation' / (
    'mrcl_vit-base-p16_upernet_8xb2-amp-160k_ade20k-512x512.py')
DET_CONFIG = CONFIGS / 'benchmarks' / 'mmdetection' / (
    'mrcl_vit-base-p16_simple-fpn_mask-rcnn_8xb8-amp-lsj-100e_coco.py')


def mim_train_dense(package: str, config: Path, small_config,
                    checkpoint: Path, tmp_path, **kwargs) -> None:
    """``mim train PACKAGE CONFIG`` from a converted encoder, with the
    transfer tests' CPU-size settings (``small_config``, ``cpu_runner``: a
    2-iteration loop, no AMP, no workers) as options."""
    from transfer_testing import convert, cpu_runner
    encoder = convert(checkpoint, tmp_path / 'encoder.pth')
    cfg = Config.fromfile(str(config))
    changed = small_config(copy.deepcopy(cfg), encoder['meta'], DATA,
                           tmp_path / 'encoder.pth', **kwargs)
    changed = cpu_runner(changed, tmp_path, max_iters=2)
    changed.default_hooks.checkpoint.interval = 2
    log = subprocess_run([
        'mim', 'train', package,
        str(config), '--work-dir',
        str(tmp_path), '--cfg-options',
        *cfg_options(cfg.to_dict(), changed.to_dict())
    ])
    assert f'{package}/.mim/tools/train.py' in log
    trained(tmp_path)


def test_mim_train_mmseg(tmp_path, mrcl_checkpoint):
    from test_transfer_segmentation import small_config
    mim_train_dense('mmseg', SEG_CONFIG, small_config, mrcl_checkpoint,
                    tmp_path)


def test_mim_train_mmdet(tmp_path, mrcl_checkpoint_p16):
    from test_transfer_detection import small_config, val_subset
    val_ann = val_subset(DATA, tmp_path / 'val.json', n=4)
    mim_train_dense('mmdet', DET_CONFIG, small_config, mrcl_checkpoint_p16,
                    tmp_path, val_ann=val_ann)
