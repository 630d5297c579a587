"""Train the plugin's small CIFAR-10 config with an mmengine Runner, save
checkpoints, resume from one in a new Runner and load one with
``load_checkpoint``.

mmengine 0.10.7 pickles its ``HistoryBuffer`` (and numpy scalars) into a
checkpoint's ``message_hub``; torch>=2.6 loads with ``weights_only=True`` and
refuses them, so without ``mrcl_plugin.compat`` resuming fails with "Weights
only load failed ... Unsupported global: GLOBAL
mmengine.logging.history_buffer.HistoryBuffer".
"""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint

CONFIG = 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'


def small_cfg(repo_root, work_dir, name, max_iters):
    """The plugin config, shrunk in the test: a 2-layer, 64-wide encoder,
    batch 8, no workers, a checkpoint every iteration."""
    cfg = Config.fromfile(str(repo_root / CONFIG))
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'default_hooks.checkpoint.interval': 1,
        'default_hooks.logger.interval': 1,
    })
    cfg.model.backbone.arch = dict(
        embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
    cfg.model.decoder.embed_dim = 64
    cfg.model.neck.in_channels = 64
    cfg.randomness = dict(seed=0)
    # no kNN evaluation (tests/test_knn.py has it); the other hooks stay
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
    cfg.log_level = 'WARNING'
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'{name}_{work_dir.parent.name}'
    return cfg


class StateAtStart(Hook):
    """What the Runner holds when training starts, i.e. after resuming."""

    def before_train(self, runner):
        self.iter = runner.iter
        self.state_dict = copy.deepcopy(runner.model.state_dict())
        self.optimizer = copy.deepcopy(runner.optim_wrapper.state_dict())
        self.lrs = [g['lr'] for g in runner.optim_wrapper.param_groups]
        self.schedulers = copy.deepcopy(
            [s.state_dict() for s in runner.param_schedulers])
        self.loss_history = copy.deepcopy(
            runner.message_hub.get_scalar('train/loss'))


def assert_nested_equal(a, b, path='state'):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_nested_equal(a[k], b[k], f'{path}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_nested_equal(x, y, f'{path}[{i}]')
    else:
        assert a == b, (path, a, b)


@pytest.fixture(scope='module')
def trained(tmp_path_factory, repo_root, data_root):
    """3 iterations of the first run, a checkpoint after each."""
    mp = pytest.MonkeyPatch()
    mp.setenv('MRCL_DATA', str(data_root))
    work = tmp_path_factory.mktemp('ckpt') / 'first'
    runner = Runner.from_cfg(small_cfg(repo_root, work, 'first', 3))
    runner.train()
    mp.undo()
    return runner, work


def test_runner_saves_checkpoints(trained):
    runner, work = trained
    assert runner.iter == 3
    # max_keep_ckpts=2 (configs/_base_/cpu_runtime.py)
    assert not (work / 'iter_1.pth').exists()
    assert (work / 'iter_2.pth').is_file() and (work / 'iter_3.pth').is_file()
    assert (work / 'last_checkpoint').read_text().strip().endswith(
        'iter_3.pth')
    ckpt = torch.load(work / 'iter_2.pth', weights_only=False)
    assert ckpt['meta']['iter'] == 2
    assert {'state_dict', 'optimizer', 'param_schedulers',
            'message_hub'} <= set(ckpt)
    # What trips torch>=2.6's weights_only loading: mmengine's own classes.
    history = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(history, HistoryBuffer)
    assert len(history.data[0]) == 2  # the losses of iterations 1 and 2
    # AdamW's state after 2 steps
    steps = {float(s['step']) for s in ckpt['optimizer']['state'].values()}
    assert steps == {2.}


def test_resume_restores_iter_optimizer_and_weights(trained, tmp_path,
                                                    repo_root, mrcl_data_env):
    first, work = trained
    ckpt_path = work / 'iter_2.pth'
    ckpt = torch.load(ckpt_path, weights_only=False)

    cfg = small_cfg(repo_root, tmp_path / 'resumed', 'resumed', 3)
    cfg.resume, cfg.load_from = True, str(ckpt_path)
    runner = Runner.from_cfg(cfg)
    start = StateAtStart()
    runner.register_hook(start)
    runner.train()

    # Restored: iteration, weights, optimizer moments, lr schedule, logs.
    assert start.iter == 2
    assert_nested_equal(start.state_dict, ckpt['state_dict'])
    assert_nested_equal(start.optimizer, ckpt['optimizer'])
    assert_nested_equal(start.schedulers, ckpt['param_schedulers'])
    # The warm-up (LinearLR, iterations 0-30) has taken 2 steps.
    assert start.schedulers[0]['last_step'] == 2
    assert [s['_global_step'] for s in start.schedulers] == [2, 2]
    # LinearLR from 1e-3 x 1e-3 to 1e-3 over 29 steps, 2 taken.
    warm = 1e-3 * (1e-3 + (1 - 1e-3) * 2 / 29)
    assert start.lrs == pytest.approx([warm] * len(start.lrs))
    saved = ckpt['message_hub']['log_scalars']['train/loss']
    assert len(saved.data[0]) == 2
    assert start.loss_history.data[0].tolist() == saved.data[0].tolist()

    # ... then one more iteration, to 3.
    assert runner.iter == 3
    assert (tmp_path / 'resumed' / 'iter_3.pth').is_file()
    after = runner.model.state_dict()
    assert not torch.equal(after['backbone.cls_token'],
                           ckpt['state_dict']['backbone.cls_token'])
    steps = {
        float(s['step'])
        for s in runner.optim_wrapper.state_dict()['state'].values()
    }
    assert steps == {3.}
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 3


def test_load_checkpoint_into_a_new_model(trained, repo_root, tmp_path,
                                          mrcl_data_env):
    first, work = trained
    runner = Runner.from_cfg(
        small_cfg(repo_root, tmp_path / 'load', 'load', 3))
    model = runner.model
    assert not torch.equal(model.state_dict()['backbone.cls_token'],
                           first.model.state_dict()['backbone.cls_token'])
    ckpt = load_checkpoint(model, str(work / 'iter_3.pth'), strict=True)
    assert ckpt['meta']['iter'] == 3
    assert_nested_equal(model.state_dict(), first.model.state_dict())
