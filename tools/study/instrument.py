"""Check the dense instrument before any comparison: can a design of the
dense evaluation tell a trained encoder from its random init by more than
the training seeds move it?

    python tools/study/run.py --preset camvid-instrument     # init and X, weights kept
    python tools/study/instrument.py --preset camvid-instrument \
        --skip 128x2 --out docs/study/camvid-instrument-check.csv
    python tools/study/run.py --preset camvid     # the MR arms; init and X reused

Each encoder the preset kept (its random inits and X of each learner, all
seeds) is evaluated on the preset's segmentation folder in every design:
evaluation size x memory-bank augmentation (each evaluation gives every
block, temperature and, without bank augmentation, the linear probe). Per
design, figure and learner:

- ``resolution``: |mean X - mean init| over the pooled seed std,
  sqrt((s_X^2 + s_init^2) / 2);
- the paired interval of X - init (query images resampled once for all
  runs; :func:`~mrcl_plugin.evaluation.paired_bootstrap`) and its width;
- ``run_halfwidth``: the mean half-width of one run's bootstrap interval.

The choice, fixed before any MR-X arm is evaluated: the design resolving
the most learners (resolution >= 2), then with the largest smaller
resolution, then the narrowest paired interval. Each evaluation is cached
in its run's work_dir, so a killed check resumes.
"""
import argparse
import csv
import json
import os.path as osp
import sys
from statistics import mean, stdev
from typing import Dict, List

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from presets import PRESETS, Preset, Run  # noqa: E402
from runner import (dense_root, load_areas, planned_runs,  # noqa: E402
                    run_config, save_areas)

from mrcl_plugin.checkpoints import atomic_path, latest_checkpoint  # noqa
from mrcl_plugin.evaluation import (build_model, dense_eval,  # noqa: E402
                                    load_seg_folder, paired_bootstrap)

SIZES = (64, 96, 128)
BANK_COPIES = (0, 2)
RESOLVED = 2.  # |X - init| in pooled seed stds that counts as resolved
COLUMNS = ('size', 'bank_copies', 'figure', 'learner', 'x_mean', 'x_std',
           'init_mean', 'init_std', 'resolution', 'paired_diff',
           'paired_low', 'paired_high', 'run_halfwidth', 'seeds')


def weights(run: Run, work_dir: str) -> str:
    """The weights the study kept for ``run``."""
    if run.method == 'init':
        path = osp.join(work_dir, 'init.pth')
    else:
        path = latest_checkpoint(work_dir)
    if not path or not osp.isfile(path):
        raise SystemExit(f'error: no kept weights of {run.name} in '
                         f'{work_dir}: run `run.py --preset ...` first')
    return path


def evaluate_design(run: Run, preset: Preset, work_root: str, size: int,
                    bank: int, data) -> Dict:
    """{figure: (mIoU, low, high)} and per-image areas of one encoder in
    one design, from the cache in its work_dir when there."""
    work_dir = osp.join(work_root, run.name)
    cache = osp.join(work_dir, f'instrument_s{size}_b{bank}')
    if osp.isfile(cache + '.json'):
        with open(cache + '.json') as f:
            return dict(figures=json.load(f), areas=load_areas(cache + '.pt'))
    cfg = run_config(run, preset, work_dir)
    model = build_model(cfg, weights(run, work_dir))
    results = dense_eval(
        model, data, preset.dense_blocks, preset.dense_folds,
        temperatures=preset.dense_temperatures, bank_copies=bank,
        linear=bank == 0, linear_epochs=preset.linear_epochs,
        bootstrap=preset.dense_bootstrap, keep_areas=True)
    figures = {k: [r['miou'], r['low'], r['high']]
               for k, r in results.items()}
    save_areas(cache + '.pt', results)
    with atomic_path(cache + '.json') as partial, open(partial, 'w') as f:
        json.dump(figures, f)
    return dict(figures=figures, areas={k: r['areas']
                                        for k, r in results.items()})


def design_rows(found: Dict[str, Dict], runs: List[Run], size: int,
                bank: int, bootstrap: int) -> List[Dict]:
    """The check's rows of one design: per figure and learner."""
    inits = [r for r in runs if r.method == 'init']
    rows = []
    for figure in found[inits[0].name]['figures']:
        def values(arm):
            return [found[r.name]['figures'][figure][0] for r in arm]

        for learner in sorted({r.learner for r in runs
                               if r.method == 'baseline'}):
            xs = [r for r in runs
                  if r.method == 'baseline' and r.learner == learner]
            x, init = values(xs), values(inits)
            pooled = ((stdev(x)**2 + stdev(init)**2) / 2)**0.5
            paired = paired_bootstrap(
                [found[r.name]['areas'][figure] for r in xs],
                [found[r.name]['areas'][figure] for r in inits], bootstrap)
            rows.append(dict(
                size=size, bank_copies=bank, figure=figure, learner=learner,
                x_mean=mean(x), x_std=stdev(x), init_mean=mean(init),
                init_std=stdev(init),
                resolution=abs(mean(x) - mean(init)) / pooled,
                paired_diff=paired['diff'], paired_low=paired['low'],
                paired_high=paired['high'],
                run_halfwidth=mean((found[r.name]['figures'][figure][2] -
                                    found[r.name]['figures'][figure][1]) / 2
                                   for r in [*xs, *inits]),
                seeds=len(x)))
    return rows


