"""The dense preset's section of the study report: per arm, the dense k-NN
mIoU (two blocks, two temperatures), the linear patch probe and the global
kNN, the share of the reconstruction term in each arm's loss, dense
learning curves, and MR-X against X on each figure."""
import json
import os.path as osp
from typing import Dict, List, Tuple

from curves import arm_curve, gap_verdict, plot_curves
from presets import Preset

from mrcl_plugin.models import learner_name

ARM_COLORS = ('tab:red', 'tab:blue', 'tab:purple', 'tab:green', 'tab:orange',
              'tab:brown')


def arm_name(row: Dict, preset: Preset) -> str:
    """'SimCLR', 'MR-SimCLR', 'MR-SimCLR (alpha = lambda = 1)',
    'reconstruction alone (r = 0.2, alpha = lambda = 1)', 'random init'."""
    if row['method'] == 'init':
        return 'random init'
    name = learner_name(row['learner'])
    if row['method'] == 'baseline':
        return name
    if row['contrastive_weight'] == 0:
        return (f'reconstruction alone (r = {row["mask_ratio"]:g}, alpha = '
                f'{row["alpha"]:g}, lambda = {row["lambd"]:g})')
    default = preset.mr_defaults(row['learner'])
    if all(row[k] == default[k] for k in ('mask_ratio', 'alpha', 'lambd')):
        return f'MR-{name}'
    return f'MR-{name} (alpha = {row["alpha"]:g}, lambda = {row["lambd"]:g})'


def rec_share(row: Dict) -> float:
    """The reconstruction terms' share (%) of the run's loss at its last
    iteration."""
    rec = row['loss_rec_masked'] + row['loss_rec_unmasked']
    total = rec + row['loss_contrastive']
    return 100 * rec / total if total else 0.


def dense_metrics(rows: List[Dict]) -> List[str]:
    """The dense figures' keys, mid block first: knn_b{b}_t{T}, linear_b{b}."""
    keys = json.loads(rows[0]['dense'])
    return sorted(keys, key=lambda k: (int(k.split('_b')[1].split('_')[0]),
                                       not k.startswith('knn'), k))


def label(metric: str) -> str:
    """'knn_b5_t0.02' -> 'kNN b5 T=0.02', 'linear_b5' -> 'linear b5'."""
    return dict(rec_share='rec share %', knn_top1='global kNN').get(
        metric, metric.replace('knn_', 'kNN ').replace('linear_', 'linear ')
        .replace('_t', ' T='))


def fmt(s) -> str:
    """mean ± std (n), two decimals: dense mIoUs are a few points."""
    return f'{s[0]:.2f} ± {s[1]:.2f} (n={s[2]})' if s[2] > 1 else \
        f'{s[0]:.2f} (n=1)'


def figures(row: Dict) -> Dict[str, float]:
    """{metric: value} of a run: its dense mIoUs, global kNN, share."""
    dense = {k: v['miou'] for k, v in json.loads(row['dense']).items()}
    return dict(dense, knn_top1=row['knn_top1'], rec_share=rec_share(row))


def arms(rows: List[Dict], preset: Preset) -> Dict[str, List[Dict]]:
    found: Dict[str, List[Dict]] = {}
    for row in rows:
        found.setdefault(arm_name(row, preset), []).append(row)
    return found


def comparisons(by_arm: Dict[str, List[Dict]],
                preset: Preset) -> List[Tuple[str, str]]:
    """(arm, reference) pairs: each MR arm and reconstruction alone against
    X of its learner; reconstruction alone against the random init too."""
    pairs = []
    for name in by_arm:
        row = by_arm[name][0]
        if row['method'] == 'mrcl':
            base = learner_name(row['learner'])
            if base in by_arm:
                pairs.append((name, base))
            if row['contrastive_weight'] == 0 and 'random init' in by_arm:
                pairs.append((name, 'random init'))
    return pairs


