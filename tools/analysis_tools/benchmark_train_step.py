"""Train-step cost of MRCL against its mmpretrain base algorithm.

Times ``model.train_step`` with the config's optim wrapper (what the Runner
runs per iteration: data preprocessor, forward with the backbone's own
masking, decoder, backward, AdamW) for

  mrcl      the config's model (default: MR-BarlowTwins, ViT-B/16, r=0.2,
            alpha=7, lambda=2, the paper's 8-layer x 512-wide decoder),
  baseline  mmpretrain's algorithm for the config's head (BarlowTwins for
            LatentCrossCorrelationHead) on a plain ``VisionTransformer``
            (out_type='cls_token') of the same arch, with the same
            projector, head and data preprocessor,
  mrcl-r0   (--with-r0) the config with r=0 and no decoder, as
            configs/baselines/ builds it: the cost of the MRCL code path,

on the same batch of two uint8 views, in fp32 or mixed precision.

    python tools/analysis_tools/benchmark_train_step.py           # ViT-B/16
    python tools/analysis_tools/benchmark_train_step.py --amp bf16 --batch 8
    python tools/analysis_tools/benchmark_train_step.py --device cuda \\
        --amp fp16 --batch 64 --peak-tflops 989

Timing: ``--warmup`` untimed steps per model, then ``--iters`` rounds of one
step per model, the order rotated every round, so that a noisy machine slows
all alike; median and min per step (CUDA: synchronised around each step).

Peak memory: each model in a fresh subprocess running ``--mem-iters`` steps
(the second one holds the AdamW state). CUDA: max_memory_allocated (every
live tensor) and max_memory_reserved (the caching allocator's pool). CPU:
the peak resident set (VmHWM) less the RSS before building the model; the
subprocess runs with MALLOC_MMAP_THRESHOLD_=65536 (and no other MALLOC_*),
so every tensor of 64 KiB or more is its own mapping, unmapped when freed,
and the RSS follows the live tensors, not what glibc's heap keeps cached.

CPU timing and glibc: by default every tensor over 32 MiB is mapped and
page-faulted afresh each step (docs/speed.md says what that cost).
To time with freed memory kept, as a GPU's caching allocator does, set
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736
MALLOC_TOP_PAD_=1073741824 in the environment (the header prints them).

FLOPs: torch.utils.flop_counter over one forward + backward at batch 2,
scaled to --batch (matmuls, convolutions and attention; the optimizer and
elementwise ops are not counted); MFU = FLOPs / step time / --peak-tflops.

Profile (--profile): one more step of each model under torch.profiler, its
time by part of the model (encoder blocks, masking, decoder, projector,
loss terms, optimizer; forward and backward) next to that part's FLOPs,
and the kernels whose time differs most between the two models
(step_profile.py says how ops are assigned to parts).

Needs torch, mmengine, mmcv (none of its compiled ops), mmpretrain and
this plugin importable (PYTHONPATH=. from the repository root).
"""
import argparse
import copy
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.models import VisionTransformer
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.utils.flop_counter import (FlopCounterMode,
                                      sdpa_backward_flop_count,
                                      sdpa_flop_count)

import mrcl_plugin  # noqa: F401  (registers the models)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from machine import machine  # noqa: E402

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

CONFIG = 'configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'
# mmpretrain's algorithm for each of MRCL's contrastive heads.
BASE_ALGORITHM = dict(LatentCrossCorrelationHead='BarlowTwins',
                      ContrastiveHead='SimCLR', LatentPredictHead='BYOL',
                      MoCoV3Head='MoCoV3')


