"""The GPU check: on one GPU, within --budget-s, every figure printed with
the GPU's name on a ``GPU-CHECK [<gpu>] <part> ...`` line:

  a  the ViT-B/16 train step at 64 images per GPU under AMP in fp16 and in
     bf16, MR-BarlowTwins against BarlowTwins (benchmark_train_step.py):
     step time and its ratio, images/s, peak memory allocated and reserved,
     MFU against the card's dense bf16 peak; and once more in fp16 with
     the decoder checkpointed (CheckpointedMAEDecoder, with_cp=True);
  d  the same step compiled (benchmark_compile.py, bf16, --noise-floor):
     compile time, speed-up, break-even, and the compiled drift from eager
     against eager's own under changes that should not matter;
  b  100 iterations of MR-BarlowTwins ViT-B/16 at 224 px under the config's
     AMP (fp16, dynamic loss scale) on the Tiny-ImageNet sample in the
     ImageNet layout: every loss finite, the loss scale logged;
  c  the ``cifar10-gpu`` study preset, cut at the time left (each finished
     run is one CSV row; the run in flight at the deadline is dropped).

``--cpu-miniature`` runs the same four parts on the CPU, at tiny sizes
(the small CIFAR-10 config at 16 px for a; a 2-layer, 64-wide ViT at 32 px
for 2 iterations under bf16 autocast for b; the ``micro`` preset for c;
a 1-layer model through ``aot_eager`` for d):
tests/test_gpu_check.py runs it in CI so that the script cannot rot.

Needs, besides a CUDA torch (the device machine's Python 3.12 has torch,
numpy, opencv, matplotlib, rich, pyyaml, einops): wheels of mmengine
0.10.7, mmpretrain 1.2.0 and mmcv 2.1.0 built without its compiled ops
(pretraining needs none: ``MMCV_WITH_OPS=0``, a pure-Python wheel), their
pure-Python needs addict, yapf, platformdirs, termcolor, mat4py,
modelindex, ordered-set, the pins numpy 1.26.4 (numpy 2 breaks mmcv 2.1:
requirements/openmmlab.txt) and setuptools 80.9.0 (pkg_resources, for the
``mmpretrain::`` config bases); and the CIFAR-10 and Tiny-ImageNet samples
under ``$MRCL_DATA/cls/``. docs/training_at_scale.md ("The GPU check")
gives the commands that gather them into ``.whl/`` and ``.gpu_data/`` and
the device call that carries them and runs this script.
"""
import argparse
import csv
import importlib
import importlib.util
import math
import os
import os.path as osp
import re
import subprocess
import sys
import tempfile
import time
import warnings

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
BENCHMARK = osp.join(ROOT, 'tools', 'analysis_tools',
                     'benchmark_train_step.py')
COMPILE = osp.join(ROOT, 'tools', 'analysis_tools', 'benchmark_compile.py')
WITH_CP = ['--cfg-options', 'model.decoder.type=CheckpointedMAEDecoder',
           'model.decoder.with_cp=True']
IN1K = 'configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'
SMALL = ('configs/mrcl/'
         'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')


def study_command(preset, work_dir, max_runs=None):
    """The study's command line (the one place that names it)."""
    return [sys.executable, osp.join(ROOT, 'tools', 'study', 'run.py'),
            '--preset', preset, '--work-dir', work_dir] + (
                ['--max-runs', str(max_runs)] if max_runs else [])


# Dense bf16 TFLOP/s by the vendors' datasheets (SXM parts), the first name
# that is in torch.cuda.get_device_name() wins; --peak-tflops for others.
BF16_PEAK_TFLOPS = (('H100 PCIe', 756.), ('H100', 989.4), ('H200', 989.4),
                    ('A100', 312.), ('L40S', 362.))