def choose(rows: List[Dict]) -> Dict:
    """The design (size, bank copies, figure) resolving the most learners,
    then with the largest smaller resolution, then the narrowest paired
    interval: the rule fixed before any MR-X arm is evaluated."""
    designs: Dict[tuple, List[Dict]] = {}
    for row in rows:
        designs.setdefault((row['size'], row['bank_copies'], row['figure']),
                           []).append(row)

    def rank(item):
        found = item[1]
        return (sum(r['resolution'] >= RESOLVED for r in found),
                min(r['resolution'] for r in found),
                -max(r['paired_high'] - r['paired_low'] for r in found))

    (size, bank, figure), found = max(designs.items(), key=rank)
    return dict(size=size, bank_copies=bank, figure=figure,
                resolutions={r['learner']: r['resolution'] for r in found})


def markdown(rows: List[Dict], choice: Dict) -> str:
    """Resolution per figure (rows) and design (columns), then the chosen
    design's figures per learner."""
    learners = sorted({r['learner'] for r in rows})
    designs = sorted({(r['size'], r['bank_copies']) for r in rows})
    figures = list(dict.fromkeys(r['figure'] for r in rows))
    cell = {(r['size'], r['bank_copies'], r['figure'], r['learner']):
            r['resolution'] for r in rows}
    lines = [f'|X - init| / pooled seed std ({" / ".join(learners)}); '
             f'resolved: >= {RESOLVED:g} for every learner.', '',
             '| figure | ' + ' | '.join(
                 f'{size} px' + (f', bank x{bank + 1}' if bank else '')
                 for size, bank in designs) + ' |',
             '|---|' + '---|' * len(designs)]
    for figure in figures:
        lines.append(f'| {figure} | ' + ' | '.join(
            ' / '.join(f'{cell[(*d, figure, x)]:.1f}' for x in learners)
            if (*d, figure, learners[0]) in cell else '-'
            for d in designs) + ' |')
    lines += ['', '| learner | X | init | resolution | paired X - init '
              '(95%) | one run ± |', '|---|---|---|---|---|---|']
    for r in rows:
        if (r['size'], r['bank_copies'], r['figure']) == (
                choice['size'], choice['bank_copies'], choice['figure']):
            lines.append(
                f"| {r['learner']} | {r['x_mean']:.2f} ± {r['x_std']:.2f} "
                f"| {r['init_mean']:.2f} ± {r['init_std']:.2f} | "
                f"{r['resolution']:.1f} | {r['paired_diff']:+.2f} "
                f"({r['paired_low']:+.2f}, {r['paired_high']:+.2f}) | "
                f"{r['run_halfwidth']:.2f} |")
    lines += ['', f"Chosen: {choice['size']} px, {choice['bank_copies']} "
              f"bank copies, {choice['figure']} (resolution " +
              ', '.join(f'{k} {v:.1f}' for k, v in
                        choice['resolutions'].items()) + ').']
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='camvid-instrument',
                        choices=sorted(PRESETS))
    parser.add_argument('--work-dir', default='work_dirs/study')
    parser.add_argument('--out', help='the rows as CSV (default: '
                        'work_dirs/study/<preset>-check.csv)')
    parser.add_argument('--sizes', type=int, nargs='+', default=SIZES)
    parser.add_argument('--bank-copies', type=int, nargs='+',
                        default=BANK_COPIES)
    parser.add_argument('--skip', nargs='+', default=[], metavar='SIZExBANK',
                        help='designs left out, e.g. 128x2 (say why in the '
                        'docs: the choice is among the designs measured)')
    args = parser.parse_args()
    skip = set(args.skip)
    for design in skip:
        size, _, bank = design.partition('x')
        if not (size.isdigit() and bank.isdigit()):
            raise SystemExit(f'error: --skip {design}: expected SIZExBANK, '
                             'e.g. 128x2')
    preset = PRESETS[args.preset]
    work_root = osp.join(args.work_dir, preset.name)
    runs = [r for r in planned_runs(preset, [])
            if r.method in ('init', 'baseline')]
    cfg = run_config(runs[0], preset, osp.join(work_root, runs[0].name))
    rows = []
    for size in args.sizes:
        data = load_seg_folder(dense_root(cfg, preset), size,
                               preset.dense_splits)
        for bank in args.bank_copies:
            if f'{size}x{bank}' in skip:
                continue
            found = {}
            for run in runs:
                found[run.name] = evaluate_design(run, preset, work_root,
                                                  size, bank, data)
                print(f'[instrument] {size} px, bank x{bank}: {run.name}',
                      flush=True)
            rows += design_rows(found, runs, size, bank,
                                preset.dense_bootstrap)
    out = args.out or osp.join(args.work_dir, f'{preset.name}-check.csv')
    with atomic_path(out) as partial, open(partial, 'w', newline='') as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows({k: round(v, 3) if isinstance(v, float) else v
                          for k, v in r.items()} for r in rows)
    print(markdown(rows, choose(rows)))
    print(f'[instrument] wrote {out}')


if __name__ == '__main__':
    main()
