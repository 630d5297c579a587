"""A run killed mid-way resumes exactly; checkpoints are never half-written;
a NaN loss stops the run; the loss terms are fp32 under autocast."""
import errno
import math
import shutil
import signal
import subprocess
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio.backends import LocalBackend
from mmengine.runner import Runner

from mrcl_plugin.checkpoint import load_checkpoint_file
from mrcl_plugin.engine.hooks import atomic_checkpoint_hook
from mrcl_plugin.models.heads import MRCLReconstructionHead
from mrcl_testing import (ROOT, SMALL_CIFAR, TINY_TRAIN_OPTIONS, build,
                          logged_iterations, mrcl_cfg, set_max_iters,
                          train_command, train_env, two_views)

LOSS_KEYS = ('loss', 'loss_contrastive', 'loss_rec_masked',
             'loss_rec_unmasked', 'lr')


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    """4 iterations, a checkpoint every 2. One run goes through; the other
    is SIGKILLed once iter_2.pth is saved, then resumed with --resume: its
    iterations 3 and 4 have the same losses and lr, bit for bit. With
    num_workers=0 the augmentations draw from the main process's generators,
    the case mmengine alone gets wrong."""
    env = train_env()
    full, killed = tmp_path / 'full', tmp_path / 'killed'
    reference = subprocess.Popen(
        train_command(full), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(
        train_command(killed), cwd=ROOT,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / 'last_checkpoint'
    while victim.poll() is None and not (
            last.is_file() and last.read_text().endswith('iter_2.pth')):
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, 'finished before the kill'
    assert 4 not in logged_iterations(killed)
    ckpt = load_checkpoint_file(killed / 'iter_2.pth')
    assert set(ckpt['rng_states']) >= {'python', 'numpy', 'torch'}

    resumed = subprocess.run(
        train_command(killed, '--resume'),
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 2' in resumed.stdout + resumed.stderr
    _, err = reference.communicate()
    assert reference.returncode == 0, err[-3000:]

    want, got = logged_iterations(full), logged_iterations(killed)
    assert sorted(want) == sorted(got) == [1, 2, 3, 4]
    for it in (3, 4):
        assert {k: got[it][k] for k in LOSS_KEYS} == \
            {k: want[it][k] for k in LOSS_KEYS}, it
    # Not trivially equal: the losses move between iterations.
    assert len({want[it]['loss'] for it in want}) == 4


# -- in-process runs ----------------------------------------------------------


def tiny_runner(work_dir, data_root, max_iters=4, **options):
    cfg = Config.fromfile(str(ROOT / SMALL_CIFAR))
    cfg.merge_from_dict(
        dict(TINY_TRAIN_OPTIONS, **{'train_cfg.max_iters': max_iters},
             **options))
    cfg.work_dir = str(work_dir)
    cfg.log_level = 'WARNING'
    cfg.experiment_name = f'{work_dir.name}_{work_dir.parent.name}'
    return Runner.from_cfg(cfg)


def checkpoint_files(work_dir):
    return sorted(p.name for p in work_dir.iterdir()
                  if p.is_file() and not p.name.endswith('.py'))


def test_kill_between_write_and_rename_keeps_previous_checkpoint(
        tmp_path, mrcl_data_env, monkeypatch):
    """What a SIGKILL leaves on disk after iter_2's bytes are written but
    before the rename: a copy of the work_dir taken at that instant."""
    work, at_kill = tmp_path / 'work', tmp_path / 'at_kill'
    replace = atomic_checkpoint_hook.os.replace

    def kill_before_rename(src, dst):
        if str(dst).endswith('iter_2.pth'):
            shutil.copytree(work, at_kill)
            raise KeyboardInterrupt  # stop the run here
        replace(src, dst)

    monkeypatch.setattr(atomic_checkpoint_hook.os, 'replace',
                        kill_before_rename)
    with pytest.raises(KeyboardInterrupt):
        tiny_runner(work, mrcl_data_env, max_iters=2,
                    **{'default_hooks.checkpoint.interval': 1}).train()

    assert checkpoint_files(at_kill) == [
        '.iter_2.pth.part', 'iter_1.pth', 'last_checkpoint']
    assert (at_kill / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert load_checkpoint_file(at_kill / 'iter_1.pth')['meta']['iter'] == 1
    # The partial file is complete, only not yet renamed.
    assert load_checkpoint_file(at_kill / '.iter_2.pth.part')['meta'][
        'iter'] == 2
    # The run itself removed its partial file as the error went up.
    assert checkpoint_files(work) == ['iter_1.pth', 'last_checkpoint']


def test_disk_full_during_save(tmp_path, mrcl_data_env, monkeypatch):
    put = LocalBackend.put

    def put_until_full(self, obj, filepath):
        if 'iter_2' in str(filepath):
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
            raise OSError(errno.ENOSPC, 'No space left on device')
        put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', put_until_full)
    with pytest.raises(OSError) as err:
        tiny_runner(tmp_path, mrcl_data_env, max_iters=2,
                    **{'default_hooks.checkpoint.interval': 1}).train()
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC
    assert 'iter_2.pth not saved (No space left on device)' in message
    assert f'{tmp_path}/iter_1.pth is intact' in message
    assert checkpoint_files(tmp_path) == ['iter_1.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_1.pth')
    assert load_checkpoint_file(tmp_path / 'iter_1.pth')['meta']['iter'] == 1


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, mrcl_data_env, monkeypatch):
    """loss_rec_unmasked turns NaN at iteration 3 (an injected fault)."""
    loss, calls = MRCLReconstructionHead.loss, []

    def nan_at_third_call(self, *args, **kwargs):
        losses = loss(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses['loss_rec_unmasked'] = losses['loss_rec_unmasked'] * \
                float('nan')
        return losses

    monkeypatch.setattr(MRCLReconstructionHead, 'loss', nan_at_third_call)
    runner = tiny_runner(tmp_path, mrcl_data_env, max_iters=3,
                         **{'default_hooks.checkpoint.interval': 1})
    with pytest.raises(FloatingPointError) as err:
        runner.train()
    assert str(err.value).startswith(
        'non-finite loss at iteration 3: loss_rec_unmasked = nan; training '
        f'stopped, last good checkpoint: {tmp_path}/iter_2.pth')
    assert not (tmp_path / 'iter_3.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text().endswith('iter_2.pth')
    ckpt = load_checkpoint_file(tmp_path / 'iter_2.pth')
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values())


@pytest.mark.parametrize('variant', ['barlowtwins', 'byol'])
def test_loss_terms_are_fp32_under_autocast(variant):
    """bf16 autocast on the CPU stands in for AMP: the encoder runs in bf16,
    each loss term comes out fp32, and close to the fp32 model's."""
    torch.manual_seed(0)
    model = build(mrcl_cfg(variant))
    model.train()
    set_max_iters()
    views = two_views(4)
    torch.manual_seed(1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mixed = model.loss(views, [])
        latent, _, ids_restore = model.backbone(torch.cat(views))
        pred = model.decoder(latent, ids_restore)
    assert pred.dtype == torch.bfloat16
    torch.manual_seed(1)
    full = model.loss(views, [])
    assert set(mixed) == {'loss_contrastive', 'loss_rec_masked',
                          'loss_rec_unmasked'}
    for key, value in mixed.items():
        assert value.dtype == torch.float32, key
        assert math.isclose(value.item(), full[key].item(), rel_tol=0.1), key
