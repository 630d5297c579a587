"""Weighted kNN top-1 of an encoder's features, against its random init.

    python tools/analysis_tools/knn_eval.py CONFIG CHECKPOINT [--per-class N]

DINO's protocol (k=20, cosine similarity, votes exp(s / 0.07)) on the class
tokens of the full images of the classification splits next to the
config's pretraining data (``meta/train.txt`` as the bank, ``meta/test.txt``
or ``meta/val.txt`` as the queries under its ``data_root``); the whole
splits by default. See :mod:`mrcl_plugin.evaluation.knn`.
"""
import argparse
import os.path as osp
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mrcl_plugin  # noqa: F401
from mrcl_plugin.checkpoints import CheckpointError
from mrcl_plugin.evaluation import (balanced_subset, build_model, knn_eval,
                                    split_dataset)
from mrcl_plugin.preflight import mrcl_data_hint

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='MRCL or encoder-only checkpoint')
    parser.add_argument('--per-class', type=int, default=None,
                        help='bank images per class (default: all)')
    parser.add_argument('--test-per-class', type=int, default=None,
                        help='query images per class (default: all)')
    parser.add_argument('-k', type=int, default=20)
    parser.add_argument('--temperature', type=float, default=0.07)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--no-random-init', action='store_true',
                        help='skip the random-init floor')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={})
    return parser.parse_args()


def check_splits(cfg: Config, data_root: str, per_class, k: int) -> None:
    """The bank and query splits are there and the bank holds k images, or
    one ``error:`` line: before any feature is computed."""
    if not osp.isdir(data_root):
        hint = mrcl_data_hint(cfg, data_root)
        raise SystemExit(
            f'error: train_dataloader.dataset.data_root {data_root} is not a '
            f'folder' + (f' ({hint})' if hint else ''))
    try:
        bank = len(balanced_subset(split_dataset(data_root, 'train'),
                                   per_class))
        split_dataset(data_root, 'test')
    except FileNotFoundError as e:
        raise SystemExit(f'error: {e}')
    if not 1 <= k <= bank:
        raise SystemExit(
            f'error: -k {k}: must be from 1 to the {bank} bank images (the '
            f'train split of {data_root}'
            + (f', --per-class {per_class}' if per_class else '') + ')')


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    torch.manual_seed(0)  # the same random init on every run
    data_root = cfg.train_dataloader.dataset.data_root
    check_splits(cfg, data_root, args.per_class, args.k)
    try:  # the checkpoint first: a bad file stops the tool at once
        models = {'pretrained': build_model(cfg, args.checkpoint)}
    except CheckpointError as e:
        raise SystemExit(f'error: {e}')
    if not args.no_random_init:
        models = {'random init': build_model(cfg), **models}
    results = {}
    for name, model in models.items():
        start = time.time()
        results[name] = knn_eval(
            model, data_root, bank_per_class=args.per_class,
            query_per_class=args.test_per_class, k=args.k,
            temperature=args.temperature, batch_size=args.batch_size,
            num_workers=args.num_workers)
        results[name]['seconds'] = time.time() - start
    print(f'kNN on {data_root}: {results[name]["bank"]} bank images, '
          f'{results[name]["queries"]} queries, k={args.k}, '
          f'T={args.temperature}')
    for name, res in results.items():
        print(f'  {name:>11}: kNN top-1 {res["top1"]:.2f}% '
              f'(binomial SE {res["se"]:.2f}; {res["seconds"]:.0f} s)')
    return results


if __name__ == '__main__':
    main()