NEEDS = ('torch', 'numpy', 'cv2', 'mmengine', 'mmcv', 'mmpretrain', 'addict',
         'yapf', 'termcolor', 'mat4py', 'modelindex', 'pkg_resources')


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--cpu-miniature', action='store_true',
                   help='tiny sizes, 2 steps, on the CPU (for CI)')
    p.add_argument('--budget-s', type=float, default=450,
                   help='wall time of the whole check; the study gets what '
                   'a and b leave (default 450)')
    p.add_argument('--peak-tflops', type=float,
                   help="the card's dense bf16 peak (default: by its name)")
    p.add_argument('--work-dir', help='default: a temporary folder')
    return p.parse_args()


def check_needs(data_root):
    for name in ('cifar10', 'tiny_imagenet_10cls'):
        if not osp.isdir(osp.join(data_root, 'cls', name)):
            sys.exit(f'error: no {data_root}/cls/{name}: set MRCL_DATA to the '
                     'folder holding the samples (cls/cifar10, '
                     'cls/tiny_imagenet_10cls)')
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f'error: {", ".join(missing)} not importable: carry the '
                 f'wheels named at the top of {osp.relpath(__file__, ROOT)} '
                 'and put them on PYTHONPATH')
    for name in NEEDS:  # there, but do they import beside each other?
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure: one line)
            sys.exit(f'error: import {name} failed: {type(e).__name__}: '
                     + (str(e).strip().splitlines() or [''])[-1])


def figure(gpu, part, **values):
    print(f'GPU-CHECK [{gpu}] {part} ' +
          ' '.join(f'{k}={v}' for k, v in values.items()), flush=True)


def result_table(stdout):
    """{model: {column: text}} from benchmark_train_step.py's table."""
    lines = stdout[stdout.index('\nRESULTS ['):].splitlines()[2:]
    heads = re.split(r'\s{2,}', lines[0].strip())[1:]
    return {line.split()[0]: dict(zip(heads, line.split()[1:]))
            for line in lines[1:]
            if line.startswith(('baseline', 'mrcl'))}


def part_a(args, gpu, env):
    """The benchmark, once per precision, in its own processes."""
    if args.cpu_miniature:
        runs = [('bf16', [SMALL, '--img-size', '16', '--batch', '4',
                          '--warmup', '1', '--iters', '2', '--cfg-options',
                          'model.backbone.arch.num_layers=2'])]
    else:
        step = [IN1K, '--device', 'cuda', '--batch', '64', '--warmup', '3',
                '--iters', '10']
        runs = [('fp16', step), ('bf16', step), ('fp16', step + WITH_CP)]
    for amp, argv in runs:
        peak = args.peak_tflops
        argv = argv + ['--amp', amp] + (
            ['--peak-tflops', str(peak)] if peak else [])
        out = subprocess.run([sys.executable, BENCHMARK] + argv, cwd=ROOT,
                             env=env, capture_output=True, text=True)
        print(out.stdout, flush=True)
        if out.returncode:
            sys.exit(f'error: benchmark_train_step.py --amp {amp} failed: '
                     + (out.stderr.strip().splitlines() or ['?'])[-1])
        rows = result_table(out.stdout)
        for model, row in rows.items():
            figure(gpu, 'a', amp=amp, model=model, batch=argv[argv.index(
                '--batch') + 1], with_cp='with_cp=True' in ' '.join(argv),
                median_s=row['median s'],
                img_per_s=row['img/s'], time_ratio=row['time ratio'],
                peak_alloc_mib=row['peak MiB'],
                reserved_mib=row.get('reserved MiB', row.get('VmHWM MiB')),
                mem_ratio=row['mem ratio'], mfu=row.get('MFU', 'n/a'),
                loss=row['loss'])


