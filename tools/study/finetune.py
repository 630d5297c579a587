"""Table 2 in miniature: each encoder a dense study preset kept, fine-tuned
through mmseg on CamVid and tested.

    python tools/study/finetune.py --preset camvid --plan      # the budget
    python tools/study/finetune.py --preset camvid [--readout linear]

For every run of the preset (its random inits, X, MR-X, reconstruction
alone; the weights run.py kept in ``work_dirs/study/<preset>/<run>/``) the
encoder is converted as a user converts it (``to_mmpretrain``), and the
readout's config trains from it with the run's seed:
``configs/benchmarks/mmsegmentation/mrcl_vit-tiny-p8_upernet_1xb8-bf16-1k_camvid-128x128.py``
(UperNet, the whole encoder fine-tuned) or its ``linear`` sibling (the
encoder frozen, a linear head). The validation split picks the checkpoint
(``save_best='mIoU'``), the test split gives the figure; the test's
per-image areas go to the run's folder (``<readout>_areas.pt``) for paired
comparisons (tools/study/compare.py), and a row to
``<preset>-<readout>.csv``. Finished runs are skipped; a killed one starts
again.
"""
import argparse
import csv
import os.path as osp
import shutil
import sys
import time
from statistics import median
from typing import Dict, List

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from instrument import weights  # noqa: E402
from presets import PRESETS, Preset, Run  # noqa: E402
from runner import planned_runs, save_areas  # noqa: E402

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..',
                            'analysis_tools'))
from machine import machine  # noqa: E402

from mrcl_plugin.checkpoints import atomic_path  # noqa: E402
from mrcl_plugin.checkpoints.converters import to_mmpretrain  # noqa: E402

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))), 'configs', 'benchmarks', 'mmsegmentation')
READOUTS = dict(
    upernet='mrcl_vit-tiny-p8_upernet_1xb8-bf16-1k_camvid-128x128.py',
    linear='mrcl_vit-tiny-p8_linear_1xb8-bf16-1k_camvid-128x128.py')
COLUMNS = ('name', 'learner', 'method', 'mask_ratio', 'alpha', 'lambd',
           'contrastive_weight', 'seed', 'readout', 'iters', 'best_iter',
           'val_miou', 'test_miou', 'train_s', 'wall_s', 'machine')


@METRICS.register_module()
class ImageAreasIoUMetric(IoUMetric):
    """mmseg's IoUMetric that also keeps each image's areas of
    intersection, prediction and label per class (``image_areas``, (N, 3,
    K), in the dataset's order), as the dense evaluation's
    :func:`~mrcl_plugin.evaluation.dense.image_areas` are."""

    def compute_metrics(self, results: list) -> Dict[str, float]:
        self.image_areas = torch.stack(
            [torch.stack([r[0], r[2], r[3]]) for r in results]).double()
        return super().compute_metrics(results)


