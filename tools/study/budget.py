"""The planned budget of a study preset, from costs measured here and now:
the steady-state time of one training iteration of each arm (learner and
method), of one kNN curve point, and of the final evaluation.

    python tools/study/run.py --preset cifar10-long --plan

Measure on the machine the study will run on, with nothing else running:
the figures scale with whatever else shares the cores.
"""
import tempfile
import time
from dataclasses import replace
from statistics import median
from typing import Dict, List

from mmengine.hooks import Hook
from mmengine.runner import Runner

from presets import Preset, Run
from runner import dense_root, evaluate, planned_runs, run_config

from mrcl_plugin.engine.hooks import DenseKNNHook
from mrcl_plugin.evaluation import knn_eval


class _StepTimes(Hook):
    """Wall-clock time of each training iteration, from the end of one to
    the end of the next: loading its batch included (in the main process
    with no loader workers), which ``before_train_iter`` would miss."""

    def __init__(self):
        self.times: List[float] = []
        self.last = None

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def measure(preset: Preset, runs: List[Run], iters: int = 20,
            warmup: int = 5, log=print) -> Dict:
    """Train each arm of ``runs`` for ``warmup`` + ``iters`` iterations
    (scratch work_dir, no curve, no checkpoints) and time its steps after
    the warm-up (median); time a curve point and the final evaluation on
    the last arm's model."""
    short = replace(preset, iters=warmup + iters, warmup_iters=1,
                    curve_interval=0)
    arms, step_s = {}, {}
    for run in runs:
        arms.setdefault((run.learner, run.method), run)
    with tempfile.TemporaryDirectory() as work_dir:
        for arm, run in arms.items():
            if run.method == 'init':
                continue
            cfg = run_config(run, short, work_dir)
            runner = Runner.from_cfg(cfg)
            times = _StepTimes()
            runner.register_hook(times)
            runner.train()
            step_s[arm] = median(times.times[warmup - 1:])
            log(f'[plan] {run.learner} {run.method}: '
                f'{step_s[arm]:.3f} s/iteration (median of {iters})')
        model = runner.model.eval()
        start = time.perf_counter()
        if preset.curve_interval:
            knn_eval(model, cfg.train_dataloader.dataset.data_root,
                     bank_per_class=preset.curve_bank_per_class,
                     query_per_class=preset.curve_query_per_class,
                     num_workers=preset.num_workers)
        point_s = time.perf_counter() - start
        if preset.curve_interval and preset.dense_root:
            hook = DenseKNNHook(1, dense_root(cfg, preset),
                                **preset.dense_args())
            hook.before_train(runner)  # reads the folder once a run
            start = time.perf_counter()
            hook.figures(model)
            point_s += time.perf_counter() - start
        start = time.perf_counter()
        evaluate(model, cfg, preset)
        eval_s = time.perf_counter() - start
    return dict(step_s=step_s, point_s=point_s, eval_s=eval_s)


def run_cost(run: Run, preset: Preset, costs: Dict) -> float:
    """Seconds of one run: its iterations, its curve points (iteration 0,
    every interval, the last) and its final evaluation."""
    if run.method == 'init':
        return costs['eval_s']
    points = 0
    if preset.curve_interval:
        points = 1 + -(-preset.iters // preset.curve_interval)
    return (preset.iters * costs['step_s'][(run.learner, run.method)] +
            points * costs['point_s'] + costs['eval_s'])


def plan(preset: Preset, rows: List[Dict], iters: int = 20,
         log=print) -> float:
    """Measure, then print the planned seconds of every run not in
    ``rows`` and their total; return it."""
    done = {row['name'] for row in rows}
    runs = [r for r in planned_runs(preset, rows) if r.name not in done]
    if not runs:
        log(f'[plan] {preset.name}: every run is done')
        return 0.
    costs = measure(preset, runs, iters, log=log)
    log(f'[plan] kNN curve point {costs["point_s"]:.1f} s, final '
        f'evaluation {costs["eval_s"]:.1f} s')
    total = 0.
    for run in runs:
        seconds = run_cost(run, preset, costs)
        total += seconds
        log(f'[plan] {run.name}: {seconds / 60:.1f} min')
    log(f'[plan] {preset.name}: {len(runs)} runs to go ({len(done)} done), '
        f'about {total / 60:.0f} min ({total / 3600:.1f} h). Not counted: '
        'the stall rule (it stops stalled runs at half time and changes '
        'the plan), and a '
        'resumed run re-reading the batches it had trained before its '
        'checkpoint (mmengine advances the dataloader).')
    return total
