"""Training-step cost of MRCL against mmpretrain's own BarlowTwins.

Times forward + backward + AdamW steps (``model.train_step`` with an mmengine
``OptimWrapper``, i.e. what the Runner runs per iteration, data preprocessing
included) and measures peak memory of:

  baseline  mmpretrain's ``BarlowTwins``, a plain ``VisionTransformer``
            (out_type='cls_token') and the MRCL config's neck and head,
  MRCL      variant barlowtwins, r=0.2, alpha=7, lambda=2, with the paper's
            8-layer x 512-wide decoder, and with a 4-layer x 256-wide one,

all from configs/_base_/models/mrcl-barlowtwins_vit-base-p16.py (with the
overrides printed), same backbone arch, batch, two input views and dtype.

    python tools/benchmark/train_step.py                     # ViT-B/16, 224 px
    python tools/benchmark/train_step.py --batch 8 --iters 4 --with-r0 \
        --cpu-malloc-cache                                   # CPU, see below
    python tools/benchmark/train_step.py --arch deit-tiny --batch 8 --iters 3
    python tools/benchmark/train_step.py --device cuda --batch 64 --amp
    ... --profile          # where the time goes: parts of a step, top ops

Timing: every variant runs ``--warmup`` untimed steps, then ``--iters`` timed
steps, round-robin (one step of each variant per round, the order rotated
every round) so that a noisy machine slows them alike; median and min per
step, with torch.cuda.synchronize around each step on a GPU.

Peak memory: each variant in a fresh subprocess (nothing else resident).
  CUDA: torch.cuda.max_memory_allocated() over the steps, peak statistics
        reset after building the model and the data: every live tensor
        (parameters, data, gradients, AdamW state, activations), not the
        allocator's cache (max_memory_reserved is printed beside it).
  CPU:  the process's peak resident set (VmHWM, reset with
        /proc/self/clear_refs after building) over the steps, minus its RSS
        after the imports and before building anything: parameters, data,
        gradients, AdamW state, activations and allocator/kernel overhead. The
        increase over the RSS after building is printed beside it. The
        subprocesses run with MALLOC_MMAP_THRESHOLD_=65536, so that every
        tensor of 64 KiB or more is its own mapping, returned when freed: the
        RSS then follows the live tensors (as max_memory_allocated does)
        rather than what glibc's heap keeps cached, which with the defaults
        moved the ratios by several percent from run to run
        (--mem-glibc-default measures with the defaults).

CPU timing and the allocator: with glibc's defaults every tensor over 32 MiB
is mmap-ed afresh and page-faulted on every step, which costs ViT-B/16 about
a quarter of its step time here and grows with each variant's memory
traffic; --cpu-malloc-cache times with the freed memory kept (as a GPU
caching allocator does). The flag does not apply to the memory subprocesses.
"""
import argparse
import copy
import gc
import json
import os
import os.path as osp
import subprocess
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from bench_common import (REPO, median_min, print_machine, print_table,  # noqa
                          proc_status_kib, reset_peak_rss, resolve_device,
                          set_threads, verdict)

