"""``CompileHook`` in a config's ``custom_hooks``: compiled and eager
steps give the same losses, the mask stays eager, and the checkpoints keep
their keys.

The compiled runs use the ``aot_eager`` backend: dynamo's capture and AOT
autograd's joint forward/backward graph, as inductor gets them, executed
by eager kernels. Inductor's C++ code generation alone takes ~1 min for
even the tiny model on the 2-core CI machine (over the test budget);
tools/analysis_tools/benchmark_compile.py checks inductor's losses against
eager on the shipped configs.
"""
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch._dynamo
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.models import MAEPretrainDecoder
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from mrcl_testing import (ROOT, SMALL_CIFAR, build, logged_iterations,
                          mrcl_cfg, set_max_iters, train_command,
                          train_env, two_views)

from mrcl_plugin.checkpoints import load_checkpoint_file
from mrcl_plugin.checkpoints.converters import convert_file
from mrcl_plugin.engine.hooks.compile_hook import compile_modules

ITERS = 4  # mrcl_testing.TINY_TRAIN_OPTIONS, a checkpoint at 2 and 4


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The small config at tiny sizes, eager and with ``CompileHook``
    (aot_eager) appended to its custom_hooks, side by side (one core
    each)."""
    root = tmp_path_factory.mktemp('compile')
    env = dict(train_env(), OMP_NUM_THREADS='1')
    cfg = Config.fromfile(ROOT / SMALL_CIFAR)
    cfg.custom_hooks.append(dict(type='CompileHook', backend='aot_eager'))
    cfg.dump(root / 'compiled.py')

    def train(name):
        config = root / 'compiled.py' if name == 'compiled' else SMALL_CIFAR
        proc = subprocess.run(
            train_command(root / name, config=config), cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return name, root / name

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(train, ['eager', 'compiled']))


def test_compiled_training_logs_the_eager_losses(runs):
    log = next(runs['compiled'].glob('*/*.log')).read_text()
    assert ("CompileHook: torch.compile({'backend': 'aot_eager'}) of "
            'backbone, decoder') in log
    eager, compiled = (logged_iterations(runs[n]) for n in runs)
    assert sorted(compiled) == sorted(eager) == list(range(1, ITERS + 1))
    for it in eager:
        for key in ('loss', 'loss_contrastive', 'loss_rec_masked',
                    'loss_rec_unmasked'):
            assert compiled[it][key] == pytest.approx(
                eager[it][key], rel=1e-5), (it, key)


def test_compiled_checkpoint_loads_uncompiled_and_converts(runs, tmp_path):
    path = runs['compiled'] / f'iter_{ITERS}.pth'
    ckpt = load_checkpoint_file(str(path))
    eager = load_checkpoint_file(str(runs['eager'] / f'iter_{ITERS}.pth'))
    assert list(ckpt['state_dict']) == list(eager['state_dict'])
    assert not [k for k in ckpt['state_dict'] if '_orig_mod' in k]
    cfg = Config.fromstring(ckpt['meta']['cfg'], file_format='.py')
    model = build(cfg.model.to_dict())  # not compiled
    model.load_state_dict(ckpt['state_dict'], strict=True)
    report = convert_file(str(path), str(tmp_path / 'vit.pth'), 'mmpretrain')
    assert 'strict load into the mmpretrain VisionTransformer: ok' in report


def steps(model, n=2):
    optim = build_optim_wrapper(
        model, dict(optimizer=dict(type='AdamW', lr=1e-3)))
    data = dict(inputs=two_views(4), data_samples=[DataSample()] * 4)
    return [float(model.train_step(data, optim)['loss']) for _ in range(n)]


def test_momentum_target_is_compiled_and_masks_stay_eager():
    """MR-BYOL: the online encoder, the decoder and the target's encoder
    copy are compiled, the mask draw is the one graph break, the random
    masks and the losses are eager's, the state dict keeps its keys."""
    set_max_iters(10)
    torch.manual_seed(0)
    eager = build(mrcl_cfg('byol'))
    torch.manual_seed(0)
    model = build(mrcl_cfg('byol'))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert compile_modules(model, backend='aot_eager') == [
        'backbone', 'decoder', 'target_net.module.0']
    torch.manual_seed(1)
    want = steps(eager.train())
    torch.manual_seed(1)
    assert steps(model.train()) == pytest.approx(want, rel=1e-5)
    breaks = torch._dynamo.utils.counters['graph_break']
    assert breaks and all('MRCLViT.draw_mask' in r for r in breaks), \
        dict(breaks)
    # the online encoder after the mask draw, the decoder, the target's
    # encoder (without gradient): no layer broken into pieces
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 3
    assert list(model.state_dict()) == list(eager.state_dict())


