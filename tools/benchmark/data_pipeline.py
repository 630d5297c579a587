"""Throughput of the plugin's two-view training pipeline against mmpretrain's.

ours    the ``train_pipeline`` of configs/_base_/datasets/cifar10_bs64_mrcl.py
        (SimCLR's CIFAR augmentations, MultiView(num_views=2));
theirs  the ``train_pipeline`` of mmpretrain's
        ``_base_/datasets/imagenet_bs32_byol.py`` (MultiView of its two BYOL
        view pipelines), with RandomResizedCrop's size set to 32 px;

both run by a ``CustomDataset`` over the same N images of the real CIFAR-10
sample (ann_file meta/train.txt, data_prefix train), image files read once
beforehand so that neither pays the first disk read.

    python tools/benchmark/data_pipeline.py                  # 2000 images
    python tools/benchmark/data_pipeline.py -n 2000 --workers 2 --breakdown

Main process: the N images in chunks, ours and theirs alternating per chunk
(the first one swapped every chunk), so a noisy machine slows both alike;
images/s = N / summed time. With --workers W, also through a torch
DataLoader (W workers, batch --batch, mmengine's default_collate), timed
from the first to the last batch (worker start-up and the first batch
excluded) and from the start (included).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from bench_common import (REPO, print_machine, print_table,  # noqa: E402
                          set_threads, verdict)

OURS_CFG = 'configs/_base_/datasets/cifar10_bs64_mrcl.py'
THEIRS_CFG = '_base_/datasets/imagenet_bs32_byol.py'  # in mmpretrain's .mim
TARGET = 1.0


def parse_args():
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-root', default=None,
                   help='CIFAR-10 sample (default: the one ours config '
                   'points at, ../shared/data/cls/cifar10)')
    p.add_argument('-n', '--num-images', type=int, default=2000)
    p.add_argument('--chunk', type=int, default=250,
                   help='images per alternation in the main-process run')
    p.add_argument('--crop', type=int, default=32,
                   help="RandomResizedCrop size set in mmpretrain's pipeline")
    p.add_argument('--workers', type=int, default=0,
                   help='also time a DataLoader with this many workers')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads of the main process (default 1: the '
                   'transforms are numpy/PIL/cv2; DataLoader workers use 1)')
    p.add_argument('--breakdown', action='store_true',
                   help='also print the time per transform')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


# ----------------------------------------------------------------- pipelines
def mmpretrain_config_dir() -> str:
    import mmpretrain
    return osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'configs')


def load_pipelines(args):
    from mmengine.config import Config
    ours_cfg = Config.fromfile(osp.join(REPO, OURS_CFG))
    ours = ours_cfg.train_pipeline.to_list() if hasattr(
        ours_cfg.train_pipeline, 'to_list') else copy.deepcopy(
            list(ours_cfg.train_pipeline))
    theirs_file = osp.join(mmpretrain_config_dir(), THEIRS_CFG)
    theirs = copy.deepcopy(list(Config.fromfile(theirs_file).train_pipeline))
    crops = 0
    for t in theirs:
        if t['type'] == 'MultiView':
            for view in t['transforms']:
                for v in view:
                    if v['type'] == 'RandomResizedCrop':
                        v['scale'] = args.crop
                        crops += 1
    assert crops == 2, 'expected one RandomResizedCrop per BYOL view'
    root = args.data_root or ours_cfg.train_dataloader.dataset.data_root
    return ours, theirs, theirs_file, osp.normpath(osp.join(REPO, root)) \
        if not osp.isabs(root) else root


def describe(pipeline) -> str:
    out = []
    for t in pipeline:
        if t['type'] == 'MultiView':
            views = []
            for view in t['transforms']:
                views.append(' > '.join(
                    v['type'] + ('(' + ','.join(
                        x['type'] for x in v['transforms']) + ')'
                        if v['type'] == 'RandomApply' else '') +
                    (f'[p={v["prob"]}]' if 'prob' in v and v['type'] !=
                     'RandomApply' else '') for v in view))
            out.append(f'MultiView(num_views={t["num_views"]}: ' +
                       ' | '.join(views) + ')')
        else:
            out.append(t['type'])
    return ' > '.join(out)


def build_dataset(pipeline, root):
    from mmpretrain.datasets import CustomDataset
    return CustomDataset(
        data_root=root,
        ann_file='meta/train.txt',
        data_prefix='train',
        pipeline=copy.deepcopy(pipeline))


class Timed:
    """Wraps a transform and adds its time to ``totals[label]``."""

    def __init__(self, t, label, totals):
        self.t, self.label, self.totals = t, label, totals

    def __call__(self, results):
        t0 = time.perf_counter()
        out = self.t(results)
        self.totals[self.label] += time.perf_counter() - t0
        return out


def instrument(dataset, totals):
    """Time each top-level transform and each transform of each view."""
    compose = dataset.pipeline
    for i, t in enumerate(compose.transforms):
        name = type(t).__name__
        if name == 'MultiView':
            seen = set()
            for j, view in enumerate(t.pipelines):
                if id(view) in seen:
                    continue
                seen.add(id(view))
                uses = sum(v is view for v in t.transforms)
                for k, vt in enumerate(view.transforms):
                    view.transforms[k] = Timed(
                        vt, f'  MultiView pipeline {j} (x{uses} view'
                        f'{"s" if uses > 1 else ""}): {type(vt).__name__}',
                        totals)
        compose.transforms[i] = Timed(t, name, totals)


# ----------------------------------------------------------------- timing
def seed_all(seed):
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_chunk(dataset, indices):
    t0 = time.perf_counter()
    for i in indices:
        out = dataset[i]
    assert len(out['inputs']) == 2, 'expected two views'
    return time.perf_counter() - t0


def time_main_process(datasets, indices, chunk, seed):
    names = list(datasets)
    totals = {n: 0.0 for n in names}
    rates = {n: [] for n in names}
    for c, start in enumerate(range(0, len(indices), chunk)):
        part = indices[start:start + chunk]
        order = names if c % 2 == 0 else names[::-1]
        for n in order:
            seed_all(seed + c)
            t = run_chunk(datasets[n], part)
            totals[n] += t
            rates[n].append(len(part) / t)
    return totals, rates


def time_loader(dataset, indices, workers, batch, seed):
    from mmengine.dataset import default_collate
    from torch.utils.data import DataLoader, Subset
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        Subset(dataset, indices), batch_size=batch, num_workers=workers,
        collate_fn=default_collate, shuffle=False, generator=g,
        persistent_workers=False)
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t1 = time.perf_counter()
    n_after = 0
    for b in it:
        n_after += len(b['data_samples'])
    t2 = time.perf_counter()
    del first
    return dict(total=len(indices) / (t2 - t0),
                steady=(n_after / (t2 - t1)) if n_after else float('nan'))


def main():
    args = parse_args()
    import warnings
    warnings.filterwarnings('ignore', message='.*pkg_resources.*')
    threads = set_threads(args.threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mrcl_benchmark', log_level='WARNING')
    import mrcl_plugin  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    t_start = time.perf_counter()
    label = print_machine('MRCL data-pipeline benchmark '
                          '(tools/benchmark/data_pipeline.py)',
                          torch.device('cpu'))
    ours, theirs, theirs_file, root = load_pipelines(args)
    print(f'data       : {root} (meta/train.txt, prefix train)')
    print(f'ours       : {OURS_CFG} train_pipeline')
    print(f'             {describe(ours)}')
    print(f'theirs     : {osp.relpath(theirs_file, REPO)} train_pipeline, '
          f'RandomResizedCrop scale -> {args.crop}')
    print(f'             {describe(theirs)}')
    datasets = dict(ours=build_dataset(ours, root),
                    theirs=build_dataset(theirs, root))
    total = len(datasets['ours'])
    n = min(args.num_images, total)
    rng = np.random.default_rng(args.seed)
    indices = sorted(rng.choice(total, size=n, replace=False).tolist())
    print(f'images     : {n} of {total} (a fixed random subset, seed '
          f'{args.seed}), same indices for both; main-process threads '
          f'{threads}')

    # Read every file once so that neither side pays the first disk read.
    nbytes = 0
    for i in indices:
        with open(datasets['ours'].get_data_info(i)['img_path'], 'rb') as f:
            nbytes += len(f.read())
    print(f'page cache : {n} files, {nbytes / 2**20:.1f} MiB read once '
          'before timing')
    # Warm both (imports, lazy init) on a few images outside the timing.
    for ds in datasets.values():
        run_chunk(ds, indices[:20])
    sys.stdout.flush()

    totals, rates = time_main_process(datasets, indices, args.chunk,
                                      args.seed)
    ips = {k: n / v for k, v in totals.items()}
    ratio = ips['ours'] / ips['theirs']
    print(f'\nRESULTS {label}')
    print(f'Main process, no workers: {n} images x 2 views, chunks of '
          f'{args.chunk} alternating')
    rows = []
    for k in ('ours', 'theirs'):
        rows.append([k, f'{totals[k]:.2f}', f'{ips[k]:.1f}',
                     f'{2 * ips[k]:.1f}', f'{statistics.median(rates[k]):.1f}',
                     f'{min(rates[k]):.1f}-{max(rates[k]):.1f}'])
    print_table(['pipeline', 'seconds', 'images/s', 'views/s',
                 'median chunk img/s', 'chunk range'], rows)
    chunk_ratios = [a / b for a, b in zip(rates['ours'], rates['theirs'])]
    print(f'ratio ours/theirs: {ratio:.3f}x  (per-chunk median '
          f'{statistics.median(chunk_ratios):.3f}x, range '
          f'{min(chunk_ratios):.3f}-{max(chunk_ratios):.3f}); target >= '
          f'{TARGET:.2f}x: {verdict(ratio, TARGET, at_most=False)}')

    if args.workers:
        res = {}
        for r, order in enumerate((('ours', 'theirs'), ('theirs', 'ours'))):
            for k in order:
                seed_all(args.seed + r)
                res.setdefault(k, []).append(
                    time_loader(datasets[k], indices, args.workers,
                                args.batch, args.seed))
        print(f'\nDataLoader: {args.workers} workers, batch {args.batch}, '
              'default_collate; 2 runs each (ours first, then theirs first)')
        rows = []
        for k in ('ours', 'theirs'):
            rows.append([k, ', '.join(f'{x["steady"]:.1f}' for x in res[k]),
                         ', '.join(f'{x["total"]:.1f}' for x in res[k])])
        print_table(['pipeline', 'img/s after 1st batch',
                     'img/s incl. start-up'], rows)
        best = {k: max(x['steady'] for x in v) for k, v in res.items()}
        lratio = best['ours'] / best['theirs']
        print(f'ratio ours/theirs (best steady run each): {lratio:.3f}x; '
              f'target >= {TARGET:.2f}x: '
              f'{verdict(lratio, TARGET, at_most=False)}')

    if args.breakdown:
        m = min(n, 500)
        print(f'\nPer-transform time over {m} images (main process, '
              'instrumented copies; the wrappers add a little overhead)')
        for k, pipe in (('ours', ours), ('theirs', theirs)):
            tot = defaultdict(float)
            ds = build_dataset(pipe, root)
            instrument(ds, tot)
            seed_all(args.seed)
            run_chunk(ds, indices[:m])
            rows = [[lab, f'{1e6 * t / m:.1f}'] for lab, t in tot.items()]
            print(f'\n[{k}]')
            print_table(['transform', 'us/image (all its views)'], rows)
    print(f'\ntotal wall time {time.perf_counter() - t_start:.0f} s')


if __name__ == '__main__':
    main()
