"""Eager against compiled train steps of an MRCL config (``CompileHook``).

Trains the config's model twice from the same seed for ``--iters`` steps on
one fixed batch of two uint8 views: eagerly, then with the encoder and the
decoder compiled in place as ``CompileHook`` does
(:func:`mrcl_plugin.engine.hooks.compile_hook.compile_modules`; the masks
are drawn eagerly, so both runs see the same ones), and prints

  compile time   the first compiled step less the first eager step, with a
                 fresh inductor cache (a cold start: a second run of the
                 same shapes reads the cache and compiles faster),
  step time      median over the steps after ``--warmup``, each mode, and
                 the speed-up eager / compiled,
  losses         every step's loss in both modes and the largest relative
                 difference, within ``--rtol``: by default 1e-3 in fp32,
                 and under AMP how far AMP's own rounding moves them (a
                 third run, eager in fp32), since inductor rounds to bf16
                 at other places than eager and AdamW carries it on;
                 and the first step's alone (the same weights and masks:
                 only the order of float operations differs). Barlow
                 Twins at a small batch amplifies a reordering into
                 percents within a few AdamW steps, fp32 included.
  noise floor    (--noise-floor) how far eager moves from itself under
                 changes that should not matter: one thread instead of
                 all, the other attention kernel (math / flash), and every
                 normalised input pixel one ulp off (the preprocessor's
                 mean moved to the next float). The compiled drift is
                 within the floor when no step's difference exceeds the
                 largest of theirs at that step. --compile-only encoder,
                 decoder or a module's name (backbone.layers.0.ln1)
                 compiles that alone, to find the ops whose compiled
                 form moves the losses (--iters 1: the first step's).

    python tools/analysis_tools/benchmark_compile.py            # CIFAR-10
    python tools/analysis_tools/benchmark_compile.py --amp bf16
    python tools/analysis_tools/benchmark_compile.py \\
        configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py \\
        --batch 8 --amp bf16 --iters 5 --warmup 2 --noise-floor

Needs what benchmark_train_step.py needs, and a C++ compiler for inductor.
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import tempfile
from contextlib import nullcontext

import torch
from mmengine.logging import MessageHub, MMLogger
from mmengine.registry import init_default_scope

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from benchmark_train_step import (add_step_arguments, build,  # noqa: E402
                                  load_config, machine_line, make_data,
                                  model_cfgs, optim_cfg, timed_step)

from mrcl_plugin.engine.hooks.compile_hook import (  # noqa: E402
    COMPILED_TYPES, compile_in_place, compile_modules)

CONFIG = 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'  # noqa
PARTS = dict(encoder=('MRCLViT', ),
             decoder=('MAEPretrainDecoder', 'CheckpointedMAEDecoder'))


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p, CONFIG, batch=64)
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3,
                   help='steps left out of the step time (default 3)')
    p.add_argument('--backend', default='inductor')
    p.add_argument('--mode', help='torch.compile mode (default its default)')
    p.add_argument('--rtol', type=float, help='loss tolerance (default '
                   "1e-3 in fp32; under AMP, the AMP run's own distance "
                   'from fp32)')
    p.add_argument('--noise-floor', action='store_true',
                   help='also run eager with one thread, the other '
                   'attention kernel and the input one ulp off')
    p.add_argument('--compile-only', metavar='PART',
                   help="compile only 'encoder', only 'decoder', or only "
                   "the module of that name (e.g. backbone.layers.0.ln1)")
    args = p.parse_args()
    if args.iters <= args.warmup:
        p.error(f'--iters {args.iters} must exceed --warmup {args.warmup}')
    if args.device == 'cpu' and args.amp == 'fp16':
        p.error('--amp fp16 needs --device cuda (on a CPU use --amp bf16)')
    return args


def train(cfg, model_cfg, optim, args, compiled, threads=None,
          kernel=nullcontext(), ulp_off=False):
    """(step times, losses) of ``--iters`` steps from seed 0; ``threads``,
    ``kernel`` (an attention-kernel context) and ``ulp_off`` perturb an
    eager run for the noise floor."""
    model, optim_wrapper = build(model_cfg, optim, args)  # seeds 0
    if compiled:
        kwargs = dict(backend=args.backend)
        if args.mode:
            kwargs['mode'] = args.mode
        if args.compile_only in (None, *PARTS):
            names = compile_modules(
                model, PARTS.get(args.compile_only, COMPILED_TYPES), **kwargs)
        else:
            names = [args.compile_only]
            compile_in_place(model.get_submodule(args.compile_only),
                             **kwargs)
        print(f'compiled  : {", ".join(names)} ({kwargs})', flush=True)
    if ulp_off:
        mean = model.data_preprocessor.mean
        mean.copy_(torch.nextafter(mean, torch.full_like(mean, 1e9)))
    data = make_data(cfg, args.batch, args.device)
    times, losses = [], []
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)
    try:
        with kernel:
            for _ in range(args.iters):
                t, log_vars = timed_step(model, optim_wrapper, data,
                                         args.device)
                times.append(t)
                losses.append(
                    float(torch.as_tensor(log_vars['loss']).detach()))
    finally:
        torch.set_num_threads(default_threads)
    return times, losses


def noise_floor(cfg, model_cfg, optim, args) -> dict:
    """The perturbed eager runs, by name."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    other_optim, kernel = optim, nullcontext()
    if optim.get('sdpa_backend'):  # CPUBF16OptimWrapper picks the kernel
        other = dict(math='flash_attention',
                     flash_attention='math')[optim['sdpa_backend']]
        other_optim = dict(optim, sdpa_backend=other)
    else:  # torch picks a fused kernel: the math one
        other, kernel = 'math', sdpa_kernel(SDPBackend.MATH)
    return {
        'eager 1 thread': train(cfg, model_cfg, optim, args, False,
                                threads=1),
        f'eager {other}': train(cfg, model_cfg, other_optim, args, False,
                                kernel=kernel),
        'eager 1 ulp': train(cfg, model_cfg, optim, args, False,
                             ulp_off=True),
    }


