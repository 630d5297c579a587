"""The DeepSpeed config on CPU processes, and its checkpoints converted.

DeepSpeed is optional (requirements/deepspeed.txt), so CI has it not: there
the config stops with one line naming it. With it installed, 2 processes
on gloo train the DeepSpeed config (ZeRO-2) in fp32 with DDP's losses, and
in bf16 as shipped; what they save converts. The converter's test reads a
real 2-process bf16 ZeRO-2 checkpoint folder committed in
``tests/data/zero_checkpoint`` (written by this file run as a script in an
environment with DeepSpeed: ``python tests/test_deepspeed.py``).
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mrcl_plugin.checkpoints import CheckpointError, load_checkpoint_file
from mrcl_plugin.checkpoints.converters import convert_file, to_mmpretrain, to_timm
from mrcl_plugin.checkpoints.zero import (MODEL_STATES, STAND_INS,
                                         load_zero_checkpoint)
from mrcl_testing import (DATA, ROOT, free_port, logged_iterations,
                          run_tool, write_stl10)
from test_config_matrix import options, stl10_root  # noqa: F401 (fixture)

FIXTURE = Path(__file__).parent / 'data' / 'zero_checkpoint'
CONFIGS = ROOT / 'configs' / 'mrcl'
DDP_CONFIG = CONFIGS / 'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'
DS_CONFIG = CONFIGS / (DDP_CONFIG.stem + '_deepspeed.py')
# 2 processes x 4 images, 8 iterations, each logged as it is (no smoothing)
RUN = {'train_dataloader.batch_size': 4, 'train_dataloader.dataset.indices':
       64, 'randomness.seed': 0, 'log_processor.window_size': 1}
# the fixture: a 16-wide, 1-layer model, 2 iterations
TINY = {
    'model.backbone.arch': dict(embed_dims=16, num_layers=1, num_heads=2,
                                feedforward_channels=32),
    'model.decoder.embed_dim': 16, 'model.decoder.decoder_embed_dim': 16,
    'model.decoder.decoder_num_heads': 2, 'model.neck.in_channels': 16,
    'model.neck.hid_channels': 16, 'model.neck.out_channels': 16,
    'model.head.in_channels': 16, 'train_dataloader.dataset.indices': 16}


def torchrun(config: Path, work: Path, stl10_root: Path, *args: str,
             **extra) -> dict:
    """``tools/train.py CONFIG --launcher pytorch [args]`` on 2 gloo
    processes (torchrun, as ``tools/dist_train.sh CONFIG 2`` starts it),
    shrunk as the config matrix shrinks it; {iteration: logged scalars} of
    every run in ``work`` (a new one unless ``args`` resume)."""
    if '--resume' not in args:
        shutil.rmtree(work, ignore_errors=True)
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        f'--master_port={free_port()}', 'tools/train.py', str(config),
        '--work-dir', str(work), '--launcher', 'pytorch', *args,
        '--cfg-options', *options(config, stl10_root, **{**RUN, **extra})]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MRCL_DATA=str(DATA),
               OMP_NUM_THREADS='1')
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return logged_iterations(work)


def losses(logged: dict) -> dict:
    return {i: {k: v for k, v in r.items() if k.startswith('loss')}
            for i, r in logged.items()}


def test_deepspeed_trains_as_ddp_or_names_what_it_needs(tmp_path,
                                                       stl10_root):
    """Without DeepSpeed (CI's set-up) the config stops at the start with
    one line naming it, before anything is written. With it, on 2 gloo
    processes: ZeRO-2 in fp32 logs DDP's losses on the same seed and data,
    the shipped bf16 config trains within bf16's distance of them, and its
    checkpoint folder converts to fp32 weights that round to what it
    trained with."""
    if importlib.util.find_spec('deepspeed') is None:
        message = run_tool('train.py', [
            DS_CONFIG, '--work-dir', tmp_path, '--cfg-options',
            *options(DS_CONFIG, stl10_root)])
        assert 'deepspeed' in message.lower() and '\n' not in message, \
            message
        assert not list(tmp_path.rglob('*.pth'))
        return
    fp32 = {'strategy.bf16.enabled': False}
    base = Config.fromfile(str(DDP_CONFIG)).optim_wrapper
    ddp = losses(torchrun(
        DDP_CONFIG, tmp_path / 'ddp', stl10_root, optim_wrapper=dict(
            _delete_=True, type='OptimWrapper', optimizer=base.optimizer,
            paramwise_cfg=base.paramwise_cfg)))
    zero = losses(torchrun(DS_CONFIG, tmp_path / 'zero', stl10_root, **fp32))
    assert len(ddp) == 8 and zero == ddp
    bf16 = losses(torchrun(DS_CONFIG, tmp_path / 'bf16', stl10_root))
    for i, terms in ddp.items():
        for key, value in terms.items():
            assert bf16[i][key] == pytest.approx(value, rel=0.05), (i, key)
    check_converts(tmp_path / 'bf16' / 'epoch_1.pth', tmp_path)


def test_deepspeed_resumes_or_names_what_it_needs(tmp_path, stl10_root):
    """``--resume`` takes a DeepSpeed run's folder: every file in it is read
    as data first (tests/test_checkpoint_doors.py has a crafted one).
    Without DeepSpeed the run stops at the start with one line naming it.
    With it, on 2 gloo processes in fp32: one epoch, then ``--resume`` for
    a second, logs the losses of two uninterrupted epochs."""
    if importlib.util.find_spec('deepspeed') is None:
        folder = tmp_path / 'work' / 'epoch_1.pth'
        shutil.copytree(FIXTURE, folder)
        message = run_tool('train.py', [
            DS_CONFIG, '--work-dir', tmp_path / 'work', '--resume', folder,
            '--cfg-options', *options(DS_CONFIG, stl10_root, **TINY)])
        assert message.startswith('error: the config does not build: ') \
            and 'deepspeed' in message.lower() and '\n' not in message
        return
    fp32 = {'strategy.bf16.enabled': False}
    whole = losses(torchrun(DS_CONFIG, tmp_path / 'whole', stl10_root,
                            **fp32, **{'train_cfg.max_epochs': 2}))
    torchrun(DS_CONFIG, tmp_path / 'cut', stl10_root, **fp32)
    resumed = losses(torchrun(DS_CONFIG, tmp_path / 'cut', stl10_root,
                              '--resume', **fp32,
                              **{'train_cfg.max_epochs': 2}))
    assert len(whole) == 16 and resumed == whole


def check_converts(folder: Path, tmp_path: Path) -> None:
    """The folder's encoder converts (strictly loaded) to fp32 weights: each
    trainable one is the fp32 master weight whose bf16 rounding the module
    trained with, so most differ from the module's bf16 value."""
    module = load_checkpoint_file(folder / MODEL_STATES,
                                  stand_ins=STAND_INS)['module']
    report = convert_file(folder, tmp_path / 'encoder.pth', 'mmpretrain')
    assert 'strict load into the mmpretrain VisionTransformer: ok' in report
    encoder = torch.load(tmp_path / 'encoder.pth', weights_only=True)
    state = encoder['state_dict']
    assert {v.dtype for v in state.values()} == {torch.float32}
    master = 0
    for key, value in state.items():
        trained = module['backbone.' + key]
        assert trained.dtype == torch.bfloat16
        assert torch.equal(value.to(torch.bfloat16), trained), key
        master += not torch.equal(value, trained.float())
    frozen = 1  # MAE's fixed sin-cos position embedding: no master copy
    assert master == len(state) - frozen, (master, len(state))
    assert torch.equal(state['pos_embed'],
                       module['backbone.pos_embed'].float())
    assert encoder['meta']['learner'] == 'barlowtwins'


def test_a_zero_checkpoint_converts_to_its_fp32_master_weights(tmp_path):
    """The committed 2-process bf16 ZeRO-2 folder: the encoder converts for
    mmpretrain and timm, its meta read from the folder's ``meta['mrcl']``
    (which DeepSpeed saves only with the compat fix of its hooks)."""
    check_converts(FIXTURE, tmp_path)
    meta = to_timm(FIXTURE)['meta']
    assert meta['iter'] == 2 and meta['mask_ratio'] == 0.2
    assert meta['timm_kwargs']['embed_dim'] == 16
    ckpt = load_zero_checkpoint(FIXTURE)
    assert ckpt['meta']['mrcl']['rec_weights'] == {'alpha': 7.0, 'lambd': 2.0}


@pytest.fixture
def broken_copy(tmp_path):
    folder = tmp_path / 'epoch_1.pth'
    shutil.copytree(FIXTURE, folder)
    return folder


def test_a_zero_checkpoint_missing_a_rank_is_refused(broken_copy):
    next(broken_copy.glob('*zero_pp_rank_1_*')).unlink()
    with pytest.raises(CheckpointError, match=r'ranks 0\.\.1, found ranks '
                       r'\[0\]'):
        to_mmpretrain(broken_copy)


def test_a_zero3_checkpoint_is_refused(broken_copy):
    """ZeRO-3 partitions each parameter, not each group: refused with one
    line rather than unflattened wrongly."""
    path = broken_copy / MODEL_STATES
    model = load_checkpoint_file(path, stand_ins=STAND_INS)
    model['ds_config']['zero_optimization']['stage'] = 3
    torch.save(model, path)
    with pytest.raises(CheckpointError, match='ZeRO stage 3') as e:
        to_mmpretrain(broken_copy)
    assert '\n' not in str(e.value)


def test_slices_of_another_save_are_refused(broken_copy):
    path = broken_copy / MODEL_STATES
    model = load_checkpoint_file(path, stand_ins=STAND_INS)
    shapes = model['param_shapes'][0]
    name = next(iter(shapes))
    shapes[name] = torch.Size([shapes[name].numel() + 64])
    torch.save(model, path)
    with pytest.raises(CheckpointError, match='not of one save'):
        to_mmpretrain(broken_copy)


if __name__ == '__main__':
    # Rewrite tests/data/zero_checkpoint: 2 processes, bf16 ZeRO-2, tiny.
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_stl10(tmp / 'stl10', train=8, unlabeled=8, test=4)
        torchrun(DS_CONFIG, tmp / 'work', tmp / 'stl10', **TINY)
        shutil.rmtree(FIXTURE, ignore_errors=True)
        shutil.copytree(tmp / 'work' / 'epoch_1.pth', FIXTURE)
    print(json.dumps({p.name: p.stat().st_size for p in FIXTURE.iterdir()}))
