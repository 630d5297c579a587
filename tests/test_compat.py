"""Each fix of :mod:`mrcl_plugin.compat` fails without it and works with it,
and the fixes stay narrow (torch.load keeps its safe default)."""
import pickle
import re

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import utils as dist_utils
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import Runner
from mmengine.runner.checkpoint import (CheckpointLoader, _load_checkpoint,
                                        load_from_local, save_checkpoint)

import mrcl_plugin  # noqa: F401  applies the checkpoint fix
import mrcl_plugin.cpu_distributed  # noqa: F401  opts in to the CPU ones
from mrcl_plugin import compat

WEIGHTS_ONLY_ERROR = 'Weights only load failed'


class Payload:
    """An arbitrary class: a weights_only load must refuse to build it."""

    def __init__(self):
        self.value = 42


@pytest.fixture(scope='module')
def mmengine_ckpt(tmp_path_factory):
    """A checkpoint as mmengine's Runner.save_checkpoint writes one: weights,
    meta, and the message hub with its HistoryBuffers and numpy scalars."""
    hub = MessageHub.get_instance('test_compat_ckpt')
    for loss in (2.5, 2.25):
        hub.update_scalar('train/loss', loss)
    hub.update_info('iter', 2)
    hub.update_info('seed', np.int64(0))
    model = torch.nn.Linear(4, 2)
    ckpt = dict(
        meta=dict(iter=2, epoch=0, seed=0, mmengine_version='0.10.7'),
        state_dict=model.state_dict(),
        message_hub=hub.state_dict())
    path = tmp_path_factory.mktemp('compat') / 'iter_2.pth'
    save_checkpoint(ckpt, str(path))
    return path, model.state_dict()


# -- torch>=2.6 weights_only loading vs. mmengine checkpoints --------------


def test_plain_torch_load_refuses_mmengine_checkpoint(mmengine_ckpt):
    """The problem: torch>=2.6 defaults to weights_only=True, and mmengine
    pickles its own HistoryBuffer into every checkpoint."""
    path, _ = mmengine_ckpt
    with pytest.raises(pickle.UnpicklingError) as err:
        torch.load(path)
    assert WEIGHTS_ONLY_ERROR in str(err.value)
    assert 'HistoryBuffer' in str(err.value)


def test_unpatched_mmengine_loader_fails(mmengine_ckpt, monkeypatch):
    """Without the fix, mmengine's own local loader (load_from_local, what
    load_from / resume / init_cfg use) raises on mmengine's own file."""
    path, _ = mmengine_ckpt
    with pytest.raises(pickle.UnpicklingError, match=WEIGHTS_ONLY_ERROR):
        load_from_local(str(path), map_location='cpu')
    monkeypatch.setitem(CheckpointLoader._schemes, '', load_from_local)
    with pytest.raises(pickle.UnpicklingError, match=WEIGHTS_ONLY_ERROR):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def test_patched_mmengine_loader_loads_checkpoint(mmengine_ckpt):
    path, weights = mmengine_ckpt
    loader = CheckpointLoader._get_checkpoint_loader(str(path))
    assert loader is not load_from_local
    assert loader.__module__ == 'mrcl_plugin.checkpoints.schemes'
    for ckpt in (CheckpointLoader.load_checkpoint(str(path), 'cpu'),
                 _load_checkpoint(str(path), map_location='cpu')):
        assert ckpt['meta']['iter'] == 2
        history = ckpt['message_hub']['log_scalars']['train/loss']
        assert isinstance(history, HistoryBuffer)
        assert history.data[0].tolist() == [2.5, 2.25]
        for k, v in weights.items():
            assert torch.equal(ckpt['state_dict'][k], v)
    with pytest.raises(FileNotFoundError):
        CheckpointLoader.load_checkpoint(str(path) + '.missing')