MODEL_CFG = 'configs/_base_/models/mrcl-barlowtwins_vit-base-p16.py'
DATA_CFG = 'configs/_base_/datasets/imagenet_bs64_mrcl.py'
SCHEDULE_CFG = 'configs/_base_/schedules/adamw_coslr-600e_in1k.py'
# Step-time targets vs the baseline, by decoder (depth, width).
TIME_TARGETS = {(8, 512): 1.10, (4, 256): 1.00}
MEM_TARGET = 1.15
BASELINE = 'baseline'
# Every allocation of 64 KiB or more is its own mapping, unmapped when freed,
# so the RSS follows the live tensors instead of what glibc keeps cached.
MALLOC_EXACT = dict(MALLOC_MMAP_THRESHOLD_='65536')
MALLOC_CACHE = dict(MALLOC_MMAP_MAX_='0', MALLOC_TRIM_THRESHOLD_=str(2**36),
                    MALLOC_TOP_PAD_=str(2**30))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='b',
                   help="ViT arch of mmpretrain's VisionTransformer: 'b' "
                   "(ViT-B/16, the paper's), 'deit-tiny', 's', ...")
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--patch-size', type=int, default=16)
    p.add_argument('--batch', type=int, default=8,
                   help='images per step; each gives two views')
    p.add_argument('--warmup', type=int, default=1,
                   help='untimed steps per variant')
    p.add_argument('--iters', type=int, default=5,
                   help='timed steps per variant (round-robin rounds)')
    p.add_argument('--device', default='auto', choices=['auto', 'cpu', 'cuda'])
    p.add_argument('--amp', action='store_true',
                   help='CUDA only: AmpOptimWrapper (the paper configs use '
                   'AMP), autocast in --amp-dtype')
    p.add_argument('--amp-dtype', default='float16',
                   choices=['float16', 'bfloat16'])
    p.add_argument('--threads', type=int, default=None,
                   help='torch intra-op threads (default: usable cores)')
    p.add_argument('--decoders', default='8x512x16,4x256x8',
                   help='MRCL decoders to run, DEPTHxWIDTH[xHEADS], comma '
                   'separated (default: the paper\'s 8x512 with 16 heads, '
                   'and 4x256 with 8 heads, both 32-d heads)')
    p.add_argument('--mask-ratio', type=float, default=0.2)
    p.add_argument('--alpha', type=float, default=7.0)
    p.add_argument('--lambd', type=float, default=2.0)
    p.add_argument('--with-r0', action='store_true',
                   help='also run MRCL with r=0 and no decoder (the plugin\'s '
                   'configs/baselines recipe), to separate the cost of the '
                   'MRCL code path from that of masking and decoding')
    p.add_argument('--no-memory', action='store_true',
                   help='skip the peak-memory subprocesses')
    p.add_argument('--mem-glibc-default', action='store_true',
                   help='CPU memory: run the memory subprocesses with glibc '
                   'malloc defaults instead of MALLOC_MMAP_THRESHOLD_=65536 '
                   '(see the module docstring)')
    p.add_argument('--mem-iters', type=int, default=2,
                   help='steps per memory subprocess (the peak is reached '
                   'in the second step, when AdamW state exists)')
    p.add_argument('--no-flops', action='store_true',
                   help='skip the FLOP counts')
    p.add_argument('--profile', action='store_true',
                   help='after timing: time the parts of a step in isolation '
                   'and print torch.profiler\'s top ops per variant')
    p.add_argument('--profile-reps', type=int, default=3)
    p.add_argument('--cpu-malloc-cache', action='store_true',
                   help='CPU timing only: re-run this process with glibc '
                   'malloc kept from returning memory to the OS ('
                   + ' '.join(f'{k}={v}' for k, v in MALLOC_CACHE.items()) +
                   '), as a GPU caching allocator does; by default every '
                   'tensor over 32 MiB is mmap-ed afresh and page-faulted '
                   'each step. The memory subprocesses keep glibc defaults.')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--_memory-worker', dest='memory_worker', default=None,
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.amp and resolve_device(args.device).type != 'cuda':
        p.error('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper)')
    if args.img_size % args.patch_size:
        p.error('--img-size must be divisible by --patch-size')
    return args


# ----------------------------------------------------------------- configs
def parse_decoder(spec: str):
    parts = [int(x) for x in spec.lower().split('x')]
    if len(parts) == 2:
        parts.append(max(1, parts[1] // 32))
    depth, width, heads = parts
    return depth, width, heads


def arch_settings(arch: str) -> dict:
    from mmpretrain.models import VisionTransformer
    return VisionTransformer.arch_zoo[arch.lower()]


def data_preprocessor_cfg() -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, DATA_CFG))
    return cfg.data_preprocessor.to_dict()


