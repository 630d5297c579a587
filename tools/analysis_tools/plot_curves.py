"""Plot an MRCL pretraining run's losses and kNN top-1 over iterations.

    python tools/analysis_tools/plot_curves.py WORK_DIR --out curves.png

MRCL's three losses and the kNN top-1 (``knn/top1``, logged by the kNN
hook) of a work_dir, over iterations.
"""
import argparse
import os.path as osp
import sys
from pathlib import Path
from typing import Dict, List, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from work_dir import read_scalars  # noqa: E402

LOSSES = ('loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked')
KNN = 'knn/top1'
Series = Tuple[List[int], List[float]]


def training_curves(work_dir: Path) -> Dict[str, Series]:
    """``{key: (iterations, values)}`` for each of :data:`LOSSES` and
    :data:`KNN` that the work_dir logged. A resumed run logs again the
    iterations after its last checkpoint: the later value wins."""
    points: Dict[str, Dict[int, float]] = {}
    for record in read_scalars(work_dir):
        # Training lines carry `iter`; validation-time lines only `step`.
        it = record.get('iter', record.get('step'))
        for key in LOSSES + (KNN, ):
            if key in record and it is not None:
                points.setdefault(key, {})[int(it)] = float(record[key])
    return {
        key: (sorted(p), [p[i] for i in sorted(p)])
        for key, p in points.items()
    }


def plot_curves(work_dir: Path, out: Path) -> Dict[str, Series]:
    """Draw the losses (log scale: the contrastive loss is orders above the
    reconstruction terms) and the kNN top-1 in two panels into the PNG
    ``out``.

    Returns:
        dict: the series drawn, as :func:`training_curves` gives them.

    Raises:
        ValueError: the work_dir logged none of :data:`LOSSES`.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    curves = training_curves(work_dir)
    losses = [k for k in LOSSES if k in curves]
    if not losses:
        raise ValueError(f'{work_dir}: no {", ".join(LOSSES)} logged: not '
                         'an MRCL pretraining work_dir')
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, constrained_layout=True)
    for key in losses:
        top.plot(*curves[key], label=key)
    top.set_yscale('log')
    top.set_ylabel('loss')
    top.legend()
    absent = [k for k in LOSSES if k not in curves]
    top.set_title(f'{Path(work_dir).resolve().name}' +
                  (f' (not logged: {", ".join(absent)})' if absent else ''))
    if KNN in curves:
        bottom.plot(*curves[KNN], marker='o', color='black')
    else:
        bottom.text(0.5, 0.5, f'no {KNN} logged in this work_dir\n'
                    '(add the kNN hook to the config to see it)',
                    ha='center', va='center', transform=bottom.transAxes)
    bottom.set_ylabel(f'{KNN} (%)')
    bottom.set_xlabel('iteration')
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {k: curves[k] for k in losses + [KNN] if k in curves}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dir')
    parser.add_argument('--out', default='curves.png')
    args = parser.parse_args()
    try:
        curves = plot_curves(args.work_dir, args.out)
    except (OSError, ValueError) as e:  # a path to no work_dir, no losses
        sys.exit(f'error: {e}')
    for key, (iters, values) in curves.items():
        print(f'{key}: {len(iters)} points, iterations {iters[0]}-'
              f'{iters[-1]}, last {values[-1]:.4g}')
    print(f'curves written to {args.out}')


if __name__ == '__main__':
    main()
