"""Train with mmengine's Runner: ``python tools/train.py CONFIG [options]``.

The same command line as mmpretrain's tools/train.py; `mim train mrcl_plugin`
runs this file. A bad config, checkpoint or data folder stops it with one
``error:`` line before anything is written (docs/reliability.md).
"""
import argparse
import logging
import os
import os.path as osp
import warnings

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

import mrcl_plugin  # noqa: F401  registers MRCL, weights-only loading
from mrcl_plugin.checkpoints import is_zero_checkpoint, latest_checkpoint
from mrcl_plugin.preflight import (build_runner, check_options,
                                   check_train_config, clean_refusals,
                                   one_line_errors, run_logged)

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not this tool's, to show
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)


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


def fit_to_cpu(cfg: Config) -> None:
    """Without a GPU, the configs' GPU settings give way, one log line each,
    so that any config runs a few iterations on a laptop: AMP (mmengine's
    ``AmpOptimWrapper`` asserts a GPU) becomes bf16 autocast; with a
    launcher, NCCL becomes gloo, :mod:`mrcl_plugin.cpu_distributed` is
    imported (SyncBN on CPU), DDP gets no ``device_ids`` and FSDP wraps on
    the CPU. On a GPU nothing changes."""
    if torch.cuda.is_available():
        return
    notes = []
    wrapper = cfg.get('optim_wrapper') or {}
    if wrapper.get('type') == 'AmpOptimWrapper':
        wrapper.type = 'CPUBF16OptimWrapper'  # takes AmpOptimWrapper's args
        notes.append('optim_wrapper AmpOptimWrapper -> CPUBF16OptimWrapper '
                     '(bf16 autocast)')
    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
    if cfg.launcher != 'none' and dist_cfg.get('backend') == 'nccl':
        dist_cfg.backend = 'gloo'
        notes.append('env_cfg.dist_cfg.backend nccl -> gloo')
    if cfg.launcher != 'none':
        import mrcl_plugin.cpu_distributed  # noqa: F401  SyncBN on CPU
        imports = cfg.setdefault('custom_imports', dict(imports=[]))
        if 'mrcl_plugin.cpu_distributed' not in imports['imports']:
            imports['imports'].append('mrcl_plugin.cpu_distributed')
            notes.append('custom_imports += mrcl_plugin.cpu_distributed '
                         '(mmengine\'s init, SyncBN and DDP on CPU processes)')
    if cfg.launcher != 'none' and 'runner_type' not in cfg:
        # mmengine's default DDP gets device_ids=[LOCAL_RANK], which a CPU
        # module refuses
        wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
            type='MMDistributedDataParallel',
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        if 'device_ids' not in wrapper_cfg:
            wrapper_cfg['device_ids'] = None
            cfg.model_wrapper_cfg = wrapper_cfg
            notes.append('model_wrapper_cfg.device_ids = None (DDP on CPU)')
    strategy = cfg.get('strategy') or {}
    if strategy.get('type') == 'FSDPStrategy':
        wrap = strategy.setdefault('model_wrapper', {})
        if 'device_id' not in wrap:
            wrap['device_id'] = 'cpu'
            notes.append("strategy.model_wrapper.device_id = 'cpu'")
    for note in notes:
        print_log(f'no GPU: {note}', logger='current', level=logging.WARNING)


def compile_through_hook(cfg: Config) -> None:
    """``compile=True`` (mmengine's switch), or a dict of
    ``torch.compile``'s options, compiles the encoder and the decoder with
    :class:`mrcl_plugin.engine.hooks.CompileHook`: mmengine's own compile
    of the whole ``train_step`` cannot trace it (docs/speed.md)."""
    options = cfg.get('compile')
    if not options:
        return
    hook = dict(type='CompileHook', **({} if options is True else options))
    cfg.setdefault('custom_hooks', []).append(hook)
    cfg.compile = False
    print_log(f'compile={options}: custom_hooks += {hook}', logger='current',
              level=logging.INFO)


def main():
    args = parse_args()
    if not osp.isfile(args.config):
        raise SystemExit(f'config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    added = {}
    if args.cfg_options is not None:
        added = check_options(cfg, args.cfg_options)
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, latest_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        if not (osp.isfile(args.resume) or is_zero_checkpoint(args.resume)):
            raise SystemExit(f'--resume checkpoint not found: {args.resume}'
                             + (' (a folder that is no DeepSpeed checkpoint)'
                                if osp.isdir(args.resume) else ''))
        cfg.resume, cfg.load_from = True, args.resume
    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    fit_to_cpu(cfg)

    check_train_config(cfg)
    compile_through_hook(cfg)
    with clean_refusals(cfg, added):
        runner = build_runner(cfg)
        run_logged(runner, runner.train)


if __name__ == '__main__':
    one_line_errors(main)
