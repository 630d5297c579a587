"""A run killed mid-way resumes exactly; checkpoints are never half-written;
a NaN loss stops the run; the loss terms are fp32 under autocast."""
import errno
import math
import os
import signal
import subprocess
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import CheckpointHook
from mmengine.runner import Runner

from mrcl_plugin.checkpoints import atomic
from mrcl_plugin.checkpoints import latest_checkpoint, load_checkpoint_file
from mrcl_plugin.models.heads import MRCLReconstructionHead
from mrcl_testing import (ROOT, SMALL_CIFAR, TINY_TRAIN_OPTIONS, build,
                          logged_iterations, mrcl_cfg, run_tool,
                          set_max_iters, train_command, train_env, two_views)

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


class _KillMidWrite:
    """A file object that writes half of what it is given, then SIGKILLs
    its process: the kill a user's ``kill -9`` or the OOM killer gives."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def killed_while_writing(module, name, action):
    """Run ``action`` in a forked copy of this process whose ``open`` in
    ``module`` (the real code that writes checkpoint bytes) SIGKILLs it
    half-way through writing a file whose name ends with ``name``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            def open_then_die(path, mode='r', *args, **kwargs):
                f = open(path, mode, *args, **kwargs)
                return _KillMidWrite(f) if str(path).endswith(name) else f

            module.open = open_then_die  # module globals shadow builtins
            action()
        finally:
            os._exit(3)  # the kill never came
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f'not killed while writing *{name} (status {status})'


def checkpoint_hook(runner):
    return next(h for h in runner.hooks if isinstance(h, CheckpointHook))


def test_kill_during_interval_save_keeps_previous_checkpoint(
        tmp_path, mrcl_data_env):
    runner = tiny_runner(tmp_path, mrcl_data_env, max_iters=2,
                         **{'default_hooks.checkpoint.interval': 1})
    runner.train()  # iter_1.pth, iter_2.pth
    killed_while_writing(
        atomic, 'iter_3.pth.part',
        lambda: checkpoint_hook(runner).after_train_iter(runner, 2))
    # mmengine drops the oldest kept checkpoint (max_keep_ckpts=2) before
    # it writes; the torn bytes are under the temporary name only.
    assert checkpoint_files(tmp_path) == [
        '.iter_3.pth.part', 'iter_2.pth', 'last_checkpoint']
    assert latest_checkpoint(str(tmp_path)) == f'{tmp_path}/iter_2.pth'
    assert load_checkpoint_file(tmp_path / 'iter_2.pth')['meta']['iter'] == 2


def test_kill_during_best_save_leaves_no_torn_best(tmp_path, mrcl_data_env):
    runner = tiny_runner(tmp_path, mrcl_data_env, max_iters=2,
                         **{'default_hooks.checkpoint.interval': 1,
                            'default_hooks.checkpoint.save_best': 'acc',
                            'default_hooks.checkpoint.rule': 'greater'})
    runner.train()
    hook = checkpoint_hook(runner)
    hook.after_val_epoch(runner, {'acc': 0.5})
    assert (tmp_path / 'best_acc_iter_2.pth').is_file()
    runner.train_loop._iter = 3  # a later evaluation (no public setter)
    killed_while_writing(atomic, 'best_acc_iter_3.pth.part',
                         lambda: hook.after_val_epoch(runner, {'acc': 0.6}))
    # mmengine removes the previous best before writing the new one (its
    # order, kept); no torn file is left under the new best's name, and
    # the interval checkpoints are untouched.
    assert checkpoint_files(tmp_path) == [
        '.best_acc_iter_3.pth.part', 'iter_1.pth', 'iter_2.pth',
        'last_checkpoint']
    assert latest_checkpoint(str(tmp_path)) == f'{tmp_path}/iter_2.pth'
    assert load_checkpoint_file(tmp_path / 'iter_2.pth')['meta']['iter'] == 2


def test_kill_during_last_checkpoint_write_resumes_from_newest(
        tmp_path, mrcl_data_env):
    """mmengine writes ``last_checkpoint`` with a bare ``open`` after the
    checkpoint: a kill there leaves it torn, and --resume falls back to the
    newest checkpoint in the work_dir."""
    from mmengine.hooks import checkpoint_hook as mmengine_checkpoint_hook
    runner = tiny_runner(tmp_path, mrcl_data_env, max_iters=2,
                         **{'default_hooks.checkpoint.interval': 1})
    runner.train()
    killed_while_writing(
        mmengine_checkpoint_hook, 'last_checkpoint',
        lambda: checkpoint_hook(runner).after_train_iter(runner, 2))
    torn = (tmp_path / 'last_checkpoint').read_text()
    assert torn and f'{tmp_path}/iter_3.pth'.startswith(torn) and \
        not torn.endswith('.pth')
    assert checkpoint_files(tmp_path) == [
        'iter_2.pth', 'iter_3.pth', 'last_checkpoint']
    assert latest_checkpoint(str(tmp_path)) == f'{tmp_path}/iter_3.pth'

    error = run_tool('train.py', train_command(
        tmp_path, '--resume', **{'train_cfg.max_iters': 4,
                                 'default_hooks.checkpoint.interval': 1})[2:])
    assert error == ''
    assert 4 in logged_iterations(tmp_path)
    assert (tmp_path / 'last_checkpoint').read_text() == \
        f'{tmp_path}/iter_4.pth'


@pytest.mark.parametrize('pointer', [None, '', 'torn', 'missing'])
def test_latest_checkpoint_falls_back_to_the_newest(tmp_path, pointer):
    for step in (2, 10, 4):  # by step, not by name
        (tmp_path / f'iter_{step}.pth').write_bytes(b'x')
    (tmp_path / 'best_acc_iter_12.pth').write_bytes(b'x')
    (tmp_path / '.iter_12.pth.part').write_bytes(b'x')
    if pointer is not None:
        (tmp_path / 'last_checkpoint').write_text(
            dict(torn=f'{tmp_path}/it', missing=f'{tmp_path}/iter_12.pth'
                 ).get(pointer, pointer))
    assert latest_checkpoint(str(tmp_path)) == f'{tmp_path}/iter_10.pth'
    (tmp_path / 'last_checkpoint').write_text(f'{tmp_path}/iter_4.pth')
    assert latest_checkpoint(str(tmp_path)) == f'{tmp_path}/iter_4.pth'
    assert latest_checkpoint(str(tmp_path / 'nothing')) is None


def test_disk_full_during_save(tmp_path, mrcl_data_env, monkeypatch):
    real_open = open

    def open_on_full_disk(path, mode='r', *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if 'iter_2' in str(path):
            f.write(b'half a checkpoint')
            f.close()
            raise OSError(errno.ENOSPC, 'No space left on device')
        return f

    monkeypatch.setattr(atomic, 'open', open_on_full_disk, raising=False)
    with pytest.raises(OSError) as err:
        tiny_runner(tmp_path, mrcl_data_env, max_iters=2,
                    **{'default_hooks.checkpoint.interval': 1}).train()
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == (
        f'[Errno 28] {tmp_path}/iter_2.pth not saved (No space left on '
        'device); nothing was written under its name')
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


@pytest.mark.parametrize('learner', ['barlowtwins', 'byol'])
def test_loss_terms_are_fp32_under_autocast(learner):
    """bf16 autocast on the CPU stands in for AMP: the encoder runs in bf16,
    each loss term comes out fp32, and close to the fp32 model's."""
    torch.manual_seed(0)
    model = build(mrcl_cfg(learner))
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