def variant_cfgs(args) -> dict:
    """name -> (model cfg dict, description), built from the plugin's
    config with the overrides of the command line."""
    from mmengine.config import Config
    base = Config.fromfile(osp.join(REPO, MODEL_CFG)).model.to_dict()
    embed = arch_settings(args.arch)['embed_dims']
    num_patches = (args.img_size // args.patch_size)**2
    dp = data_preprocessor_cfg()
    base['neck']['in_channels'] = embed
    base['data_preprocessor'] = dp

    cfgs = {}
    baseline = dict(
        type='BarlowTwins',
        backbone=dict(
            type='VisionTransformer',
            arch=args.arch,
            img_size=args.img_size,
            patch_size=args.patch_size,
            out_type='cls_token'),
        neck=copy.deepcopy(base['neck']),
        head=copy.deepcopy(base['head']),
        data_preprocessor=dp,
        init_cfg=copy.deepcopy(base['init_cfg']))
    cfgs[BASELINE] = (baseline, 'mmpretrain BarlowTwins + VisionTransformer '
                      '(cls_token)')

    def mrcl(mask_ratio, dec):
        m = copy.deepcopy(base)
        m['backbone'].update(
            arch=args.arch,
            img_size=args.img_size,
            patch_size=args.patch_size,
            mask_ratio=mask_ratio)
        if dec is None:
            m['decoder'] = None
            m['rec_head'] = None
        else:
            depth, width, heads = dec
            m['decoder'].update(
                num_patches=num_patches,
                patch_size=args.patch_size,
                embed_dim=embed,
                decoder_embed_dim=width,
                decoder_depth=depth,
                decoder_num_heads=heads)
            m['rec_head'].update(
                alpha=args.alpha, lambd=args.lambd,
                patch_size=args.patch_size)
        return m

    for spec in args.decoders.split(','):
        dec = parse_decoder(spec)
        name = f'mrcl-{dec[0]}x{dec[1]}'
        cfgs[name] = (mrcl(args.mask_ratio, dec),
                      f'MRCL barlowtwins r={args.mask_ratio:g}, decoder '
                      f'{dec[0]} layers x {dec[1]} wide, {dec[2]} heads, '
                      f'alpha={args.alpha:g} lambda={args.lambd:g}')
    if args.with_r0:
        cfgs['mrcl-r0-nodec'] = (mrcl(0.0, None),
                                 'MRCL barlowtwins r=0, no decoder')
    return cfgs


def optim_cfg(args) -> dict:
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, SCHEDULE_CFG)).optim_wrapper.to_dict()
    if args.amp:
        cfg.update(type='AmpOptimWrapper', dtype=args.amp_dtype)
    else:
        cfg['type'] = 'OptimWrapper'
        cfg.pop('loss_scale', None)
    return cfg


# ----------------------------------------------------------------- building
def setup():
    import warnings
    warnings.filterwarnings('ignore', message='.*pkg_resources.*')
    from mmengine.logging import MMLogger
    # mmengine logs every parameter's init and paramwise option at INFO.
    MMLogger.get_instance('mrcl_benchmark', log_level='WARNING')
    import mrcl_plugin  # noqa: F401  (registers the models)
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')


def build(cfg: dict, args, device):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS
    model = MODELS.build(copy.deepcopy(cfg))
    model = revert_sync_batchnorm(model)
    model.init_weights()
    model.to(device).train()
    optim = build_optim_wrapper(model, optim_cfg(args))
    return model, optim


def make_data(args, device, batch=None):
    """Two views of ``batch`` images, uint8 as the data loader gives them."""
    from mmpretrain.structures import DataSample
    batch = batch or args.batch
    g = torch.Generator().manual_seed(args.seed)
    views = [
        torch.randint(0, 256, (batch, 3, args.img_size, args.img_size),
                      generator=g, dtype=torch.uint8).to(device)
        for _ in range(2)
    ]
    return dict(inputs=views, data_samples=[DataSample() for _ in range(batch)])


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def train_step(model, optim, data):
    return model.train_step(data, optim)