def add_step_arguments(p, config=CONFIG, batch=8):
    """The config, its size overrides, the batch, device and precision."""
    p.add_argument('config', nargs='?', default=config,
                   help=f'an MRCL training config (default {config})')
    p.add_argument('--arch', help="VisionTransformer arch ('b', 'deit-tiny', "
                   "...; default the config's)")
    p.add_argument('--img-size', type=int, help="default the config's")
    p.add_argument('--patch-size', type=int, help="default the config's")
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='overrides of the config (before the baseline is '
                   'derived), e.g. model.decoder.decoder_depth=4')
    p.add_argument('--batch', type=int, default=batch,
                   help=f'images per step, two views each (default {batch})')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--amp', default='none', choices=['none', 'fp16', 'bf16'],
                   help='CUDA: AmpOptimWrapper in fp16/bf16; CPU: bf16 '
                   'autocast (CPUBF16OptimWrapper)')
    p.add_argument('--sdpa-backend', default='math',
                   choices=['math', 'flash_attention'],
                   help="CPU bf16: CPUBF16OptimWrapper's attention kernel "
                   "(default math, the wrapper's; flash_attention keeps no "
                   'attention matrix, as a GPU kernel does: measure memory '
                   'with it)')
    p.add_argument('--threads', type=int, help='torch intra-op threads')


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_step_arguments(p)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--iters', type=int, default=5,
                   help='timed rounds (0: no timing)')
    p.add_argument('--with-r0', action='store_true')
    p.add_argument('--mem-iters', type=int, default=2)
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--peak-tflops', type=float,
                   help="the device's peak TFLOP/s in the step's dtype, for "
                   'the model FLOP utilisation (MFU)')
    p.add_argument('--profile', action='store_true',
                   help='profile one step of each model by part and kernel')
    p.add_argument('--memory-worker', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: torch.cuda.is_available() is False')
    if args.device == 'cpu' and args.amp == 'fp16':
        p.error('--amp fp16 needs --device cuda (on a CPU use --amp bf16)')
    return args


def load_config(args):
    """(config, overrides): the config with --arch/--img-size/--patch-size
    carried to every part that depends on them, then --cfg-options."""
    cfg = Config.fromfile(args.config)
    bb = cfg.model.backbone
    over = {}
    if args.arch:
        over['model.backbone.arch'] = args.arch
    if args.img_size:
        over['model.backbone.img_size'] = args.img_size
    if args.patch_size:
        over['model.backbone.patch_size'] = args.patch_size
    arch = args.arch or bb.arch
    embed = (arch['embed_dims'] if isinstance(arch, dict) else
             VisionTransformer.arch_zoo[arch.lower()]['embed_dims'])
    if args.arch:
        over['model.neck.in_channels'] = embed
    if over and cfg.model.get('decoder'):
        patch = args.patch_size or bb.patch_size
        over.update({
            'model.decoder.embed_dim': embed,
            'model.decoder.num_patches':
            ((args.img_size or bb.img_size) // patch)**2,
            'model.decoder.patch_size': patch,
            'model.rec_head.patch_size': patch})
    over.update(args.cfg_options)
    cfg.merge_from_dict(over)
    return cfg, over


def model_cfgs(cfg, with_r0):
    """name -> model config dict."""
    mrcl = cfg.model.to_dict()
    mrcl.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    head = mrcl['head']['type']
    if head not in BASE_ALGORITHM:
        sys.exit(f'error: model.head.type {head!r} has no mmpretrain '
                 f'baseline here (one of {sorted(BASE_ALGORITHM)})')
    backbone = {k: v for k, v in mrcl['backbone'].items()
                if k not in ('mask_ratio', 'mask_generator')}
    backbone.update(type='VisionTransformer', out_type='cls_token')
    cfgs = dict(baseline=dict(
        type=BASE_ALGORITHM[head], backbone=backbone,
        **{k: copy.deepcopy(mrcl.get(k)) for k in
           ('neck', 'head', 'data_preprocessor', 'init_cfg')}), mrcl=mrcl)
    if with_r0:  # as configs/baselines/ derives its models
        r0 = copy.deepcopy(mrcl)
        r0['backbone']['mask_ratio'] = 0.0
        r0.update(decoder=None, rec_head=None)
        cfgs['mrcl-r0'] = r0
    return cfgs


def optim_cfg(cfg, args):
    optim = cfg.optim_wrapper.to_dict()
    optim.pop('dtype', None)
    if args.amp == 'none':
        optim['type'] = 'OptimWrapper'
        optim.pop('loss_scale', None)
    elif args.device == 'cpu':
        optim.update(type='CPUBF16OptimWrapper',
                     sdpa_backend=args.sdpa_backend)
    else:
        optim.update(type='AmpOptimWrapper', dtype=dict(
            fp16='float16', bf16='bfloat16')[args.amp])
        optim.setdefault('loss_scale', 'dynamic')
    return optim


def build(model_cfg, optim, args):
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(copy.deepcopy(model_cfg)))
    model.init_weights()
    model.to(args.device).train()
    return model, build_optim_wrapper(model, copy.deepcopy(optim))


def make_data(cfg, batch, device):
    """Two uint8 views of ``batch`` images, as the data loader gives them."""
    size = cfg.model.backbone.img_size
    g = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 256, (batch, 3, size, size), generator=g,
                           dtype=torch.uint8).to(device) for _ in range(2)]
    return dict(inputs=views, data_samples=[DataSample() for _ in
                                            range(batch)])