def readout_config(run: Run, readout: str, encoder: str, work_dir: str,
                   iters: int = None, options: Dict = None) -> Config:
    """The readout's config for one run: its encoder, its seed, a scratch
    work_dir, quiet logs; ``iters`` rescales the schedule, ``options``
    (``--cfg-options`` style) changes the rest."""
    cfg = Config.fromfile(osp.join(CONFIGS, READOUTS[readout]))
    cfg.merge_from_dict({
        'work_dir': work_dir,
        'experiment_name': f'{readout}_{run.name}',
        'model.backbone.init_cfg.checkpoint': encoder,
        'randomness': dict(seed=run.seed),
        'log_level': 'WARNING',
        'test_evaluator': dict(type='ImageAreasIoUMetric',
                               iou_metrics=['mIoU']),
    })
    if iters:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = max(1, iters // 4)
        cfg.default_hooks.checkpoint.interval = max(1, iters // 4)
        warmup, poly = cfg.param_scheduler
        warmup.end = poly.begin = max(1, iters // 10)
        poly.end = iters
    cfg.merge_from_dict(options or {})
    return cfg


def encoder_of(run: Run, run_dir: str) -> str:
    """The run's encoder, converted once into its folder."""
    path = osp.join(run_dir, 'encoder_mmpretrain.pth')
    if not osp.isfile(path):
        with atomic_path(path) as partial:
            torch.save(to_mmpretrain(weights(run, run_dir)), partial)
    return path


def finetune(run: Run, readout: str, run_dir: str, iters: int = None,
             options: Dict = None) -> Dict:
    """Train the readout from the run's encoder, test its best validation
    checkpoint; the row, and the test's per-image areas saved."""
    start = time.time()
    work_dir = osp.join(run_dir, readout)
    shutil.rmtree(work_dir, ignore_errors=True)  # a killed one starts again
    cfg = readout_config(run, readout, encoder_of(run, run_dir), work_dir,
                         iters, options)
    runner = Runner.from_cfg(cfg)
    runner.train()
    trained = time.time() - start
    hook = next(h for h in runner.hooks if type(h).__name__ ==
                'CheckpointHook')
    best = hook.best_ckpt_path
    runner.load_checkpoint(best)
    test = runner.test()
    metric = runner.test_loop.evaluator.metrics[0]
    save_areas(osp.join(run_dir, f'{readout}_areas.pt'),
               {'test': dict(areas=[metric.image_areas])})
    return dict(
        name=run.name, learner=run.learner, method=run.method,
        mask_ratio=run.mask_ratio, alpha=run.alpha, lambd=run.lambd,
        contrastive_weight=run.contrastive_weight, seed=run.seed,
        readout=readout, iters=cfg.train_cfg.max_iters,
        best_iter=int(osp.basename(best).split('_')[-1].split('.')[0]),
        val_miou=round(float(runner.message_hub.get_info('best_score')), 2),
        test_miou=round(float(test['mIoU']), 2), train_s=round(trained, 1),
        wall_s=round(time.time() - start, 1), machine=machine())


class _StepTimes(Hook):

    def __init__(self):
        self.times: List[float] = []
        self.last = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def plan(preset: Preset, runs: List[Run], readout: str, work_root: str,
         iters: int) -> float:
    """Time 15 iterations and one test of the readout on the first run,
    and print the planned minutes of ``runs`` at ``iters``."""
    run = runs[0]
    run_dir = osp.join(work_root, run.name)
    cfg = readout_config(run, readout, encoder_of(run, run_dir),
                         osp.join(run_dir, f'{readout}_plan'), 15)
    cfg.train_cfg.val_begin = 10**9  # no validation while timing
    runner = Runner.from_cfg(cfg)
    times = _StepTimes()
    runner.register_hook(times)
    runner.train()
    step_s = median(times.times[4:])
    start = time.perf_counter()
    runner.val()
    val_s = time.perf_counter() - start
    start = time.perf_counter()
    runner.test()
    test_s = time.perf_counter() - start
    shutil.rmtree(osp.join(run_dir, f'{readout}_plan'), ignore_errors=True)
    per_run = iters * step_s + 4 * val_s + test_s
    print(f'[plan] {readout}: {step_s:.3f} s/iteration, validation '
          f'{val_s:.1f} s, test {test_s:.1f} s; {iters} iterations: '
          f'{per_run / 60:.1f} min a run, {len(runs)} runs: '
          f'{len(runs) * per_run / 60:.0f} min')
    return len(runs) * per_run


def read_done(path: str) -> List[Dict]:
    if not osp.isfile(path):
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='camvid', choices=sorted(PRESETS))
    parser.add_argument('--readout', default='upernet',
                        choices=sorted(READOUTS))
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--csv', help='default: '
                        'work_dirs/study/<preset>-<readout>.csv')
    parser.add_argument('--iters', type=int, help="the config's 1,000 "
                        'unless given')
    parser.add_argument('--runs', nargs='+', help='only these runs (names)')
    parser.add_argument('--plan', action='store_true',
                        help='time the readout here and print the budget')
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    work_root = osp.join(args.work_dir, preset.name)
    runs = [r for r in planned_runs(preset, [])
            if not args.runs or r.name in args.runs]
    path = args.csv or osp.join(args.work_dir,
                                f'{preset.name}-{args.readout}.csv')
    rows = read_done(path)
    todo = [r for r in runs if r.name not in {row['name'] for row in rows}]
    if args.plan:
        plan(preset, todo or runs, args.readout, work_root,
             args.iters or Config.fromfile(osp.join(
                 CONFIGS, READOUTS[args.readout])).train_cfg.max_iters)
        return
    for run in todo:
        rows.append(finetune(run, args.readout,
                             osp.join(work_root, run.name), args.iters))
        with atomic_path(path) as partial, \
                open(partial, 'w', newline='') as f:
            writer = csv.DictWriter(f, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        print(f'[finetune] {run.name} {args.readout}: test mIoU '
              f'{rows[-1]["test_miou"]} (best validation at iteration '
              f'{rows[-1]["best_iter"]}), {rows[-1]["wall_s"]:.0f} s',
              flush=True)


if __name__ == '__main__':
    main()
