"""Write the study report (Markdown + PNG plots) from a study CSV.

    python tools/study/report.py work_dirs/study/cifar10-cpu.csv --out docs/study.md
"""
import argparse
import sys

from mrcl_plugin.study import StudyCSVError, write_report


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('csv')
    parser.add_argument('--out', default='docs/study.md')
    args = parser.parse_args()
    try:
        write_report(args.csv, args.out)
    except (StudyCSVError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(f'report written to {args.out} (plots beside it)')


if __name__ == '__main__':
    main()
