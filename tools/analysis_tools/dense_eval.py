"""Dense evaluation of an encoder's frozen patch tokens on a segmentation
folder, against its random init.

    python tools/analysis_tools/dense_eval.py CONFIG CHECKPOINT \
        --data-root ../shared/data/coco_semseg_ade_layout [--size 64]

In-context retrieval (Hummingbird: k = 30 nearest bank patches by cosine
similarity, softmax(similarity / T) weights, T = 0.02 and 0.07) and a
linear patch probe, on the patch tokens of the middle block and the last,
with 5-fold cross-validation over the folder's images (mmseg's ADE20K
layout; label 0 unlabelled); mIoU is the mean over folds with a 95%
bootstrap interval over query images. CHECKPOINT: a pretraining checkpoint
of CONFIG's model or an encoder-only one (``mrcl2mmpretrain.py``'s, a plain
``VisionTransformer``'s). See :mod:`mrcl_plugin.evaluation.dense`.
"""
import argparse
import time
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mrcl_plugin  # noqa: F401
from mrcl_plugin.checkpoints import CheckpointError
from mrcl_plugin.evaluation import (SegFolderError, build_model, dense_eval,
                                    load_seg_folder)

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='MRCL or encoder-only checkpoint')
    parser.add_argument('--data-root', required=True,
                        help='segmentation folder (images/, annotations/)')
    parser.add_argument('--splits', nargs='+',
                        default=['training', 'validation'],
                        help='its splits, pooled (default: both)')
    parser.add_argument('--size', type=int, default=None,
                        help='square evaluation size (default: the '
                        "backbone's img_size)")
    parser.add_argument('--blocks', type=int, nargs='+', default=None,
                        help='0-based blocks (default: the middle and last)')
    parser.add_argument('--folds', type=int, default=5)
    parser.add_argument('-k', type=int, default=30)
    parser.add_argument('--temperatures', type=float, nargs='+',
                        default=[0.02, 0.07])
    parser.add_argument('--bank-copies', type=int, default=0,
                        help='random resized crops of each image added to '
                        'the memory bank (default: none)')
    parser.add_argument('--no-linear', action='store_true',
                        help='skip the linear patch probe')
    parser.add_argument('--linear-epochs', type=int, default=100)
    parser.add_argument('--bootstrap', type=int, default=1000,
                        help='bootstrap resamples for the interval')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--no-random-init', action='store_true',
                        help='skip the random-init floor')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={})
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    torch.manual_seed(0)  # the same random init on every run
    try:  # the checkpoint and the folder first: bad input stops at once
        models = {'pretrained': build_model(cfg, args.checkpoint)}
        size = args.size or models['pretrained'].backbone.img_size[0]
        data = load_seg_folder(args.data_root, size, args.splits)
    except (CheckpointError, SegFolderError) as e:
        raise SystemExit(f'error: {e}')
    if not args.no_random_init:
        models = {'random init': build_model(cfg), **models}
    results = {}
    for name, model in models.items():
        start = time.time()
        try:  # a size, block or k that does not fit: one line
            results[name] = dense_eval(
                model, data, args.blocks, args.folds, args.k,
                args.temperatures, args.bank_copies, not args.no_linear,
                args.linear_epochs, args.bootstrap, args.batch_size)
        except ValueError as e:
            raise SystemExit(f'error: {e}')
        print(f'{name}: {time.time() - start:.0f} s')
    print(f'dense evaluation on {args.data_root}: {len(data.names)} images '
          f'at {size} px, {data.num_classes} classes, {args.folds} folds, '
          f'k={args.k}; mIoU % (95% bootstrap interval)')
    for key in results[name]:
        print(f'  {key:>14}: ' + '   '.join(
            f'{n} {r[key]["miou"]:.2f} ({r[key].get("low", float("nan")):.2f}'
            f'-{r[key].get("high", float("nan")):.2f})'
            for n, r in results.items()))
    return results


if __name__ == '__main__':
    main()