class Trap:
    """Unpickling it opens (creates) a file: the marker shows whether a
    loader ran what the pickle names."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_patched_loader_refuses_a_crafted_pickle(tmp_path):
    """Where ``weights_only=False`` ran any pickle a user named, the loader
    now refuses one that names a global no checkpoint holds, runs nothing,
    and says so in one line."""
    from mrcl_plugin.checkpoints import CheckpointError
    marker = tmp_path / 'ran'
    path = tmp_path / 'crafted.pth'
    torch.save({'state_dict': {}, 'meta': Trap(marker)}, path)
    for load in (CheckpointLoader.load_checkpoint, _load_checkpoint):
        with pytest.raises(CheckpointError) as err:
            load(str(path), map_location='cpu')
        assert str(err.value) == (
            f'{path}: refused: it pickles io.open, which no '
            'checkpoint holds (nothing in it was run)')
    assert not marker.exists()
    # What the old loader (weights_only=False) did with it:
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_every_scheme_ends_in_the_weights_only_reader():
    """Every prefix mmengine (and the OpenMMLab packages, once imported)
    registers has our loader: none is left to unpickle a download."""
    import mmdet  # noqa: F401
    import mmpretrain  # noqa: F401
    import mmseg  # noqa: F401
    from mrcl_plugin.checkpoints.schemes import LOADERS
    assert set(CheckpointLoader._schemes) == set(LOADERS)
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == 'mrcl_plugin.checkpoints.schemes', prefix
    for url in ('https://download.openmmlab.com/x.pth',
                'torchvision://resnet50', 'open-mmlab://resnet50_v1c',
                'mmcls://vit', 's3://bucket/x.pth', 'a:s3://b/x.pth',
                'pavi://x'):
        loader = CheckpointLoader._get_checkpoint_loader(url)
        assert loader is LOADERS[next(p for p in LOADERS if p and
                                      re.match(p, url))], url


def test_torch_load_keeps_its_safe_default(tmp_path):
    """compat must not switch weights_only off globally: a plain torch.load
    of a file with an arbitrary pickled class still refuses, after the
    plugin is imported."""
    assert compat._APPLIED
    path = tmp_path / 'payload.pth'
    torch.save({'payload': Payload(), 'w': torch.ones(2)}, path)
    with pytest.raises(pickle.UnpicklingError) as err:
        torch.load(path)
    assert WEIGHTS_ONLY_ERROR in str(err.value)
    assert 'Payload' in str(err.value)
    # Plain weights still load the safe way.
    torch.save({'w': torch.ones(2)}, tmp_path / 'weights.pth')
    assert torch.equal(torch.load(tmp_path / 'weights.pth')['w'],
                       torch.ones(2))


# -- mmengine's _init_dist_pytorch on a machine without a GPU ---------------


@pytest.fixture
def dist_env(monkeypatch, free_port):
    for key, value in dict(
            RANK='0', LOCAL_RANK='0', WORLD_SIZE='1',
            MASTER_ADDR='127.0.0.1', MASTER_PORT=str(free_port)).items():
        monkeypatch.setenv(key, value)
    assert not torch_dist.is_initialized()
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def test_unpatched_init_dist_pytorch_needs_a_gpu(dist_env):
    original = dist_utils._init_dist_pytorch.__wrapped__
    assert not getattr(original, '__mrcl_compat__', False)
    if torch.cuda.is_available():
        # On a GPU machine the original works: the fix is a pass-through.
        original('gloo')
        assert torch_dist.is_initialized()
        return
    with pytest.raises(RuntimeError, match='NVIDIA|CUDA'):
        original('gloo')
    assert not torch_dist.is_initialized()


def test_patched_init_dist_pytorch_runs_gloo_on_cpu(dist_env):
    assert dist_utils._init_dist_pytorch.__mrcl_compat__
    dist_utils._init_dist_pytorch('gloo')
    assert torch_dist.is_initialized()
    assert torch_dist.get_backend() == 'gloo'
    assert torch_dist.get_world_size() == 1 and torch_dist.get_rank() == 0
    from mmengine.dist import get_dist_info
    assert get_dist_info() == (0, 1)
    x = torch.tensor([1., 2., 3.])
    torch_dist.all_reduce(x)
    assert x.tolist() == [1., 2., 3.]


def test_cpu_sync_batchnorm_in_a_bf16_model(dist_env):
    """DeepSpeed's bf16 casts the whole model, SyncBN's running statistics
    included: the shim updates them in their own dtype (before: "expected
    dtype c10::BFloat16 for `end` but got dtype float"), and computes as
    BatchNorm does."""
    dist_utils._init_dist_pytorch('gloo')
    torch.manual_seed(0)
    x = torch.randn(16, 4) * 3 + 1
    sync = torch.nn.SyncBatchNorm(4).to(torch.bfloat16).train()
    reference = torch.nn.BatchNorm1d(4).train()
    out = sync(x.to(torch.bfloat16))
    assert out.dtype == sync.running_mean.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference(x), rtol=0.02,
                               atol=0.05)
    for name in ('running_mean', 'running_var'):
        torch.testing.assert_close(getattr(sync, name).float(),
                                   getattr(reference, name), rtol=0.02,
                                   atol=0.02)


def test_apply_is_idempotent(monkeypatch):
    from mmengine._strategy.deepspeed import (DeepSpeedOptimWrapper,
                                              DeepSpeedStrategy)
    wrapped = dist_utils._init_dist_pytorch
    forward = torch.nn.SyncBatchNorm.forward
    save, step = DeepSpeedStrategy.save_checkpoint, DeepSpeedOptimWrapper.step
    monkeypatch.setattr(compat, '_APPLIED', False)
    monkeypatch.setattr(compat, '_CPU_DISTRIBUTED_APPLIED', False)
    compat.apply()
    compat.apply_cpu_distributed()
    assert compat._APPLIED and compat._CPU_DISTRIBUTED_APPLIED
    assert dist_utils._init_dist_pytorch is wrapped  # not wrapped twice
    assert not hasattr(wrapped.__wrapped__, '__wrapped__')
    assert torch.nn.SyncBatchNorm.forward is forward
    assert DeepSpeedStrategy.save_checkpoint is save
    assert DeepSpeedOptimWrapper.step is step
    assert CheckpointLoader._schemes[''].__module__ == 'mrcl_plugin.checkpoints.schemes'


def test_importing_the_plugin_changes_nothing_in_torch():
    """In a fresh process: ``import mrcl_plugin`` registers its classes
    and makes checkpoint loading weights-only, and leaves SyncBatchNorm,
    DDP's SyncBN check and mmengine's distributed init as they ship; only
    the opt-in module changes them."""
    import subprocess
    import sys
    probe = '''
import torch
from mmengine.dist import utils
ddp = torch.nn.parallel.DistributedDataParallel
def patched():
    return [bool(getattr(f, '__mrcl_compat__', False)) for f in (
        torch.nn.SyncBatchNorm.forward, ddp._passing_sync_batchnorm_handle,
        utils._init_dist_pytorch)]
shipped = (torch.nn.SyncBatchNorm.forward,
           ddp._passing_sync_batchnorm_handle, utils._init_dist_pytorch)
import mrcl_plugin
from mmengine.runner.checkpoint import CheckpointLoader
from mmpretrain.registry import MODELS
assert MODELS.get('MRBarlowTwins') is not None
assert CheckpointLoader._schemes[''].__module__ == 'mrcl_plugin.checkpoints.schemes'
assert (torch.nn.SyncBatchNorm.forward, ddp._passing_sync_batchnorm_handle,
        utils._init_dist_pytorch) == shipped
assert patched() == [False] * 3
import mrcl_plugin.cpu_distributed
assert patched() == [True] * 3
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True,
                         text=True, timeout=120)
    # (DeepSpeed, where installed, prints a line of its own on import)
    assert out.returncode == 0 and out.stdout.split()[-1:] == ['ok'], \
        out.stderr


# -- mmpretrain:: inheritance stamps _scope_ on collate_fn (config fix) -----


def _cifar_loader_cfg(dataloader, data_root):
    """The config's collate_fn, on a real CIFAR-10 dataset."""
    return dict(
        batch_size=2,
        num_workers=0,
        persistent_workers=False,
        collate_fn=dataloader.collate_fn.to_dict(),
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='CustomDataset',
            data_root=str(data_root / 'cls' / 'cifar10'),
            ann_file='meta/train.txt',
            data_prefix='train',
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='PackInputs')]))


