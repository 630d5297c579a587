"""Two processes on gloo train as one process on the same global batch.

Two CPU processes (torch.multiprocessing, gloo over 127.0.0.1) each take half
of a global batch of real CIFAR-10 images and train MR-SimCLR and
MR-BarlowTwins through mmengine's ``MMDistributedDataParallel`` (with
``device_ids=None``, as on CPU) for a few SGD steps; the projector uses
SyncBN, as the paper's configs do. The per-iteration losses and the
DDP-averaged gradients equal those of one process on the whole batch with the
same weights and masks. A real 2-process ``torchrun tools/train.py
--launcher pytorch`` run of the CPU gloo config closes the loop.
"""
import copy
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mrcl_testing import NECK, build, free_port, mrcl_cfg, two_views

WORLD = 2
BATCH = 8  # global: 4 images per process
ITERS = 3
LEARNERS = ('simclr', 'barlowtwins')
ROOT = Path(__file__).resolve().parents[1]
GLOO_CONFIG = ('configs/mrcl/'
               'mrcl-barlowtwins_vit-tiny-p4_2xb32-coslr-300it_cifar10_gloo.py')


def model_cfg(learner: str) -> dict:
    neck = dict(copy.deepcopy(NECK), norm_cfg=dict(type='SyncBN'))
    return mrcl_cfg(learner, mask_ratio=0.25, neck=neck)


def global_masks(num_patches: int = 64) -> list:
    """Per iteration, a (2 * BATCH, N) mask of both views (view 1 first),
    drawn once so that both runs use the same."""
    g = torch.Generator().manual_seed(1)
    masks = []
    for _ in range(ITERS):
        noise = torch.rand(2 * BATCH, num_patches, generator=g)
        masks.append(noise.argsort(1).argsort(1) < 16)  # 16 masked of 64
    return masks


def local_rows(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's rows of a (2 * BATCH, ...) tensor of both views."""
    n = BATCH // world
    v1, v2 = x.chunk(2)
    return torch.cat((v1[rank * n:(rank + 1) * n], v2[rank * n:(rank + 1) * n]))


def train(model, rank: int, world: int) -> dict:
    """ITERS SGD steps through ``model.train_step`` on this process's part
    of the global batch: the loss terms of each step and the gradients of the
    first."""
    from mmengine.optim import OptimWrapper
    views = two_views(BATCH)
    n = BATCH // world
    data = dict(inputs=[v[rank * n:(rank + 1) * n] for v in views],
                data_samples=None)
    masks = iter([local_rows(m, rank, world) for m in global_masks()])
    module = getattr(model, 'module', model)
    module.backbone.mask_generator = lambda *args: next(masks)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.05))
    grads, step = [], wrapper.step

    def step_and_record(**kwargs):
        if not grads:
            grads.append({k: p.grad.clone()
                          for k, p in module.named_parameters()
                          if p.grad is not None})
        step(**kwargs)

    wrapper.step = step_and_record
    losses = [{k: v.item() for k, v in model.train_step(data, wrapper).items()}
              for _ in range(ITERS)]
    return dict(losses=losses, grads=grads[0])


def sync_bn_check(rank: int, world: int) -> dict:
    """torch's SyncBatchNorm on CPU, without and with the compat fix, against
    BatchNorm1d on the global batch."""
    import mrcl_plugin.cpu_distributed  # noqa: F401  the opt-in
    torch.manual_seed(0)
    x = torch.randn(BATCH, 5) * 3 + 1
    bn = torch.nn.SyncBatchNorm(5)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 5))
    patched = torch.nn.SyncBatchNorm.forward
    try:
        torch.nn.SyncBatchNorm.forward = patched.__wrapped__
        bn(x[:1])
        unpatched = None
    except ValueError as e:
        unpatched = str(e)
    finally:
        torch.nn.SyncBatchNorm.forward = patched
    n = BATCH // world
    xl = x[rank * n:(rank + 1) * n].clone().requires_grad_()
    (bn(xl) * torch.arange(5.)).sum().backward()
    # DDP would average the weight's gradient: all_reduce and divide
    wgrad = bn.weight.grad.clone()
    dist.all_reduce(wgrad)
    return dict(unpatched_error=unpatched, xgrad=xl.grad,
                wgrad=wgrad / world, running_var=bn.running_var.clone())


