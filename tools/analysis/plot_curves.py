"""Plot an MRCL pretraining run's losses and kNN top-1 over iterations.

    python tools/analysis/plot_curves.py WORK_DIR --out curves.png
"""
import argparse
import sys

from mrcl_plugin.analysis import plot_curves


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', default='curves.png')
    args = parser.parse_args()
    try:
        curves = plot_curves(args.work_dir, args.out)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    for key, (iters, values) in curves.items():
        print(f'{key}: {len(iters)} points, iterations {iters[0]}-'
              f'{iters[-1]}, last {values[-1]:.4g}')
    print(f'curves written to {args.out}')


if __name__ == '__main__':
    main()