def step_diffs(reference, losses):
    return [abs(v - r) / max(abs(r), 1e-12)
            for r, v in zip(reference, losses)]


def main():
    args = parse_args()
    # a cold start, whatever earlier runs left in the default cache
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(
        prefix='benchmark_compile_')
    MMLogger.get_instance('benchmark', log_level='ERROR')
    init_default_scope('mmpretrain')
    if args.threads:
        torch.set_num_threads(args.threads)
    MessageHub.get_current_instance().update_info('max_iters', args.iters)
    cfg, over = load_config(args)
    model_cfg, optim = model_cfgs(cfg, False)['mrcl'], optim_cfg(cfg, args)
    precision = args.amp if args.amp != 'none' else 'fp32'
    print(f'machine   : {machine_line()}')
    print(f'config    : {args.config}, overrides: ' + (', '.join(
        f'{k}={v}' for k, v in over.items()) or 'none'))
    print(f'step      : {args.batch} images x 2 views on {args.device}, '
          f'{optim["type"]} ({precision}), {args.iters} steps from seed 0, '
          f'step time after {args.warmup}' + (
              f', compiling the {args.compile_only} only'
              if args.compile_only else ''), flush=True)
    runs = {mode: train(cfg, model_cfg, optim, args, mode == 'compiled')
            for mode in ('eager', 'compiled')}
    rtol = args.rtol or 1e-3
    if args.amp != 'none' and args.rtol is None:
        # the tolerance: how far AMP's own rounding moves the losses
        fp32 = optim_cfg(cfg, argparse.Namespace(**dict(vars(args),
                                                        amp='none')))
        runs['eager fp32'] = train(cfg, model_cfg, fp32, args, False)
        rtol = max_rel_diff(runs['eager fp32'][1], runs['eager'][1])
    floor = noise_floor(cfg, model_cfg, optim, args) if args.noise_floor \
        else {}
    runs.update(floor)

    (t_e, l_e), (t_c, l_c) = runs['eager'], runs['compiled']
    med_e = statistics.median(t_e[args.warmup:])
    med_c = statistics.median(t_c[args.warmup:])
    diff = max_rel_diff(l_e, l_c)
    print(f'\nRESULTS [{machine_line()}] {precision}')
    for mode, (times, losses) in runs.items():
        print(f'{mode:14s} losses: ' + ' '.join(f'{v:.5g}' for v in losses))
        print(f'{mode:14s} step s: ' + ' '.join(f'{t:.3g}' for t in times))
    print(f'compile time   : {t_c[0] - t_e[0]:.1f} s (first step: eager '
          f'{t_e[0]:.2f} s, compiled {t_c[0]:.2f} s)')
    print(f'step time      : eager {med_e:.4f} s, compiled {med_c:.4f} s, '
          f'speed-up {med_e / med_c:.3f}x')
    print(f'first loss     : relative difference '
          f'{max_rel_diff(l_e[:1], l_c[:1]):.2e} (same weights and masks)')
    print(f'losses         : max relative difference {diff:.2e} over '
          f'{args.iters} steps, ' + ('equal' if diff <= rtol else
                                     'DIFFERENT') + f' within rtol '
          f'{rtol:.2e}' + (' (eager AMP against eager fp32)' if
                           'eager fp32' in runs else ''))
    if floor:
        compiled = step_diffs(l_e, l_c)
        spread = [max(d) for d in zip(*(step_diffs(l_e, r[1])
                                        for r in floor.values()))]
        for name, (_, losses) in floor.items():
            print(f'noise floor    : {name:16s} max relative difference '
                  f'{max_rel_diff(l_e, losses):.2e}')
        print('compiled drift : ' + ' '.join(f'{d:.1e}' for d in compiled)
              + '\nnoise floor    : ' + ' '.join(f'{d:.1e}' for d in spread)
              + '\ncompiled       : ' + (
                  'within the noise floor' if all(
                      c <= f for c, f in zip(compiled, spread)) else
                  'OUTSIDE the noise floor at step(s) ' + ', '.join(
                      str(i + 1) for i, (c, f) in enumerate(
                          zip(compiled, spread)) if c > f)))
    gain = med_e - med_c
    print('break-even     : ' + (f'{(t_c[0] - t_e[0]) / gain:.0f} steps'
                                 if gain > 0 else 'never (no speed-up)'))


def max_rel_diff(reference, losses):
    return max(abs(v - r) / max(abs(r), 1e-12)
               for r, v in zip(reference, losses))


if __name__ == '__main__':
    main()
