"""Print the paper's Tables 1 and 2 (Markdown) with our runs' numbers.

    python tools/analysis/results.py WORK_DIR [WORK_DIR ...] [--out FILE]

Each argument is an mmengine work_dir (pretraining, linear probe, ADE20K or
COCO run) or a folder with work_dirs below it, such as ``work_dirs/``.
"""
import argparse
import sys

from mrcl_plugin.analysis import collect_runs, render_tables


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--out', help='also write the Markdown here')
    args = parser.parse_args()
    try:
        text = render_tables(collect_runs(args.work_dirs))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(text, end='')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
