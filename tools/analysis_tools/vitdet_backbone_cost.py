"""Cost of the COCO config's ViT-B/16 backbone, windowed (ViTDet: windows of
14, global blocks 2, 5, 8, 11) against global attention in every block
(``window_size=0``), for one image: activation memory, time and FLOPs of a
forward + backward (docs/transfer.md).

Each setting runs in a fresh process (so one's allocations and caches do
not colour the other's), built from the shipped config's backbone with
random weights, in training mode, under autocast (bf16 on CPU; fp16, the
config's AMP, on CUDA). Reported per setting:

- ``saved_MB``: tensors autograd keeps for the backward pass (unique
  storages, by a ``saved_tensors_hooks`` pair; the parameters themselves
  not counted, autocast's low-precision copies of them counted): the
  activation memory;
- ``peak_MB``: peak memory of the forward + backward above what was held
  before it (CUDA: ``max_memory_allocated``; CPU: the growth of the
  process's peak resident size), parameter gradients included;
- ``time_s``: median wall time of ``--repeat`` forward + backward passes
  after the measured one;
- ``GFLOPs``: ``torch.utils.flop_counter`` over one forward + backward
  (matrix products, convolutions and attention; elementwise ops excluded).

    PYTHONPATH=. python tools/analysis_tools/vitdet_backbone_cost.py \\
        [--img-size 1024] [--device cpu|cuda] [--repeat 3]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ('configs/benchmarks/mmdetection/mrcl_vit-base-p16_'
                 'simple-fpn_mask-rcnn_8xb8-amp-lsj-100e_coco.py')
SETTINGS = ('windowed', 'global')


def build(setting: str, img_size: int, arch):
    from mmengine.config import Config

    import mrcl_plugin  # noqa: F401
    from mrcl_plugin.models.backbones import ViTDetViT
    cfg = Config.fromfile(str(CONFIG)).model.backbone.to_dict()
    for key in ('_delete_', 'type', 'init_cfg'):
        cfg.pop(key, None)
    cfg.update(img_size=img_size)
    if arch:
        cfg.update(arch=arch, out_indices=[-1])
    if setting == 'global':
        cfg.update(window_size=0)
    return ViTDetViT(**cfg)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(setting: str, img_size: int, device: str, repeat: int,
            arch=None) -> dict:
    """One setting, in this process."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    model = build(setting, img_size, arch).to(device)
    model.train()
    dtype = torch.bfloat16 if device == 'cpu' else torch.float16
    x = torch.randn(1, 3, img_size, img_size, device=device)

    def step():
        with torch.autocast(device, dtype=dtype):
            out = model(x)[-1]
        out.float().sum().backward()

    saved = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:  # the weights are no activation
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = peak_rss_mb()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    if device == 'cuda':
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = peak_rss_mb() - before
    times = []
    for _ in range(repeat):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    with FlopCounterMode(display=False) as flops:
        step()
    return dict(setting=setting, img_size=img_size, device=device,
                dtype=str(dtype).split('.')[-1],
                saved_MB=round(sum(saved.values()) / 2**20, 1),
                peak_MB=round(peak, 1),
                time_s=round(statistics.median(times), 3) if times else None,
                GFLOPs=round(flops.get_total_flops() / 1e9, 1),
                threads=torch.get_num_threads())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--img-size', type=int, default=1024)
    parser.add_argument('--device', default=None,
                        help='cpu or cuda (default: cuda when present)')
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--arch', type=json.loads, default=None,
                        help='a JSON arch dict, to try the script small')
    parser.add_argument('--only', choices=SETTINGS,
                        help='measure this setting here (the child run)')
    args = parser.parse_args(argv)
    if args.device is None:
        import torch
        args.device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.only:
        print(json.dumps(measure(args.only, args.img_size, args.device,
                                 args.repeat, args.arch)))
        return 0
    rows = []
    for setting in SETTINGS:  # each in a fresh process
        cmd = [sys.executable, __file__, '--only', setting, '--img-size',
               str(args.img_size), '--device', args.device, '--repeat',
               str(args.repeat)]
        if args.arch:
            cmd += ['--arch', json.dumps(args.arch)]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    keys = list(rows[0])
    print('| ' + ' | '.join(keys) + ' |')
    print('|' + '---|' * len(keys))
    for row in rows:
        print('| ' + ' | '.join(str(row[k]) for k in keys) + ' |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