def test_mmpretrain_scope_reaches_default_collate(tmp_path, data_root):
    """Inheriting an mmpretrain config with ``mmpretrain::`` adds
    ``_scope_='mmpretrain'`` to its ``collate_fn`` dict; mmengine passes
    every key but ``type`` to the collate function: "default_collate() got
    an unexpected keyword argument '_scope_'". The override
    ``collate_fn=dict(_delete_=True, type='default_collate')`` (used in
    configs/_base_/datasets/) fixes it."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    base = "_base_ = 'mmpretrain::_base_/datasets/imagenet_bs32_simclr.py'\n"
    (tmp_path / 'trap.py').write_text(base)
    (tmp_path / 'fixed.py').write_text(
        base + "train_dataloader = dict(\n"
        "    collate_fn=dict(_delete_=True, type='default_collate'))\n")

    trap = Config.fromfile(str(tmp_path / 'trap.py'))
    assert trap.train_dataloader.collate_fn == dict(
        type='default_collate', _scope_='mmpretrain')
    loader = Runner.build_dataloader(
        _cifar_loader_cfg(trap.train_dataloader, data_root))
    with pytest.raises(TypeError, match="unexpected keyword argument '_scope_'"):
        next(iter(loader))

    fixed = Config.fromfile(str(tmp_path / 'fixed.py'))
    assert fixed.train_dataloader.collate_fn == dict(type='default_collate')
    loader = Runner.build_dataloader(
        _cifar_loader_cfg(fixed.train_dataloader, data_root))
    batch = next(iter(loader))
    assert batch['inputs'].shape == (2, 3, 32, 32)  # default_collate stacks
    assert batch['inputs'].float().std() > 10


def test_plugin_imagenet_dataset_config_has_the_override(repo_root):
    cfg = Config.fromfile(
        str(repo_root / 'configs/_base_/datasets/imagenet_bs64_mrcl.py'))
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')


def _graph_breaks(layer, x):
    import torch._dynamo
    torch._dynamo.reset()
    return torch._dynamo.explain(layer)(x).graph_break_count


def test_numpy_drop_path_rate_breaks_the_compiled_graph():
    """mmpretrain's ViT layers get numpy drop-path rates: dynamo breaks the
    graph at mmcv's ``drop_prob == 0.`` in every layer, until
    :func:`compat.python_drop_path_rates` makes them Python floats (the
    same values: the layer computes the same)."""
    from mmpretrain.models import VisionTransformer
    vit = VisionTransformer(arch=dict(embed_dims=16, num_layers=2,
                                      num_heads=2, feedforward_channels=32),
                            img_size=8, patch_size=4, drop_path_rate=0.1)
    layer = vit.layers[1]
    drop = layer.ffn.dropout_layer
    assert isinstance(drop.drop_prob, np.floating)
    x = torch.randn(2, 5, 16)
    assert _graph_breaks(layer, x) > 0
    compat.python_drop_path_rates(vit)
    assert type(drop.drop_prob) is float and drop.drop_prob == 0.1
    assert _graph_breaks(layer, x) == 0
    layer.eval()
    torch.testing.assert_close(torch.compile(layer, backend='eager')(x),
                               layer(x))


class _ZeroEngine:
    """What mmengine's DeepSpeed strategy and wrapper call on DeepSpeed's
    engine: ``save_checkpoint`` records the client state; ``step`` ends as
    ZeRO's does, all-gathering the updated slice into the flat buffer,
    which ZeRO builds with ``torch.cat`` in grad mode."""

    def __init__(self):
        self.saved = None
        weights = torch.zeros(8, requires_grad=True)
        self.flat = torch.cat([weights[:4], weights[4:]])

    def zero_optimization_partition_weights(self):
        return False

    def save_checkpoint(self, dirname, tag, client_state, **kwargs):
        self.saved = client_state

    def step(self):
        torch_dist.all_gather_into_tensor(self.flat, torch.arange(8.))


def test_deepspeed_checkpoints_get_what_hooks_add(monkeypatch, tmp_path):
    """mmengine's DeepSpeedStrategy drops the Runner's callback, so hooks'
    ``before_save_checkpoint`` (MRCLMetaHook's ``meta['mrcl']``) never
    reach the checkpoint; with the fix they do, in DeepSpeed's client
    state."""
    from types import SimpleNamespace

    from mmengine._strategy import deepspeed as strategy_module
    monkeypatch.setattr(strategy_module, 'deepspeed',
                        SimpleNamespace(__version__='0.18.9'))
    strategy = SimpleNamespace(seed=0, model=_ZeroEngine(),
                               exclude_frozen_parameters=None)

    def hooks(checkpoint):
        checkpoint['meta']['mrcl'] = {'learner': 'barlowtwins'}

    save = strategy_module.DeepSpeedStrategy.save_checkpoint
    assert save.__mrcl_compat__
    for fixed in (False, True):
        (save if fixed else save.__wrapped__)(
            strategy, str(tmp_path / 'epoch_1.pth'), save_optimizer=True,
            save_param_scheduler=False, extra_ckpt={'meta': {}},
            callback=hooks)
        assert ('mrcl' in strategy.model.saved['meta']) is fixed


def test_deepspeed_zero_step_on_gloo(dist_env):
    """On gloo, ZeRO's closing all-gather into its flat buffer fails in grad
    mode ("Output 0 of Split is a view and is being modified inplace"),
    which stopped 2-process DeepSpeed runs at the first step; mmengine's
    wrapper step runs under no_grad with the fix."""
    from mmengine._strategy.deepspeed import DeepSpeedOptimWrapper
    dist_utils._init_dist_pytorch('gloo')
    wrapper = DeepSpeedOptimWrapper(torch.optim.SGD([torch.zeros(1)], lr=1))
    wrapper.model = _ZeroEngine()
    with pytest.raises(RuntimeError, match='Output 0 of Split is a view'):
        DeepSpeedOptimWrapper.step.__wrapped__(wrapper)
    wrapper.step()
    assert wrapper.model.flat.tolist() == list(range(8))
