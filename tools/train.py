"""Train with mmengine's Runner: ``python tools/train.py CONFIG [options]``.

The same command line as mmpretrain's tools/train.py; `mim train mrcl_plugin`
runs this file. A bad config, checkpoint or data folder stops it with one
``error:`` line before anything is written (docs/reliability.md).
"""
import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction

import mrcl_plugin  # noqa: F401  registers MRCL, applies mrcl_plugin.compat
from mrcl_plugin.preflight import (build_runner, check_options,
                                   check_train_config, one_line_errors,
                                   run_logged)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or without a path from the latest '
        'checkpoint in the work directory')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed-precision training: fp16 with loss scaling on a GPU, '
        'bf16 autocast on a CPU (fast where it has avx512_bf16 or AMX)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual batch size over the config\'s '
        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.mask_ratio=0.3')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        check_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp and torch.cuda.is_available():
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    elif args.amp:  # AmpOptimWrapper asserts a GPU: bf16 autocast instead
        cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'--resume checkpoint not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    check_train_config(cfg)
    runner = build_runner(cfg)
    run_logged(runner, runner.train)


if __name__ == '__main__':
    one_line_errors(main)