def part_d(args, gpu, env):
    """The compiled step against eager and eager's noise floor."""
    argv = ([SMALL, '--img-size', '16', '--batch', '2', '--iters', '3',
             '--warmup', '1', '--backend', 'aot_eager', '--cfg-options',
             'model.backbone.arch.num_layers=1'] if args.cpu_miniature else
            [IN1K, '--device', 'cuda', '--batch', '64', '--iters', '8',
             '--warmup', '3'])
    out = subprocess.run([sys.executable, COMPILE, *argv, '--amp', 'bf16',
                          '--noise-floor'], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    print(out.stdout, flush=True)
    if out.returncode:
        sys.exit('error: benchmark_compile.py failed: '
                 + (out.stderr.strip().splitlines() or ['?'])[-1])

    def found(pattern):
        return re.search(pattern, out.stdout, re.M)[1]

    figure(gpu, 'd', batch=argv[argv.index('--batch') + 1],
           compile_s=found(r'^compile time +: (-?[\d.]+) s'),
           speed_up=found(r'speed-up ([\d.]+)x'),
           break_even=found(r'^break-even +: (\S+)'),
           first_loss_diff=found(r'^first loss +: relative difference '
                                 r'(\S+)'),
           drift=found(r'^compiled drift : (.*)$').replace(' ', ','),
           noise_floor=found(r'^noise floor +: ([\d.e+ -]+)$').replace(
               ' ', ','),
           within_floor=found(r'^compiled +: (within|OUTSIDE)') == 'within')


def part_b_config(args, data_root, work_dir):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, IN1K))
    iters = 2 if args.cpu_miniature else 100
    loader = cfg.train_dataloader
    loader.dataset.data_root = osp.join(data_root, 'cls',
                                        'tiny_imagenet_10cls')
    cfg.merge_from_dict({
        'work_dir': work_dir, 'train_cfg': dict(
            _delete_=True, type='IterBasedTrainLoop', max_iters=iters),
        # the warm-up of the schedule, in the 100 iterations
        'param_scheduler': [dict(type='LinearLR', start_factor=1e-3,
                                 by_epoch=False, begin=0, end=iters)],
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': 10, 'log_level': 'WARNING'})
    # counted here, every iteration (NonFiniteLossHook stops at the first)
    cfg.custom_hooks = [h for h in cfg.custom_hooks
                        if h.type != 'NonFiniteLossHook']
    if args.cpu_miniature:  # a 2-layer ViT-64 at 32 px in 8 px patches
        model = cfg.model
        model.backbone.update(arch=dict(embed_dims=64, num_layers=2,
                                        num_heads=4, feedforward_channels=128),
                              img_size=32, patch_size=8)
        model.decoder.update(num_patches=16, patch_size=8, embed_dim=64,
                             decoder_embed_dim=32, decoder_depth=1,
                             decoder_num_heads=4)
        model.rec_head.patch_size = 8
        model.neck.update(in_channels=64, hid_channels=64, out_channels=64)
        model.head.in_channels = 64
        for view in loader.dataset.pipeline[1].transforms:
            view[0].scale = 32  # RandomResizedCrop
        loader.update(batch_size=4, num_workers=0, persistent_workers=False)
        cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
        cfg.optim_wrapper.pop('loss_scale')
    return cfg


def part_b(args, gpu, data_root, work_dir):
    """Train in this process; a hook keeps every loss and the loss scale."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Record(Hook):
        priority = 'LOWEST'

        def __init__(self):
            self.losses, self.scales = [], []

        def after_train_iter(self, runner, batch_idx, data_batch=None,
                             outputs=None):
            self.losses.append({k: torch.as_tensor(v).detach().item()
                                for k, v in outputs.items()
                                if k.startswith('loss')})
            scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
            self.scales.append(scaler.get_scale() if scaler else None)
            if runner.iter % 10 == 9 or runner.iter + 1 == runner.max_iters:
                figure(gpu, 'b-iter', iter=runner.iter + 1,
                       loss=f'{self.losses[-1]["loss"]:.4g}',
                       loss_scale=self.scales[-1])

    cfg = part_b_config(args, data_root, work_dir)
    runner, record = Runner.from_cfg(cfg), Record()
    runner.register_hook(record)
    start = time.time()
    runner.train()
    wall = time.time() - start
    finite = all(math.isfinite(v) for d in record.losses for v in d.values())
    scales = [s for s in record.scales if s is not None]
    memory = {}
    if torch.cuda.is_available():
        memory = dict(
            peak_alloc_mib=f'{torch.cuda.max_memory_allocated() / 2**20:.0f}',
            reserved_mib=f'{torch.cuda.max_memory_reserved() / 2**20:.0f}')
    figure(gpu, 'b', iters=len(record.losses),
           batch=cfg.train_dataloader.batch_size,
           img_size=cfg.model.backbone.img_size, optim=cfg.optim_wrapper.type,
           all_losses_finite=finite,
           first_loss=f'{record.losses[0]["loss"]:.4g}',
           last_loss=f'{record.losses[-1]["loss"]:.4g}',
           loss_scale_min=min(scales) if scales else None,
           loss_scale_last=scales[-1] if scales else None,
           s_per_iter=f'{wall / len(record.losses):.3f}', **memory)
    del runner
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def part_c(args, gpu, env, work_dir, seconds):
    """The study preset for the seconds left; its finished runs' rows."""
    preset = 'micro' if args.cpu_miniature else 'cifar10-gpu'
    cmd = study_command(preset, work_dir, 2 if args.cpu_miniature else None)
    start = time.time()
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, timeout=seconds,
                             capture_output=True, text=True)
        cut = False
        if out.returncode:
            sys.exit('error: the study failed: ' +
                     (out.stderr.strip().splitlines() or ['?'])[-1])
        print(out.stdout, flush=True)
    except subprocess.TimeoutExpired as e:
        cut = True
        print(e.stdout.decode() if e.stdout else '', flush=True)
    path = osp.join(work_dir, f'{preset}.csv')
    rows = []
    if osp.isfile(path):
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
    for row in rows:
        figure(gpu, 'c-run', name=row['name'], knn_top1=row['knn_top1'],
               linear_top1=row['linear_top1'], iters=row['iters'],
               batch=row['batch_size'], train_s=row['train_s'],
               wall_s=row['wall_s'])
    figure(gpu, 'c', preset=preset, runs_done=len(rows), cut_at_time=cut,
           seconds_given=f'{seconds:.0f}',
           wall_s=f'{time.time() - start:.0f}')


def main():
    args = parse_args()
    start = time.time()
    data_root = os.environ.get('MRCL_DATA',
                               osp.join(ROOT, '..', 'shared', 'data'))
    check_needs(data_root)
    import torch
    if args.cpu_miniature:
        gpu = 'cpu miniature'
    elif not torch.cuda.is_available():
        sys.exit('error: no GPU (torch.cuda.is_available() is False): run '
                 'on a GPU, or pass --cpu-miniature')
    else:
        gpu = torch.cuda.get_device_name()
        args.peak_tflops = args.peak_tflops or next(
            (p for name, p in BF16_PEAK_TFLOPS if name in gpu), None)
    env = dict(os.environ, MRCL_DATA=data_root, PYTHONUNBUFFERED='1',
               PYTHONPATH=os.pathsep.join(
                   [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    sys.path.insert(0, ROOT)
    import mrcl_plugin  # noqa: F401  (registers the models)
    import mmcv
    import mmengine
    import mmpretrain
    import numpy
    figure(gpu, 'machine', torch=torch.__version__,
           cuda=torch.version.cuda, numpy=numpy.__version__,
           mmcv=mmcv.__version__, mmengine=mmengine.__version__,
           mmpretrain=mmpretrain.__version__,
           bf16_peak_tflops=args.peak_tflops, budget_s=args.budget_s)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='gpu_check_')
    part_a(args, gpu, env)
    figure(gpu, 'a-done', elapsed_s=f'{time.time() - start:.0f}')
    part_b(args, gpu, data_root, osp.join(work_dir, 'b'))
    figure(gpu, 'b-done', elapsed_s=f'{time.time() - start:.0f}')
    part_d(args, gpu, env)
    figure(gpu, 'd-done', elapsed_s=f'{time.time() - start:.0f}')
    left = args.budget_s - (time.time() - start) - 15
    part_c(args, gpu, env, osp.join(work_dir, 'study'), max(left, 30))
    wall = time.time() - start
    figure(gpu, 'done', wall_s=f'{wall:.0f}',
           within_budget=wall <= args.budget_s + 30)


if __name__ == '__main__':
    main()