def timed_step(model, optim, data, device):
    if device == 'cuda':
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    log_vars = model.train_step(data, optim)
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t0, log_vars


def proc_status_bytes(field):
    """VmRSS (resident now) or VmHWM (peak) of this process."""
    with open('/proc/self/status') as f:
        return next(int(ln.split()[1]) * 1024 for ln in f
                    if ln.startswith(field + ':'))


def memory_worker(args, cfg, model_cfg, optim):
    """Run in a fresh process: one model's peak memory as a JSON line."""
    torch.zeros(1, device=args.device)  # the device context, before `before`
    before = (torch.cuda.memory_allocated() if args.device == 'cuda' else
              proc_status_bytes('VmRSS'))
    model, optim = build(model_cfg, optim, args)
    data = make_data(cfg, args.batch, args.device)
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.mem_iters):
        timed_step(model, optim, data, args.device)
    if args.device == 'cuda':
        out = dict(peak=torch.cuda.max_memory_allocated() - before,
                   reserved=torch.cuda.max_memory_reserved())
    else:
        hwm = proc_status_bytes('VmHWM')
        out = dict(peak=hwm - before, reserved=hwm)
    print('@@MEM ' + json.dumps(out), flush=True)


def measure_memory(args, name):
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_')}
    env['MALLOC_MMAP_THRESHOLD_'] = '65536'
    proc = subprocess.run([sys.executable, osp.abspath(__file__)] +
                          sys.argv[1:] + ['--memory-worker', name],
                          capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('@@MEM ')]
    if proc.returncode or not lines:
        sys.exit(f'error: the memory subprocess of {name} failed (rc '
                 f'{proc.returncode}): {proc.stderr.strip()[-2000:]}')
    return json.loads(lines[-1][6:])


def count_flops(model, optim, data, backward=True):
    """The FlopCounterMode that counted one forward + backward (or one
    forward alone, where its counts by module are exact: it assigns the
    backward's to modules by hooks that fire out of order)."""
    aten = torch.ops.aten
    custom = {}  # torch counts the CUDA attention kernels, not the CPU one
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v))
        custom[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw:
            sdpa_backward_flop_count(g, q, k, v))
    counter = FlopCounterMode(display=False, custom_mapping=custom)
    with counter, torch.set_grad_enabled(backward):
        with optim.optim_context(model):
            losses = model(**model.data_preprocessor(data, True), mode='loss')
        if backward:
            model.parse_losses(losses)[0].backward()
    model.zero_grad(set_to_none=True)
    return counter


