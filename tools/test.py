"""Test (evaluate) a checkpoint: ``python tools/test.py CONFIG CHECKPOINT``.

The same command line as mmpretrain's tools/test.py, less its display, TTA
and pin-memory options; `mim test mrcl_plugin` runs this file. A bad config,
checkpoint or data folder stops it with one ``error:`` line, as
tools/train.py (docs/reliability.md).
"""
import argparse
import os
import os.path as osp
import warnings

import mmengine
from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults

import mrcl_plugin  # noqa: F401  registers MRCL, applies mrcl_plugin.compat
from mrcl_plugin.preflight import (build_runner, check_options,
                                   check_test_config, one_line_errors,
                                   run_logged)

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)


def parse_args():
    parser = argparse.ArgumentParser(description='Test a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dump the results to this file')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='what --out holds: the metrics, or (default) the predictions')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=64')
    parser.add_argument(
        '--amp', action='store_true', help='mixed-precision testing')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out is None and args.out_item is not None:
        parser.error('--out-item needs --out')
    return args


def main():
    args = parse_args()
    for what, path in (('config', args.config),
                       ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise SystemExit(f'{what} file not found: {path}')
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
    cfg.load_from = args.checkpoint
    if args.amp:
        cfg.test_cfg.fp16 = True

    check_test_config(cfg)
    cfg.test_dataloader.setdefault('collate_fn', dict(type='default_collate'))
    runner = build_runner(cfg)
    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(
            DumpResults(out_file_path=args.out))
    metrics = run_logged(runner, runner.test)
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    one_line_errors(main)
