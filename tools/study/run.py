"""Run a study preset: short pretraining runs of a small ViT on the real
CIFAR-10 sample, each evaluated with kNN and a linear probe, one CSV row per
finished run. Stop it any time: started again, it skips finished runs.

    python tools/study/run.py --preset cifar10-cpu [--csv work_dirs/study/cifar10-cpu.csv]
    python tools/study/report.py work_dirs/study/cifar10-cpu.csv --out docs/study.md
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from presets import PRESETS  # noqa: E402
from runner import StudyCSVError, run_study  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), required=True)
    parser.add_argument('--csv', help='results file (default: '
                        'work_dirs/study/<preset>.csv)')
    parser.add_argument('--work-dir', default='work_dirs/study',
                        help='where each run logs')
    parser.add_argument('--max-runs', type=int, default=None,
                        help='stop after this many new runs')
    args = parser.parse_args()
    csv = args.csv or osp.join(args.work_dir, f'{args.preset}.csv')
    try:
        run_study(PRESETS[args.preset], csv,
                  osp.join(args.work_dir, args.preset), args.max_runs)
    except StudyCSVError as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