def raise_(err_type, msg):
    raise err_type(msg)


def worker(rank: int, port: int, init: str, out: str) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    from mmengine.model import (MMDistributedDataParallel,
                                MMFullyShardedDataParallel)
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    init_default_scope('mmpretrain')
    result = dict(sync_bn=sync_bn_check(rank, WORLD))
    check = torch.nn.parallel.DistributedDataParallel.\
        _passing_sync_batchnorm_handle
    try:
        check.__wrapped__(
            mock.Mock(device_type='cpu', _log_and_throw=raise_),
            torch.nn.Sequential(torch.nn.SyncBatchNorm(2)))
    except ValueError as e:
        result['ddp_unpatched_error'] = str(e)
    for learner in LEARNERS:
        model = MODELS.build(model_cfg(learner))
        model.load_state_dict(torch.load(f'{init}/{learner}.pth'))
        ddp = MMDistributedDataParallel(
            module=model, device_ids=None, broadcast_buffers=False)
        result[learner] = train(ddp, rank, WORLD)
        # FSDPStrategy's wrapper (configs/mrcl/*_fsdp.py), on the CPU
        model = MODELS.build(model_cfg(learner))
        model.load_state_dict(torch.load(f'{init}/{learner}.pth'))
        fsdp = MMFullyShardedDataParallel(module=model, device_id='cpu')
        result[f'{learner}_fsdp'] = train(fsdp, rank, WORLD)['losses']
    torch.save(result, f'{out}/rank{rank}.pth')
    dist.destroy_process_group()


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The single-process and the 2-process results, per learner."""
    tmp = tmp_path_factory.mktemp('dist')
    single = {}
    for learner in LEARNERS:
        torch.manual_seed(0)
        model = build(model_cfg(learner))  # SyncBN reverted to BN1d
        torch.save(model.state_dict(), tmp / f'{learner}.pth')
        single[learner] = train(model, rank=0, world=1)
    mp.spawn(worker, args=(free_port(), str(tmp), str(tmp)), nprocs=WORLD)
    ranks = [torch.load(tmp / f'rank{r}.pth') for r in range(WORLD)]
    return single, ranks


def test_cpu_sync_batchnorm_compat_is_global_batchnorm(runs):
    _, ranks = runs
    for r in ranks:
        # without mrcl_plugin.compat's fix, torch refuses the CPU tensor
        assert 'SyncBatchNorm expected input tensor to be on GPU' in \
            r['sync_bn']['unpatched_error']
        assert r['ddp_unpatched_error'] == \
            'SyncBatchNorm layers only work with GPU modules'
    torch.manual_seed(0)
    x = (torch.randn(BATCH, 5) * 3 + 1).requires_grad_()
    bn = torch.nn.BatchNorm1d(5)
    with torch.no_grad():
        bn.weight.copy_(torch.linspace(0.5, 2, 5))
    (bn(x) * torch.arange(5.)).sum().backward()
    xgrad = torch.cat([r['sync_bn']['xgrad'] for r in ranks])
    # each process's loss is its own half: the sum is the global loss
    torch.testing.assert_close(xgrad, x.grad, rtol=1e-4, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(
            r['sync_bn']['wgrad'] * WORLD, bn.weight.grad, rtol=1e-4,
            atol=1e-5)
        torch.testing.assert_close(r['sync_bn']['running_var'],
                                   bn.running_var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("learner", LEARNERS)
def test_two_processes_lose_as_one_on_the_global_batch(runs, learner):
    single, ranks = runs
    expected = single[learner]['losses']
    for it in range(ITERS):
        exp = expected[it]
        got = [r[learner]['losses'][it] for r in ranks]
        # the contrastive term is the global batch's on every process
        for g in got:
            assert g['loss_contrastive'] == pytest.approx(
                exp['loss_contrastive'], rel=1e-4), (learner, it)
        # the reconstruction terms are per-process means of equal halves
        for key in ('loss_rec_masked', 'loss_rec_unmasked'):
            mean = sum(g[key] for g in got) / WORLD
            assert mean == pytest.approx(exp[key], rel=1e-4), (key, it)
    # the losses moved: the steps did something
    assert expected[-1]['loss'] != pytest.approx(expected[0]['loss'])


@pytest.mark.parametrize("learner", LEARNERS)
def test_fsdp_loses_as_ddp(runs, learner):
    """FSDP shards the parameters; the steps stay the same."""
    _, ranks = runs
    for r in ranks:
        for it in range(ITERS):
            ddp, fsdp = r[learner]['losses'][it], r[f'{learner}_fsdp'][it]
            for key, value in ddp.items():
                assert fsdp[key] == pytest.approx(value, rel=1e-4), (key, it)


@pytest.mark.parametrize("learner", LEARNERS)
def test_ddp_gradients_equal_single_process(runs, learner):
    single, ranks = runs
    expected = single[learner]['grads']
    for r in ranks:
        got = r[learner]['grads']
        assert got.keys() == expected.keys()
        # relative to each gradient's norm, or for gradients that are 0 in
        # exact math (the last BN's bias before the head's BN) to the
        # largest one; float32 sums in another order stay far below 1e-4,
        # where the 1/world_size of mmpretrain's GatherLayer would be 0.5
        scale = max(g.norm() for g in expected.values())
        errors = {
            name: ((got[name] - grad).norm() /
                   max(grad.norm(), 1e-3 * scale)).item()
            for name, grad in expected.items()
        }
        worst = max(errors, key=errors.get)
        print(learner, worst, errors[worst], expected[worst].norm() / scale)
        assert errors[worst] < 1e-4, (worst, errors[worst])
    # a strong signal, not zeros that agree
    assert expected['backbone.cls_token'].abs().max() > 1e-6


def test_torchrun_trains_the_cpu_gloo_config(tmp_path, free_port, data_root):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MRCL_DATA=str(data_root),
               OMP_NUM_THREADS='1')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--master_addr=127.0.0.1', f'--master_port={free_port}',
        'tools/train.py', GLOO_CONFIG, '--launcher', 'pytorch',
        '--work-dir', str(tmp_path), '--cfg-options',
        'train_cfg.max_iters=2', 'train_dataloader.batch_size=4',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=2'
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log, log[-3000:]
    assert "dist_cfg: {'backend': 'gloo'}" in log
    assert 'GPU number: 2' in log  # mmengine's name for the world size
    assert 'loss_contrastive' in log and 'Iter(train) [2/2]' in log
    assert (tmp_path / 'iter_2.pth').is_file()


@pytest.mark.parametrize('strategy', ['fsdp', 'deepspeed'])
def test_flexible_runner_configs_inherit_the_paper_recipe(strategy, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import RUNNERS, STRATEGIES
    base = ROOT / ('configs/mrcl/'
                   'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py')
    paper = Config.fromfile(str(base))
    cfg = Config.fromfile(str(base).replace('.py', f'_{strategy}.py'))
    assert cfg.runner_type == 'FlexibleRunner'
    assert STRATEGIES.get(cfg.strategy.type) is not None
    # the same model, data, schedule and optimizer
    assert cfg.model == paper.model
    assert cfg.train_dataloader == paper.train_dataloader
    assert cfg.param_scheduler == paper.param_scheduler
    assert cfg.optim_wrapper.optimizer == paper.optim_wrapper.optimizer
    assert cfg.optim_wrapper.paramwise_cfg == paper.optim_wrapper.paramwise_cfg
    if strategy == 'fsdp':
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        # tools/train.py's path: RUNNERS.build gives mmengine's FlexibleRunner
        # with the strategy (the model and data are built at train())
        cfg.work_dir, cfg.launcher = str(tmp_path), 'none'
        runner = RUNNERS.build(cfg)
        assert type(runner).__name__ == 'FlexibleRunner'
        assert type(runner.strategy).__name__ == 'FSDPStrategy'
    else:
        # deepspeed is not installed here: the config is only parsed
        assert cfg.optim_wrapper.type == 'DeepSpeedOptimWrapper'
        assert 'loss_scale' not in cfg.optim_wrapper
        assert cfg.strategy.bf16.enabled and \
            cfg.strategy.zero_optimization.stage == 2
