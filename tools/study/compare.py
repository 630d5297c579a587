"""Paired comparisons of a dense study's arms, with both intervals a
verdict needs.

    python tools/study/compare.py docs/study/camvid.csv [--work-dir work_dirs/study]

For each comparison (each MR arm against X of its learner; reconstruction
alone against X and against the random init; X against the random init)
and each figure the runs have (the dense retrieval and linear probe of
``dense_areas.pt``; the UperNet and linear fine-tunes of
``<readout>_areas.pt`` where tools/study/finetune.py ran), over the seeds
both arms have:

- ``paired``: the difference of the arms' means with a 95% interval from
  resampling the query images once for every run of both arms
  (:func:`~mrcl_plugin.evaluation.paired_bootstrap`);
- ``seeds``: the per-seed differences' mean and 95% t interval
  (:func:`~mrcl_plugin.evaluation.seed_interval`);
- n: the seeds at which both arms have the figure;
- the verdict: above / below only where both exclude 0.

The rows go to ``<csv>-compare.csv`` beside the study's CSV, which
report.py reads.
"""
import argparse
import csv
import json
import os.path as osp
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from dense_report import READOUT_NAMES, arm_name  # noqa: E402
from presets import PRESETS, Preset  # noqa: E402
from runner import AREAS, load_areas, read_rows  # noqa: E402

from mrcl_plugin.checkpoints import atomic_path  # noqa: E402
from mrcl_plugin.evaluation import (paired_bootstrap, seed_interval,  # noqa
                                    verdict)
from mrcl_plugin.evaluation.intervals import run_miou  # noqa: E402

COLUMNS = ('arm', 'reference', 'figure', 'seeds', 'images', 'diff',
           'paired_low', 'paired_high', 'seed_low', 'seed_high', 'verdict')


def comparisons(arms: Dict[str, List[Dict]]) -> List[Tuple[str, str]]:
    """(arm, reference): each MR arm against X of its learner,
    reconstruction alone against X and the random init, X against the
    random init."""
    from mrcl_plugin.models import learner_name
    pairs = []
    for name, rows in arms.items():
        row = rows[0]
        base = learner_name(row['learner'])
        if row['method'] == 'mrcl' and base in arms:
            pairs.append((name, base))
        if (row['method'] == 'baseline' or row['contrastive_weight'] == 0
                ) and 'random init' in arms:
            pairs.append((name, 'random init'))
    return pairs


def figures_of(run_dir: str) -> Dict[str, list]:
    """{figure: per fold, (n_f, 3, K) areas} of one run: its dense figures
    and each readout's test (``upernet/test``, ``linear/test``)."""
    found = load_areas(osp.join(run_dir, AREAS)) if osp.isfile(
        osp.join(run_dir, AREAS)) else {}
    for readout in READOUT_NAMES:
        path = osp.join(run_dir, f'{readout}_areas.pt')
        if osp.isfile(path):
            found.update({f'{readout}/{k}': v
                          for k, v in load_areas(path).items()})
    return found


def compare(rows: List[Dict], preset: Preset, work_root: str,
            bootstrap: int = 1000) -> List[Dict]:
    """The comparison rows of a study's CSV rows."""
    arms: Dict[str, List[Dict]] = {}
    for row in rows:
        arms.setdefault(arm_name(row, preset), []).append(row)
    areas = {row['name']: figures_of(osp.join(work_root, row['name']))
             for row in rows}
    out = []
    for arm, ref in comparisons(arms):
        seeds = sorted({int(r['seed']) for r in arms[arm]} &
                       {int(r['seed']) for r in arms[ref]})
        a = [next(r for r in arms[arm] if int(r['seed']) == s) for s in seeds]
        b = [next(r for r in arms[ref] if int(r['seed']) == s) for s in seeds]
        figures = set.union(*(set(areas[r['name']]) for r in a + b))
        for figure in sorted(figures):
            # the seeds at which both arms have the figure (a readout may
            # have been fine-tuned at fewer seeds than the study ran)
            both = [(areas[x['name']][figure], areas[y['name']][figure])
                    for x, y in zip(a, b) if figure in areas[x['name']] and
                    figure in areas[y['name']]]
            if not both:
                continue
            runs_a, runs_b = map(list, zip(*both))
            paired = paired_bootstrap(runs_a, runs_b, bootstrap)
            per_seed = seed_interval([run_miou(x) - run_miou(y)
                                      for x, y in both])
            out.append(dict(
                arm=arm, reference=ref, figure=figure, seeds=len(both),
                images=paired['images'], diff=round(paired['diff'], 3),
                paired_low=round(paired['low'], 3),
                paired_high=round(paired['high'], 3),
                seed_low=round(per_seed['low'], 3),
                seed_high=round(per_seed['high'], 3),
                verdict=verdict(paired, per_seed)))
    return out


def compare_csv(path: str) -> str:
    return osp.splitext(path)[0] + '-compare.csv'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('csv', help="the study's CSV (run.py's)")
    parser.add_argument('--work-dir', default='work_dirs/study',
                        help="run.py's, where each run's areas are")
    parser.add_argument('--bootstrap', type=int, default=1000)
    args = parser.parse_args()
    rows = read_rows(args.csv)
    if not rows:
        raise SystemExit(f'error: {args.csv} has no runs')
    preset = PRESETS[rows[0]['preset']]
    found = compare(rows, preset, osp.join(args.work_dir, preset.name),
                    args.bootstrap)
    out = compare_csv(args.csv)
    with atomic_path(out) as partial, open(partial, 'w', newline='') as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(found)
    print(json.dumps({f'{r["arm"]} - {r["reference"]} {r["figure"]}':
                      r['verdict'] for r in found}, indent=1))
    print(f'[compare] wrote {out}')


if __name__ == '__main__':
    main()