def count_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# ----------------------------------------------------------------- memory
def memory_worker(args):
    """Build one variant in this fresh process, run the steps, print the
    peak memory as one JSON line."""
    device = resolve_device(args.device)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    setup()
    cfg, _ = variant_cfgs(args)[args.memory_worker]
    torch.zeros(1).to(device)  # initialise the device context first
    gc.collect()
    out = dict(variant=args.memory_worker, device=device.type)
    if device.type == 'cuda':
        before = torch.cuda.memory_allocated(device)
    else:
        before = proc_status_kib('VmRSS') * 1024
    model, optim = build(cfg, args, device)
    data = make_data(args, device)
    gc.collect()
    sync(device)
    if device.type == 'cuda':
        built = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out['method'] = 'torch.cuda.max_memory_allocated'
    else:
        built = proc_status_kib('VmRSS') * 1024
        malloc = ' '.join(f'{k}={v}' for k, v in os.environ.items()
                          if k.startswith('MALLOC_')) or 'glibc defaults'
        if reset_peak_rss():
            out['method'] = ('VmHWM after /proc/self/clear_refs reset, '
                             f'malloc: {malloc}')
        else:
            out['method'] = ('ru_maxrss, whole process (VmHWM reset '
                             'unavailable)')
    for _ in range(args.mem_iters):
        train_step(model, optim, data)
    sync(device)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated(device)
        out['reserved'] = torch.cuda.max_memory_reserved(device)
    elif out['method'].startswith('VmHWM'):
        peak = proc_status_kib('VmHWM') * 1024
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.update(before=before, built=built, peak=peak)
    print('@@MEM ' + json.dumps(out), flush=True)


