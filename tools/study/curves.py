"""Learning curves of a study preset with ``curve_interval``: recorded while
a run trains (:class:`CurveHook`), kept in the run's CSV row
(``knn_curve``), and averaged, plotted and judged over time in the report.

A curve is a list of ``(iteration, kNN top-1 %)`` points, the first at
iteration 0 (the run's random init), on the preset's fixed curve subset.
"""
import json
import math
import os.path as osp
import time
from statistics import mean, stdev
from typing import Dict, List, Optional, Tuple

from mmengine.hooks import Hook

from mrcl_plugin.checkpoints import atomic_path

Curve = List[Tuple[int, float]]
STATE = 'study_curve.json'  # in the run's work_dir


def format_curve(points: Curve) -> str:
    """The CSV cell: ``'0:29.4 130:31.25 ...'``."""
    return ' '.join(f'{step}:{top1:g}' for step, top1 in points)


def parse_curve(cell: str) -> Curve:
    return [(int(step), float(top1))
            for step, top1 in (p.split(':') for p in cell.split())]


def binomial_margin(top1: float, queries: int) -> float:
    """Two binomial standard errors (points) of a top-1 of ``queries``."""
    p = top1 / 100
    return 200 * math.sqrt(p * (1 - p) / queries)


class CurveHook(Hook):
    """Keep every point the run's ``KNNHook`` logs, with the training
    seconds so far, in ``<work_dir>/study_curve.json``: written at each
    point, before the checkpoint of that iteration (this hook's priority
    is between KNNHook's and CheckpointHook's), so a resumed run continues
    the curve and the clock from its checkpoint.

    With ``stall_check``, the run stops at its first point at or past the
    halfway iteration if that point is no more than ``stall_margin``
    points above its iteration-0 point (None: :func:`binomial_margin` of
    the latter over ``queries``): it has not left its random init (the
    long study's stall rule). The decision is saved, so a resumed stalled
    run does not train on.

    The figures a ``DenseKNNHook`` logged at the same step (``dense/*``)
    are kept beside each point (:meth:`dense_curve`).
    """
    priority = 'LOW'

    def __init__(self, interval: int, stall_check: bool = False,
                 stall_margin: Optional[float] = None,
                 queries: Optional[int] = None):
        self.interval = interval
        self.stall_check = stall_check
        self.stall_margin = stall_margin
        self.queries = queries
        self.state = dict(points=[], stalled_at=None, dense=[])

    def before_train(self, runner) -> None:
        self.path = osp.join(runner.work_dir, STATE)
        if osp.isfile(self.path):
            with open(self.path) as f:
                self.state = json.load(f)
        # from the checkpoint on, the run is trained (and timed) again
        points, start = self.state['points'], runner.iter
        earlier = next((p[2] for p in points if p[0] == start), 0.)
        self.clock = time.time() - earlier
        self.state['points'] = [p for p in points if p[0] < start]
        self.state['dense'] = [p for p in self.state.get('dense', [])
                               if p[0] < start]
        if (self.state['stalled_at'] or 0) > start:
            self.state['stalled_at'] = None
        self._record(runner, runner.iter)  # KNNHook's before_train point
        if self.state['stalled_at'] is not None:
            runner.train_loop.stop_training = True

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        if not (self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            return
        step = runner.iter + 1
        self._record(runner, step)
        points = self.state['points']
        margin = self.stall_margin
        if margin is None and self.stall_check:
            margin = binomial_margin(points[0][1], self.queries)
        if (self.stall_check and step < runner.max_iters
                and 2 * step >= runner.max_iters
                and not any(2 * p[0] >= runner.max_iters
                            for p in points[:-1])
                and points[-1][1] - points[0][1] <= margin):
            self.state['stalled_at'] = step
            self._save()
            runner.train_loop.stop_training = True

    def train_s(self) -> float:
        """Training seconds, all sessions of the run, curve points included
        (the time of a session lost to a kill is not counted)."""
        return time.time() - self.clock

    def curve(self) -> Curve:
        return [(step, top1) for step, top1, _ in self.state['points']]

    def dense_curve(self) -> List[Tuple[int, Dict[str, float]]]:
        """[(step, {'dense/...': mIoU})], at the points of :meth:`curve`."""
        return [tuple(p) for p in self.state['dense']]

    def _record(self, runner, step: int) -> None:
        hub = runner.message_hub
        top1 = hub.get_scalar('knn/top1').current()
        self.state['points'].append((step, round(top1, 2), self.train_s()))
        dense = {k: round(v.current(), 2) for k, v in hub.log_scalars.items()
                 if k.startswith('dense/')}
        if dense:
            self.state['dense'].append((step, dense))
        self._save()

    def _save(self) -> None:
        with atomic_path(self.path) as partial, open(partial, 'w') as f:
            json.dump(self.state, f)


Stat = Tuple[float, float, int]  # mean, sample std (0 for one run), runs


def arm_curve(curves: List[Curve]) -> Dict[int, Stat]:
    """Per iteration, the mean, std and number of the runs that reached
    it."""
    by_step: Dict[int, List[float]] = {}
    for curve in curves:
        for step, top1 in curve:
            by_step.setdefault(step, []).append(top1)
    return {
        step: (mean(v), stdev(v) if len(v) > 1 else 0., len(v))
        for step, v in sorted(by_step.items())
    }


def gap_verdict(base: Dict[int, Stat], mr: Dict[int, Stat]) -> str:
    """From which iteration on the MR-X - X gap exceeds the larger seed
    std, with the same sign, to the last iteration both arms reached with
    2 or more runs each."""
    steps = [s for s in base if s in mr and min(base[s][2], mr[s][2]) > 1]
    if not steps:
        return 'fewer than 2 runs an arm: no seed spread to judge against'
    gaps = [(s, mr[s][0] - base[s][0], max(base[s][1], mr[s][1]))
            for s in steps]
    since = None
    for step, gap, spread in reversed(gaps):
        sign = gap > 0
        if abs(gap) <= spread or (since and (since[1] > 0) != sign):
            break
        since = (step, gap)
    last, gap, spread = gaps[-1]
    tail = (f'at iteration {last}: {gap:+.1f} points, seed spread '
            f'{spread:.1f}')
    if since is None:
        wider = [s for s, g, sp in gaps if abs(g) > sp]
        return ('the gap is within the seed spread at the end' +
                (f' (it exceeded it at iterations {wider})' if wider
                 else ' and at every iteration') + f'; {tail}')
    side = 'above' if since[1] > 0 else 'below'
    return (f'MR-X is {side} X by more than the seed spread from iteration '
            f'{since[0]} on; {tail}')


def plot_curves(panels, init: Optional[float], path: str,
                ylabel: str = 'kNN top-1 (%)') -> None:
    """One panel per learner: ``panels`` is ``[(name, {label: (color,
    arm curve)})]``; mean lines with a +-1 std band, the random init
    dotted."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    # more than four arms: the legend beside the panel, not over it
    beside = max(len(arms) for _, arms in panels) > 4
    fig, axes = plt.subplots(1, len(panels),
                             figsize=(4.5 * len(panels) + 3.5 * beside, 3.4),
                             squeeze=False)
    for ax, (name, arms) in zip(axes[0], panels):
        for label, (color, arm) in arms.items():
            steps = list(arm)
            m = [arm[s][0] for s in steps]
            s = [arm[s][1] for s in steps]
            ax.plot(steps, m, color=color, marker='o', markersize=3,
                    label=label)
            ax.fill_between(steps, [a - b for a, b in zip(m, s)],
                            [a + b for a, b in zip(m, s)], color=color,
                            alpha=0.15)
        if init is not None:
            ax.axhline(init, color='gray', linestyle=':',
                       label='random init')
        ax.set_title(name)
        ax.set_xlabel('iteration')
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, **(dict(loc='upper left', bbox_to_anchor=(
            1.02, 1)) if beside else {}))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