def machine_line() -> str:
    """The machine, with the threads and load this measurement ran at."""
    return (f'{machine()}, {torch.get_num_threads()} threads, load average '
            f'{os.getloadavg()[0]:.2f}')


def result_rows(args, models, times, flops, mem, losses):
    """name -> {column: figure}, the columns in the order printed."""
    rows, base = {}, times['baseline'] and statistics.median(times['baseline'])
    for n, (model, _) in models.items():
        params = sum(p.numel() for p in model.parameters())
        row = rows[n] = {'params M': f'{params / 1e6:.1f}'}
        med = times[n] and statistics.median(times[n])
        if med:
            row.update({'median s': f'{med:.4f}',
                        'min s': f'{min(times[n]):.4f}',
                        'img/s': f'{args.batch / med:.2f}',
                        'time ratio': f'{med / base:.3f}x'})
        if n in flops:
            row['TFLOP/step'] = f'{flops[n] / 1e12:.4g}'
            if med and args.peak_tflops:
                row['MFU'] = f'{flops[n] / med / args.peak_tflops / 1e10:.3g}%'
        if n in mem:
            row.update({'peak MiB': f'{mem[n]["peak"] / 2**20:.0f}',
                        'mem ratio':
                        f'{mem[n]["peak"] / mem["baseline"]["peak"]:.3f}x',
                        ('reserved MiB' if args.device == 'cuda' else
                         'VmHWM MiB'): f'{mem[n]["reserved"] / 2**20:.0f}'})
        row['loss'] = f'{losses[n]:.4g}' if n in losses else '-'
    return rows