def measure_memory(args, names):
    results = {}
    for name in names:
        argv = [a for a in sys.argv[1:]]
        cmd = [sys.executable, osp.abspath(__file__)] + argv + [
            '--_memory-worker', name
        ]
        env = {k: v for k, v in os.environ.items() if k not in MALLOC_CACHE}
        if not args.mem_glibc_default:
            env.update(MALLOC_EXACT)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith('@@MEM ')]
        if proc.returncode or not line:
            print(f'  memory worker for {name} failed (rc {proc.returncode}):'
                  f'\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
            continue
        results[name] = json.loads(line[-1][6:])
        print(f'  {name:<16} measured in a fresh process '
              f'({time.perf_counter() - t0:.0f} s)', flush=True)
    return results


# ----------------------------------------------------------------- FLOPs
def vit_layer_macs(tokens, dim, ffn):
    """Multiply-adds of one pre-norm transformer layer over ``tokens``:
    qkv + proj (4 T D^2), FFN (2 T D F), QK^T and AV (2 T^2 D)."""
    return tokens * (4 * dim * dim + 2 * dim * ffn) + 2 * tokens**2 * dim


def analytic_macs(args, dec):
    """Forward multiply-adds per image (one view) by part."""
    from mrcl_plugin.models.utils import num_masked
    a = arch_settings(args.arch)
    d, layers, ffn = a['embed_dims'], a['num_layers'], a[
        'feedforward_channels']
    p = args.patch_size
    n = (args.img_size // p)**2
    patch = n * 3 * p * p * d
    neck = neck_head_macs(d)
    if dec is None:
        enc = patch + layers * vit_layer_macs(1 + n, d, ffn)
        return dict(encoder=enc, decoder=0, neck_head=neck)
    nv = n - num_masked(n, args.mask_ratio)
    enc = patch + layers * vit_layer_macs(1 + nv, d, ffn)
    depth, width, _ = dec
    decoder = ((1 + nv) * d * width + depth * vit_layer_macs(
        1 + n, width, 4 * width) + (1 + n) * width * p * p * 3)
    return dict(encoder=enc, decoder=decoder, neck_head=neck)


def neck_head_macs(d):
    """The config's NonLinearNeck (in -> hid -> ... -> out) per view plus
    half of the cross-correlation c = z1^T z2 (out^2 per pair)."""
    from mmengine.config import Config
    neck = Config.fromfile(osp.join(REPO, MODEL_CFG)).model.neck
    hid, out, layers = neck.hid_channels, neck.out_channels, neck.num_layers
    return d * hid + (layers - 2) * hid * hid + hid * out + out * out // 2


def counted_flops(model, optim, data, device):
    """FLOPs of one forward + backward, counted by torch's FlopCounterMode
    (matmul/conv/SDPA; elementwise ops are not counted), by top module."""
    from torch.utils.flop_counter import (FlopCounterMode,
                                          sdpa_backward_flop_count,
                                          sdpa_flop_count)
    aten = torch.ops.aten
    # torch counts the CUDA attention kernels but not the CPU flash kernel
    # that F.scaled_dot_product_attention runs here; same formulas.
    custom = {}
    if hasattr(aten, '_scaled_dot_product_flash_attention_for_cpu'):
        custom[aten._scaled_dot_product_flash_attention_for_cpu] = (
            lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v))
        custom[aten._scaled_dot_product_flash_attention_for_cpu_backward] = (
            lambda g, q, k, v, *a, out_shape=None, **kw:
            sdpa_backward_flop_count(g, q, k, v))
    fc = FlopCounterMode(display=False, custom_mapping=custom)
    with fc:
        with optim.optim_context(model):
            d = model.data_preprocessor(data, True)
            losses = model(**d, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()
    model.zero_grad(set_to_none=True)
    by_module = {}
    for mod, ops in fc.get_flop_counts().items():
        parts = mod.split('.')
        if len(parts) == 2:
            by_module[parts[1]] = sum(ops.values())
    return fc.get_total_flops(), by_module


# ----------------------------------------------------------------- profiling
def time_fn(fn, device, reps):
    """Min over ``reps`` runs after one warm-up: on a shared machine the
    least-disturbed run is the best estimate of a part's own cost."""
    fn()  # warm
    sync(device)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return min(ts)


def section_times(name, model, optim, data, device, reps, step_time):
    """Times the parts of one training step in isolation (each part's
    forward + backward on detached inputs)."""
    rows = []
    ctx = lambda: optim.optim_context(model)  # noqa: E731

    def pre():
        with ctx():
            return model.data_preprocessor(data, True)['inputs']

    rows.append(('data preprocessor (uint8 -> normalised float)',
                 time_fn(pre, device, reps)))
    inputs = pre()
    views = torch.cat(inputs)

    if name == BASELINE:
        def enc():
            with ctx():
                z = [model.backbone(v)[0] for v in inputs]
            sum(x.float().sum() for x in z).backward()
        rows.append(('encoder fwd+bwd (2 passes of B, all tokens)',
                     time_fn(enc, device, reps)))
        with torch.no_grad(), ctx():
            f = [model.backbone(v)[0].detach() for v in inputs]

        def neck_head():
            f1, f2 = [x.clone().requires_grad_() for x in f]
            with ctx():
                loss = model.head.loss(model.neck([f1])[0],
                                       model.neck([f2])[0])
            loss.backward()
        rows.append(('neck + cross-correlation head fwd+bwd',
                     time_fn(neck_head, device, reps)))
    else:
        bb = model.backbone

        def masking():
            with ctx():
                mask = bb.mask_generator(views.shape[0], bb.patch_resolution,
                                         bb.mask_ratio, views.device)
                ids = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
                restore = torch.argsort(ids, dim=1)
                x = torch.empty(views.shape[0], bb.num_patches,
                                bb.embed_dims, device=views.device)
                torch.gather(x, 1, ids[:, :bb.num_visible].unsqueeze(-1)
                             .expand(-1, -1, x.shape[-1]))
            return restore
        rows.append(('  of which mask gen + 2 argsort + gather (fwd only)',
                     time_fn(masking, device, reps)))

        def enc():
            with ctx():
                latent = bb(views)[0]
            latent.float().sum().backward()
        rows.insert(1, ('encoder fwd+bwd (one pass of 2B, visible tokens)',
                        time_fn(enc, device, reps)))
        with torch.no_grad(), ctx():
            latent, mask, ids_restore = bb(views)
        latent = latent.detach()
        if model.with_reconstruction:
            def dec():
                x = latent.clone().requires_grad_()
                with ctx():
                    pred = model.decoder(x, ids_restore)
                pred.float().sum().backward()
            rows.append(('decoder fwd+bwd (all tokens)',
                         time_fn(dec, device, reps)))
            with torch.no_grad(), ctx():
                pred = model.decoder(latent, ids_restore).detach()

            def rec():
                x = pred.clone().requires_grad_()
                with ctx():
                    losses = model.rec_head.loss(x, views, mask, num_views=2)
                sum(losses.values()).backward()
            rows.append(('reconstruction loss fwd+bwd',
                         time_fn(rec, device, reps)))

        def neck_head():
            f1, f2 = [x.clone().requires_grad_()
                      for x in model.pool(latent).chunk(2)]
            with ctx():
                loss = model._loss_barlowtwins(f1, f2, views, mask)
            loss.backward()
        rows.append(('neck + cross-correlation head fwd+bwd',
                     time_fn(neck_head, device, reps)))
    model.zero_grad(set_to_none=True)

    params = [p for p in model.parameters() if p.requires_grad]

    def opt():
        for p in params:
            p.grad = torch.zeros_like(p)
        optim.step()
        optim.zero_grad()
    rows.append((f'AdamW step ({sum(p.numel() for p in params) / 1e6:.1f}M '
                 'trainable params)', time_fn(opt, device, reps)))
    total = sum(t for label, t in rows if not label.startswith('  '))
    rows.append(('sum of the parts above', total))
    rows.append(('full train_step (min of the timed run)', step_time))
    rows.append(('rest (autograd glue, parse_losses, ...)', step_time - total))
    return rows


def profile_ops(model, optim, data, device, top=12):
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU]
    key = 'self_cpu_time_total'
    if device.type == 'cuda':
        acts.append(ProfilerActivity.CUDA)
        from torch.autograd.profiler_util import FunctionEventAvg
        key = ('self_device_time_total' if hasattr(
            FunctionEventAvg, 'self_device_time_total') else
               'self_cuda_time_total')
    train_step(model, optim, data)
    sync(device)
    with profile(activities=acts) as prof:
        train_step(model, optim, data)
        sync(device)
    return prof.key_averages().table(sort_by=key, row_limit=top)


# ----------------------------------------------------------------- main
def fmt_mib(nbytes):
    return f'{nbytes / 2**20:,.0f}'


def main():
    args = parse_args()
    if args.memory_worker:
        return memory_worker(args)
    device = resolve_device(args.device)
    if args.cpu_malloc_cache and device.type == 'cpu' and any(
            os.environ.get(k) != v for k, v in MALLOC_CACHE.items()):
        # glibc reads these at start-up: re-run this script with them set.
        os.environ.update(MALLOC_CACHE)
        os.execv(sys.executable, [sys.executable] + sys.argv)
    t_start = time.perf_counter()
    threads = set_threads(args.threads)
    torch.manual_seed(args.seed)
    setup()
    label = print_machine('MRCL train-step benchmark '
                          '(tools/benchmark/train_step.py)', device)
    cfgs = variant_cfgs(args)
    names = list(cfgs)
    a = arch_settings(args.arch)
    n = (args.img_size // args.patch_size)**2
    dtype = (f'AMP autocast {args.amp_dtype} (AmpOptimWrapper)'
             if args.amp else 'float32')
    print(f'arch       : {args.arch} (embed {a["embed_dims"]}, '
          f'{a["num_layers"]} layers, {a["num_heads"]} heads), '
          f'{args.img_size} px, patch {args.patch_size} -> {n} patches')
    print(f'batch      : {args.batch} images x 2 views per step, dtype '
          f'{dtype}, torch threads {threads}')
    malloc = ' '.join(f'{k}={v}' for k, v in os.environ.items()
                      if k.startswith('MALLOC_'))
    print(f'malloc     : {malloc or "glibc defaults"} (timing process)')
    print(f'schedule   : warm-up {args.warmup} + timed {args.iters} steps '
          'per variant, round-robin, order rotated each round')
    print(f'configs    : {MODEL_CFG} (+ overrides), data_preprocessor of '
          f'{DATA_CFG}, optim_wrapper of {SCHEDULE_CFG} '
          f'(type {optim_cfg(args)["type"]})')
    for name, (cfg, desc) in cfgs.items():
        print(f'  {name:<16} {desc}')
    if (args.arch, args.img_size, args.patch_size) != ('b', 224, 16):
        print('NOTE: the targets are budgets for the paper\'s ViT-B/16 at '
              '224 px; with this setting the decoder-to-encoder cost differs '
              'and the verdicts are informative only.')
    sys.stdout.flush()

    # ---- peak memory, one fresh process per variant (before the timing
    # run builds its models, so the two never overlap in memory)
    mem = {}
    if not args.no_memory:
        print(f'\nPeak memory: {args.mem_iters} steps per variant, each in a '
              'fresh subprocess ...', flush=True)
        mem = measure_memory(args, names)

    # ---- build everything for the timing run
    models = {}
    for name in names:
        torch.manual_seed(args.seed)
        models[name] = build(cfgs[name][0], args, device)
    data = make_data(args, device)
    params = {name: count_params(m) for name, (m, _) in models.items()}

    # ---- FLOPs
    flops = {}
    if not args.no_flops:
        small = make_data(args, device, batch=2)
        for name, (model, optim) in models.items():
            flops[name] = counted_flops(model, optim, small, device)

    # ---- timing: warm-up then round-robin
    print(f'\nTiming: {args.warmup} warm-up + {args.iters} timed steps per '
          'variant ...', flush=True)
    for w in range(args.warmup):
        for name in names:
            train_step(*models[name], data)
            sync(device)
    times = {name: [] for name in names}
    last = {}
    for r in range(args.iters):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            model, optim = models[name]
            sync(device)
            t0 = time.perf_counter()
            log_vars = train_step(model, optim, data)
            sync(device)
            times[name].append(time.perf_counter() - t0)
            last[name] = log_vars
        print(f'  round {r + 1}/{args.iters}: ' + ', '.join(
            f'{nm} {times[nm][-1]:.3f}s' for nm in names), flush=True)

    # ---- results
    stats = {name: median_min(times[name]) for name in names}
    base_t = stats[BASELINE]['median']
    print(f'\nRESULTS {label}')
    print(f'device {device}, {dtype}, batch {args.batch} x 2 views, '
          f'{args.arch} {args.img_size}px/p{args.patch_size}, '
          f'{threads} threads; median over {args.iters} steps')
    rows = []
    for name in names:
        s = stats[name]
        ratio = s['median'] / base_t
        target, v = '', ''
        if name != BASELINE and name.startswith('mrcl-') and 'x' in name:
            dec = tuple(int(x) for x in name[5:].split('x'))
            if dec in TIME_TARGETS:
                target = f'<= {TIME_TARGETS[dec]:.2f}x'
                v = verdict(ratio, TIME_TARGETS[dec])
        rows.append([name, f'{params[name]:.1f}', f'{s["median"]:.3f}',
                     f'{s["min"]:.3f}', f'{s["max"]:.3f}',
                     f'{args.batch / s["median"]:.2f}',
                     f'{ratio:.3f}x', target, v])
    print('\nStep time (forward + backward + AdamW, model.train_step)')
    print_table(['variant', 'params M', 'median s', 'min s', 'max s',
                 'img/s', 'vs base', 'target', 'verdict'], rows)
    print('img/s = images per second, each image as its two views; min-based '
          'ratios: ' + ', '.join(
              f'{nm} {stats[nm]["min"] / stats[BASELINE]["min"]:.3f}x'
              for nm in names if nm != BASELINE))

    if mem:
        print(f'\nPeak memory ({mem[next(iter(mem))]["method"]}; each variant '
              f'in a fresh process, {args.mem_iters} steps)')
        cuda = device.type == 'cuda'
        base_m = mem.get(BASELINE)
        rows = []
        for name in names:
            if name not in mem:
                rows.append([name, 'failed'] + [''] * 6)
                continue
            m = mem[name]
            total = m['peak'] - m['before']
            train = m['peak'] - m['built']
            ratio = total / (base_m['peak'] - base_m['before']) \
                if base_m else float('nan')
            tratio = train / (base_m['peak'] - base_m['built']) \
                if base_m else float('nan')
            target = v = ''
            if name != BASELINE and name.startswith('mrcl-') and \
                    name != 'mrcl-r0-nodec':
                target = f'<= {MEM_TARGET:.2f}x'
                v = verdict(ratio, MEM_TARGET)
            rows.append([name, fmt_mib(m['built'] - m['before']),
                         fmt_mib(total), fmt_mib(train),
                         (fmt_mib(m['reserved']) if cuda else
                          fmt_mib(m['peak'])),
                         f'{ratio:.3f}x', f'{tratio:.3f}x', target, v])
        print_table(['variant', 'built MiB', 'PEAK MiB', 'step MiB',
                     'reserved MiB' if cuda else 'VmHWM MiB', 'vs base',
                     'step vs base', 'target', 'verdict'], rows)
        if cuda:
            print('built = tensors after building model + data; PEAK = '
                  'max_memory_allocated over the steps (all live tensors); '
                  'step = PEAK - built; reserved = max_memory_reserved. The '
                  'verdict uses PEAK.')
        else:
            print('built = RSS after building model + data minus RSS after '
                  'the imports; PEAK = peak RSS over the steps minus RSS after '
                  'the imports (params, data, grads, AdamW state, '
                  'activations, allocator/kernel overhead); step = peak RSS '
                  'minus RSS after building (what the steps add); VmHWM = the '
                  'absolute peak RSS of the process. The verdict uses PEAK.')

    # ---- FLOPs: analytic and counted
    print('\nArithmetic cost (per image, both views; forward multiply-adds, '
          'analytic)')
    base_macs = analytic_macs(args, None)
    base_total = sum(base_macs.values())
    rows = []
    for name in names:
        dec = None
        if name.startswith('mrcl-') and name != 'mrcl-r0-nodec':
            dec = parse_decoder(name[5:])
        if name == 'mrcl-r0-nodec' or name == BASELINE:
            m = base_macs
        else:
            m = analytic_macs(args, dec)
        tot = sum(m.values())
        rows.append([name, f'{2 * m["encoder"] / 1e9:.2f}',
                     f'{2 * m["decoder"] / 1e9:.2f}',
                     f'{2 * m["neck_head"] / 1e9:.3f}',
                     f'{2 * tot / 1e9:.2f}', f'{tot / base_total:.3f}x',
                     f'{stats[name]["median"] / base_t:.3f}x'])
    print_table(['variant', 'encoder GMAC', 'decoder GMAC', 'neck+head GMAC',
                 'total GMAC', 'arith. ratio', 'measured ratio'], rows)
    print('encoder over 1 + visible tokens (MRCL) or 1 + all tokens '
          '(baseline); decoder over 1 + all tokens; training ~ 3x forward.')
    if flops:
        print('\nCounted FLOPs (torch.utils.flop_counter, forward + backward '
              'of one step at batch 2, scaled to the batch; matmul/conv/SDPA '
              'only; backward ops are attributed to modules approximately)')
        base_f = flops[BASELINE][0]
        rows = []
        for name in names:
            total, by = flops[name]
            scale = args.batch / 2
            rows.append([name, f'{total * scale / 1e12:.3f}',
                         ', '.join(f'{k} {v * scale / 1e12:.3f}'
                                   for k, v in sorted(by.items())),
                         f'{total / base_f:.3f}x',
                         f'{stats[name]["median"] / base_t:.3f}x',
                         f'{total * scale / stats[name]["median"] / 1e9:.1f}'])
        print_table(['variant', 'TFLOP/step', 'by module (TFLOP)',
                     'FLOP ratio', 'time ratio', 'achieved GFLOP/s'], rows,
                    align='llrrrr')

    losses = ', '.join(f'{nm} {float(last[nm]["loss"].detach()):.4g}' for nm in names)
    print(f'\nlast-step total losses (sanity, finite?): {losses}')

    # ---- profiling
    if args.profile:
        print(f'\nPROFILE {label}: parts of a step timed in isolation '
              f'(min of {args.profile_reps} after 1 warm-up, against the min '
              'step time)')
        for name in names:
            model, optim = models[name]
            step = stats[name]['min']
            rows = section_times(name, model, optim, data, device,
                                 args.profile_reps, step)
            print(f'\n[{name}]')
            print_table(['part', 'seconds', '% of step'],
                        [[lab, f'{t:.4f}', f'{100 * t / step:.1f}']
                         for lab, t in rows])
        for name in names:
            model, optim = models[name]
            print(f'\n[{name}] torch.profiler, one train_step, top ops by '
                  'self time')
            print(profile_ops(model, optim, data, device))
    print(f'\ntotal wall time {time.perf_counter() - t_start:.0f} s')


if __name__ == '__main__':
    main()