def test_compile_modules_needs_a_module_to_compile():
    init_default_scope('mmpretrain')
    decoder = MODELS.build(dict(type='MAEPretrainDecoder', num_patches=4,
                                patch_size=2, embed_dim=8,
                                decoder_embed_dim=8, decoder_depth=1,
                                decoder_num_heads=2))
    assert isinstance(decoder, MAEPretrainDecoder)
    with pytest.raises(ValueError, match=r"CompileHook.types \('MRCLViT',\)"
                       ': the model has no module of these classes'):
        compile_modules(decoder, ('MRCLViT', ))


def test_hook_refuses_an_unknown_backend():
    from mrcl_plugin.engine.hooks import CompileHook
    with pytest.raises(ValueError, match=r"CompileHook.backend = 'inductr': "
                       r'not a torch.compile backend \(one of .*inductor'):
        CompileHook(backend='inductr')



def test_benchmark_compile_in_miniature():
    """tools/analysis_tools/benchmark_compile.py on the small config cut to
    one layer at 16 px, 3 steps: same losses, figures that parse."""
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark_compile.py',
         '--batch', '2', '--iters', '3', '--warmup', '1', '--img-size',
         '16', '--backend', 'aot_eager', '--cfg-options',
         'model.backbone.arch.num_layers=1'],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'compiled  : backbone, decoder ' in out.stdout
    losses = {m: re.search(rf'^{m} +losses: (.*)$', out.stdout, re.M)
              for m in ('eager', 'compiled')}
    assert all(losses.values()), out.stdout
    assert losses['eager'][1] == losses['compiled'][1]
    assert len(losses['eager'][1].split()) == 3
    compile_s = float(re.search(r'compile time +: (-?[\d.]+) s',
                                out.stdout)[1])
    speed_up = float(re.search(r'speed-up ([\d.]+)x', out.stdout)[1])
    assert compile_s > 0 and speed_up > 0
    assert 'first loss     : relative difference 0.00e+00' in out.stdout
    assert re.search(r'max relative difference 0\.00e\+00 over 3 steps, '
                     r'equal within rtol 1\.00e-03$', out.stdout, re.M)


def test_benchmark_compile_noise_floor_in_miniature():
    """--noise-floor perturbs eager three ways and ranks the compiled drift
    against them step by step; --compile-only compiles one part."""
    out = subprocess.run(
        [sys.executable, 'tools/analysis_tools/benchmark_compile.py',
         '--batch', '2', '--iters', '3', '--warmup', '1', '--img-size',
         '16', '--backend', 'aot_eager', '--noise-floor', '--compile-only',
         'encoder', '--cfg-options', 'model.backbone.arch.num_layers=1'],
        cwd=ROOT, env=train_env(), capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'compiled  : backbone ' in out.stdout  # not the decoder
    floor = dict(re.findall(r'^noise floor +: (eager [\w ]+?) +max relative '
                            r'difference (\S+)$', out.stdout, re.M))
    assert sorted(floor) == ['eager 1 thread', 'eager 1 ulp', 'eager math']
    # fp32: every normalised pixel one ulp off moves the losses
    assert float(floor['eager 1 ulp']) > 0
    drift = re.search(r'^compiled drift : (.*)\nnoise floor +: (.*)\n'
                      r'compiled +: (within the noise floor|OUTSIDE)',
                      out.stdout, re.M)
    assert drift, out.stdout
    assert len(drift[1].split()) == len(drift[2].split()) == 3


def test_mmengine_compile_switch_compiles_through_the_hook(tmp_path):
    """``--cfg-options compile...`` (mmengine's key, which would compile
    the whole train_step and fail to trace it) trains with CompileHook on
    the encoder and the decoder, with its options."""
    from mrcl_testing import run_tool
    argv = train_command(tmp_path, **{'compile.backend': 'aot_eager'})[2:]
    assert run_tool('train.py', argv) == ''
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert ("CompileHook: torch.compile({'backend': 'aot_eager'}) of "
            'backbone, decoder') in log
    assert sorted(logged_iterations(tmp_path)) == list(range(1, ITERS + 1))
