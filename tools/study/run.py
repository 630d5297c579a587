"""Run a study preset: short pretraining runs of a small ViT on the real
CIFAR-10 sample, each evaluated with kNN and a linear probe, one CSV row per
finished run. Stop it any time: started again, it skips finished runs (and
a preset with learning curves resumes a killed run from its last
checkpoint). ``--plan`` measures the costs here and prints the budget of
the runs to go instead of running them.

    python tools/study/run.py --preset cifar10-cpu [--csv work_dirs/study/cifar10-cpu.csv]
    python tools/study/run.py --preset cifar10-long --plan
    python tools/study/report.py work_dirs/study/cifar10-cpu.csv --out docs/study.md
"""
import argparse
import os.path as osp
import sys
from dataclasses import replace

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from presets import PRESETS  # noqa: E402
from runner import StudyCSVError, read_rows, run_study  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), required=True)
    parser.add_argument('--csv', help='results file (default: '
                        'work_dirs/study/<preset>.csv)')
    parser.add_argument('--work-dir', default='work_dirs/study',
                        help='where each run logs')
    parser.add_argument('--max-runs', type=int, default=None,
                        help='stop after this many new runs')
    parser.add_argument('--plan', action='store_true',
                        help='measure the step, curve-point and evaluation '
                        'times and print the budget of the runs to go')
    parser.add_argument('--plan-iters', type=int, default=20,
                        help='timed iterations per arm for --plan')
    parser.add_argument('--num-workers', type=int, help='data loader '
                        "workers (default the preset's): --plan with each "
                        'number measures what they pay here')
    args = parser.parse_args()
    csv = args.csv or osp.join(args.work_dir, f'{args.preset}.csv')
    preset = PRESETS[args.preset]
    if args.num_workers is not None:
        preset = replace(preset, num_workers=args.num_workers)
    try:
        if args.plan:
            from budget import plan
            plan(preset, read_rows(csv, preset.name), args.plan_iters)
        else:
            run_study(preset, csv, osp.join(args.work_dir, args.preset),
                      args.max_runs)
    except StudyCSVError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