def print_table(rows):
    heads = ['model'] + list(next(iter(rows.values())))
    cells = [heads] + [[n] + list(r.values()) for n, r in rows.items()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(heads))]
    for row in cells:
        print('  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def main():
    args = parse_args()
    MMLogger.get_instance('benchmark', log_level='ERROR')  # no init logs
    init_default_scope('mmpretrain')
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, over = load_config(args)
    cfgs, optim = model_cfgs(cfg, args.with_r0), optim_cfg(cfg, args)
    if args.memory_worker:
        return memory_worker(args, cfg, cfgs[args.memory_worker], optim)
    bb, rec = cfg.model.backbone, cfg.model.get('rec_head') or {}
    dec = cfg.model.get('decoder')
    print(f'machine   : {machine_line()}')
    print(f'config    : {args.config}, overrides: ' + (', '.join(
        f'{k}={v}' for k, v in over.items()) or 'none'))
    print(f'mrcl      : {cfg.model.type}, {bb.type} arch {bb.arch}, '
          f'{bb.img_size} px / {bb.patch_size}, r={bb.mask_ratio}, alpha='
          f'{rec.get("alpha")} lambda={rec.get("lambd")}, decoder ' + (
              f'{dec.decoder_depth} x {dec.decoder_embed_dim}' if dec else
              'none'))
    print(f'baseline  : {cfgs["baseline"]["type"]}, VisionTransformer '
          "(out_type='cls_token'), the config's neck, head, preprocessor")
    malloc = ' '.join(f'{k}={v}' for k, v in os.environ.items()
                      if k.startswith('MALLOC_')) or 'glibc defaults'
    print(f'step      : {args.batch} images x 2 views on {args.device}, '
          f'{optim["type"]} ({args.amp if args.amp != "none" else "fp32"}'
          + (f', sdpa {args.sdpa_backend}' if 'sdpa_backend' in optim
             else '') + '), '
          f'warm-up {args.warmup}, {args.iters} rounds, order rotated; '
          f'malloc {malloc}', flush=True)

    mem = {} if args.no_memory else {n: measure_memory(args, n)
                                     for n in cfgs}
    models = {n: build(c, optim, args) for n, c in cfgs.items()}
    flops, small = {}, min(2, args.batch)
    if not args.no_flops:
        data = make_data(cfg, small, args.device)
        flops = {n: count_flops(*m, data).get_total_flops() * args.batch /
                 small for n, m in models.items()}
    data, names = make_data(cfg, args.batch, args.device), list(cfgs)
    times, losses = {n: [] for n in names}, {}
    for r in range(-args.warmup, args.iters):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            t, log_vars = timed_step(*models[n], data, args.device)
            losses[n] = float(torch.as_tensor(log_vars['loss']).detach())
            if r >= 0:
                times[n].append(t)

    print(f'\nRESULTS [{machine_line()}]')
    rows = result_rows(args, models, times, flops, mem, losses)
    print_table(rows)
    print('ratios are against baseline; img/s counts an image as its two '
          'views' + ('; FLOPs: forward + backward' if flops else '') + (
              f'; peak MiB over {args.mem_iters} steps in a fresh process: '
              + ('max_memory_allocated' if args.device == 'cuda' else
                 'peak RSS less the RSS before building') if mem else ''))
    if args.iters and mem:
        print(f'MRCL/baseline: time {rows["mrcl"]["time ratio"]}, peak '
              f'memory {rows["mrcl"]["mem ratio"]}')
    if args.profile:
        print_profile(args, cfg, models, data)


def print_profile(args, cfg, models, data):
    """The --profile tables: time and FLOPs by part, then by kernel."""
    from step_profile import flops_by_part, profile_step
    small = min(2, args.batch)
    few = make_data(cfg, small, args.device)
    runs = {}
    for n, (model, optim) in models.items():
        flops = flops_by_part(count_flops(model, optim, few, backward=False))
        runs[n] = (profile_step(lambda: model.train_step(data, optim),
                                model),
                   {k: v * args.batch / small for k, v in flops.items()})
    base, mrcl = runs['baseline'], runs['mrcl']
    parts = list(dict.fromkeys([*base[0]['parts'], *mrcl[0]['parts']]))
    print(f'\nPROFILE [{machine_line()}] one step each: seconds of op '
          'time (forward + backward), and forward GFLOP and GFLOP/s, by '
          'part:')
    rows = {}
    for part in parts:
        row = {}
        for n, (prof, flops) in (('baseline', base), ('mrcl', mrcl)):
            t = prof['parts'].get(part, dict(forward=0., backward=0.))
            row[f'{n} s'] = f'{t["forward"]:.3f} + {t["backward"]:.3f}'
            f = flops.get(part, 0.)
            row[f'{n} fwd GFLOP'] = f'{f / 1e9:.1f}'
            row[f'{n} GFLOP/s'] = (f'{f / t["forward"] / 1e9:.0f}'
                                   if f and t['forward'] else '-')
        extra = sum(mrcl[0]['parts'].get(part, {}).values()) - sum(
            base[0]['parts'].get(part, {}).values())
        row['MRCL extra s'] = f'{extra:+.3f}'
        rows[part] = row
    print_table(rows)
    t_b, t_m = base[0]['total'], mrcl[0]['total']
    f_b, f_m = sum(base[1].values()), sum(mrcl[1].values())
    print(f'profiled op time: baseline {t_b:.3f} s, MRCL {t_m:.3f} s, '
          f'ratio {t_m / t_b:.3f}x; forward FLOP ratio {f_m / f_b:.3f}x')
    kernels = {k: (base[0]['kernels'].get(k, 0.),
                   mrcl[0]['kernels'].get(k, 0.))
               for k in {*base[0]['kernels'], *mrcl[0]['kernels']}}
    top = sorted(kernels, key=lambda k: -abs(kernels[k][1] - kernels[k][0]))
    print('\nkernels whose self time differs most (s):')
    print_table({k: {'baseline': f'{kernels[k][0]:.3f}',
                     'MRCL': f'{kernels[k][1]:.3f}',
                     'difference': f'{kernels[k][1] - kernels[k][0]:+.3f}'}
                 for k in top[:12]})


if __name__ == '__main__':
    main()