def dense_section(rows: List[Dict], preset: Preset, csv_path: str,
                  out_md: str, fig_dir: str, rel: str, stat) -> List[str]:
    """The section's Markdown lines (``stat`` is report.py's), and
    ``dense_curves.png`` in ``fig_dir``."""
    by_arm = arms(rows, preset)
    metrics = dense_metrics(rows)
    columns = ['rec_share', 'knn_top1', *metrics]
    stats = {name: {m: stat([figures(r) for r in found], m)
                    for m in columns} for name, found in by_arm.items()}
    total = sum(r['wall_s'] for r in rows)
    widths = [(json.loads(r['dense'])[m]['high'] -
               json.loads(r['dense'])[m]['low']) / 2
              for r in rows for m in metrics]
    lines = [
        '## Dense features: does MR-X keep what dense tasks need?', '',
        f'Preset `{preset.name}`: {len(rows)} runs of {preset.iters} '
        f'iterations at batch {preset.batch_size} on the Tiny-ImageNet '
        'sample (64 px, 8 px patches: `configs/mrcl/mrcl-*_vit-tiny-p8_'
        '1xb64-coslr-300it_tiny-imagenet.py`), seeds '
        f'{sorted({int(r["seed"]) for r in rows})}'
        f'{", CPU bf16 autocast" if preset.bf16 else ""}. Dense evaluation '
        '(`mrcl_plugin/evaluation/dense.py`, [dense](dense.md)) of the '
        f'frozen patch tokens on `{preset.dense_root}` (200 COCO images, '
        f'133 classes) at {preset.dense_size} px, {preset.dense_folds}-fold: '
        'in-context retrieval (k = 30) at two temperatures and a linear '
        'patch probe, on the middle block and the last (0-based block '
        'indices); global kNN on the class token as in the sections above.',
        '', f'Machine: {rows[0]["machine"]}. Wall time: {total / 60:.0f} min.',
        '', f'Re-run: `python tools/study/run.py --preset {preset.name}` then '
        f'`python tools/study/report.py {csv_path} --out {out_md}`.', '',
        *([preset.rationale, ''] if preset.rationale else []),
        '### Per arm', '',
        'Mean ± seed std (n runs). mIoU in %; the bootstrap interval over '
        'query images of one run is ±'
        f'{sum(widths) / len(widths):.2f} points on average (95%, per run in '
        'the CSV). "rec share": the reconstruction terms\' share of the '
        'loss at the last iteration.', '',
        '| arm | ' + ' | '.join(map(label, columns)) + ' |',
        '|---|' + '---|' * len(columns)]
    lines += [f'| {name} | ' + ' | '.join(fmt(s[m]) for m in columns) + ' |'
              for name, s in stats.items()]
    compared = metrics + ['knn_top1']
    table = ['| arm - reference | ' + ' | '.join(map(label, compared)) +
             ' |', '|---|' + '---|' * len(compared)]
    claims = []
    for arm, ref in comparisons(by_arm, preset):
        cells = []
        for m in compared:
            diff = stats[arm][m][0] - stats[ref][m][0]
            spread = max(stats[arm][m][1], stats[ref][m][1])
            word = ('**above**' if diff > spread else
                    '**below**' if -diff > spread else 'within')
            cells.append(f'{diff:+.2f} ({spread:.2f}) {word}')
        table.append(f'| {arm} - {ref} | ' + ' | '.join(cells) + ' |')
    curves = {name: arm_curve([[(int(step), d[f'dense/{metrics[-2]}'])
                                for step, d in json.loads(r['dense_curve'])]
                               for r in found if r['dense_curve']])
              for name, found in by_arm.items() if name != 'random init'}
    curves = {k: v for k, v in curves.items() if v}
    if curves:
        plot_curves([(f'dense {label(metrics[-2])}', {
            name: (color, curve) for (name, curve), color in zip(
                curves.items(), ARM_COLORS)})],
            stats.get('random init', {}).get(metrics[-2], (None, ))[0],
            osp.join(fig_dir, 'dense_curves.png'), ylabel='mIoU (%)')
        lines += ['', '### Dense learning curves', '',
                  f'Dense kNN mIoU ({label(metrics[-2])}) at each curve '
                  f'point (the same images, {preset.dense_folds} folds, no bootstrap), mean '
                  'over seeds, band ±1 std; dotted: the random init.', '',
                  f'![dense learning curves]({rel}/dense_curves.png)', '']
        for arm, ref in comparisons(by_arm, preset):
            if arm in curves and ref in curves:
                claims.append(f'- {arm} against {ref} over time '
                              f'({label(metrics[-2])}): '
                              f'{gap_verdict(curves[ref], curves[arm])}.')
    lines += ['', '### Verdicts, at this scale', '',
              'Each cell: the difference of the means (points), the larger '
              'of the two seed standard deviations in brackets, and '
              '**above** or **below** where the difference exceeds it.', '',
              *table, '', *claims, '', '### Every run', '',
              '| run | seed | ' + ' | '.join(map(label, columns)) +
              ' | wall s |',
              '|---|---|' + '---|' * (len(columns) + 1)]
    lines += [f'| {r["name"]} | {int(r["seed"])} | ' + ' | '.join(
        f'{figures(r)[m]:.2f}' for m in columns) + f' | {r["wall_s"]:.0f} |'
        for r in rows]
    return lines
