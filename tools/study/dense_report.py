"""A dense preset's section of the study report: per arm, the dense
retrieval mIoU (blocks, temperatures), the linear patch probe, the global
kNN and the share of the reconstruction term in its loss; the fine-tuned
readouts (UperNet, a linear head on the frozen encoder) where
tools/study/finetune.py ran; each comparison with its paired and seed
intervals and a verdict where tools/study/compare.py ran; dense learning
curves; pictures where tools/study/pictures.py ran."""
import csv
import json
import os.path as osp
import re
from typing import Dict, List

from curves import arm_curve, gap_verdict, plot_curves
from presets import Preset

from mrcl_plugin.models import learner_name

# tools/study/finetune.py's readouts, as the report names them
READOUT_NAMES = dict(upernet='UperNet', linear='linear head (frozen)')
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


def picture_file(name: str) -> str:
    """The PNG of an arm's picture (tools/study/pictures.py):
    'MR-SimCLR (alpha = 1, lambda = 1)' -> 'mr_simclr_alpha_1_lambda_1.png',
    one file per arm."""
    return re.sub(r'[^a-z0-9.]+', '_', name.lower()).strip('_') + '.png'


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


def beside(csv_path: str, suffix: str) -> List[Dict]:
    """The rows of ``<csv stem>-<suffix>.csv`` (a readout's or the
    comparisons'), none where it is not there."""
    path = f'{osp.splitext(csv_path)[0]}-{suffix}.csv'
    if not osp.isfile(path):
        return []
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def dense_section(rows: List[Dict], preset: Preset, csv_path: str,
                  out_md: str, fig_dir: str, rel: str, stat) -> List[str]:
    """The section's Markdown lines (``stat`` is report.py's), and
    ``<preset>_dense_curves.png`` in ``fig_dir``."""
    by_arm = arms(rows, preset)
    metrics = dense_metrics(rows)
    columns = ['rec_share', 'knn_top1', *metrics]
    stats = {name: {m: stat([figures(r) for r in found], m)
                    for m in columns} for name, found in by_arm.items()}
    return (_setup(rows, preset, csv_path, out_md) +
            _arm_table(rows, stats, columns, metrics) +
            _readouts(csv_path, by_arm, preset, stat) +
            _comparisons(csv_path, preset) +
            _curves(by_arm, stats, metrics, preset, fig_dir, rel) +
            _pictures(by_arm, preset, fig_dir, rel) +
            _every_run(rows, columns))


def _setup(rows, preset, csv_path, out_md) -> List[str]:
    total = sum(r['wall_s'] for r in rows)
    splits = ' + '.join(preset.dense_splits)
    return [
        f'## Dense features on `{preset.dense_root}`: does MR-X keep what '
        'dense tasks need?', '',
        f'Preset `{preset.name}`: {len(rows)} runs of {preset.iters} '
        f'iterations at batch {preset.batch_size} on the Tiny-ImageNet '
        'sample (64 px, 8 px patches: `configs/mrcl/mrcl-*_vit-tiny-p8_'
        '1xb64-coslr-300it_tiny-imagenet.py`), seeds '
        f'{sorted({int(r["seed"]) for r in rows})}'
        f'{", CPU bf16 autocast" if preset.bf16 else ""}. Dense evaluation '
        '(`mrcl_plugin/evaluation/dense.py`, [dense](dense.md)) of the '
        f'frozen patch tokens on `{preset.dense_root}` ({splits}) at '
        f'{preset.dense_size} px, {preset.dense_folds}-fold: in-context '
        'retrieval (k = 30) and a linear patch probe (0-based block '
        f'indices){f", bank x{preset.dense_bank_copies + 1}" if preset.dense_bank_copies else ""}; '
        'global kNN on the class token as in the sections above.', '',
        *([f'**{preset.note}**', ''] if preset.note else []),
        f'Machine: {rows[0]["machine"]}. Wall time: {total / 60:.0f} min.',
        '', f'Re-run: `python tools/study/run.py --preset {preset.name}`, '
        'the fine-tuned readouts\' commands where they are shown, '
        '`python tools/study/compare.py '
        f'{csv_path}`, then `python tools/study/report.py {csv_path} '
        f'--out {out_md}`.', '',
        *([preset.rationale, ''] if preset.rationale else [])]


def _arm_table(rows, stats, columns, metrics) -> List[str]:
    widths = [(json.loads(r['dense'])[m]['high'] -
               json.loads(r['dense'])[m]['low']) / 2
              for r in rows for m in metrics]
    return ['### Per arm', '',
            'Mean ± seed std (n runs). mIoU in %; the bootstrap interval over '
            'query images of one run is ±'
            f'{sum(widths) / len(widths):.2f} points on average (95%, per '
            'run in the CSV). "rec share": the reconstruction terms\' share '
            'of the loss at the last iteration.', '',
            '| arm | ' + ' | '.join(map(label, columns)) + ' |',
            '|---|' + '---|' * len(columns),
            *[f'| {name} | ' + ' | '.join(fmt(s[m]) for m in columns) + ' |'
              for name, s in stats.items()], '']


def _readouts(csv_path, by_arm, preset, stat) -> List[str]:
    """Test mIoU of each fine-tuned readout per arm (mean ± seed std)."""
    found = {readout: beside(csv_path, readout)
             for readout in READOUT_NAMES}
    found = {k: v for k, v in found.items() if v}
    if not found:
        return []
    names = {r['name']: name for name, rs in by_arm.items() for r in rs}
    lines = ['### Fine-tuned on CamVid: Table 2 in miniature', '',
             'Test mIoU (%, CamVid\'s 233 test images at full resolution) of '
             'each arm\'s encoder fine-tuned through mmseg '
             '(`tools/study/finetune.py`): UperNet with the whole encoder '
             'trained, and a linear head on the frozen encoder; the '
             'validation split picked the checkpoint. Mean ± seed std.', '',
             *[f'- {READOUT_NAMES[readout]}: {len(rows)} runs of '
               f'{_iters(rows)} iterations, {_minutes(rows)} min on '
               f'{rows[0]["machine"]}: `python tools/study/finetune.py '
               f'--preset {preset.name} --readout {readout} --iters '
               f'{_iters(rows)}`' for readout, rows in found.items()], '',
             '| arm | ' + ' | '.join(READOUT_NAMES[r] for r in found) + ' |',
             '|---|' + '---|' * len(found)]
    for name in by_arm:
        cells = []
        for readout, rows in found.items():
            values = [dict(m=float(r['test_miou'])) for r in rows
                      if names.get(r['name']) == name]
            cells.append(fmt(stat(values, 'm')) if values else 'missing')
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def _iters(rows) -> str:
    return '/'.join(sorted({r['iters'] for r in rows}, key=int))


def _minutes(rows) -> int:
    return round(sum(float(r['wall_s']) for r in rows) / 60)


def _comparisons(csv_path, preset) -> List[str]:
    found = beside(csv_path, 'compare')
    chosen = preset.dense_headline
    others = 0
    if chosen:  # the instrument's figure and the fine-tuned readouts
        kept = [r for r in found if r['figure'] == chosen or
                not r['figure'].startswith(('knn_', 'linear_b'))]
        others, found = len(found) - len(kept), kept
    if not found:
        return ['### Verdicts', '', 'No verdicts: they need the paired '
                'interval of each comparison, from the runs\' per-image '
                f'areas (`python tools/study/compare.py {csv_path}`), which '
                'these runs did not keep.', '']
    lines = ['### Verdicts, at this scale', '',
             'Each cell: the difference of the arms\' means (points), its '
             '95% paired interval (the query images resampled once for '
             'every run of both arms) and its 95% seed interval (t, over '
             'the per-seed differences), n seeds; **above** or **below** '
             'only where both intervals exclude 0.', '',
             *([f'The dense figure is the one the instrument check chose '
                f'before any MR-X arm was trained ({label(chosen)}, '
                '[dense](dense.md#the-instrument-on-camvid)); the '
                f'{others} rows of the other dense figures are in '
                f'`{osp.splitext(csv_path)[0]}-compare.csv`.', '']
               if chosen else []),
             '| arm - reference | figure | difference | paired | seeds | '
             'verdict |', '|---|---|---|---|---|---|']
    for r in found:
        word = r['verdict'] if r['verdict'] == 'within' else \
            f'**{r["verdict"]}**'
        lines.append(
            f"| {r['arm']} - {r['reference']} | {label(r['figure'])} | "
            f"{float(r['diff']):+.2f} | ({float(r['paired_low']):+.2f}, "
            f"{float(r['paired_high']):+.2f}) | ({float(r['seed_low']):+.2f}"
            f", {float(r['seed_high']):+.2f}), n={r['seeds']} | {word} |")
    return lines + ['']


def _curves(by_arm, stats, metrics, preset, fig_dir, rel) -> List[str]:
    figure = next((m for m in reversed(metrics) if m.startswith('knn')),
                  metrics[-1])
    curves = {name: arm_curve([[(int(step), d[f'dense/{figure}'])
                                for step, d in json.loads(r['dense_curve'])
                                if f'dense/{figure}' in d]
                               for r in found if r['dense_curve']])
              for name, found in by_arm.items() if name != 'random init'}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return []
    png = f'{preset.name}_dense_curves.png'
    plot_curves([(f'dense {label(figure)}', {
        name: (color, curve) for (name, curve), color in zip(
            curves.items(), ARM_COLORS)})],
        stats.get('random init', {}).get(figure, (None, ))[0],
        osp.join(fig_dir, png), ylabel='mIoU (%)')
    lines = ['### Dense learning curves', '',
             f'Dense retrieval mIoU ({label(figure)}) at each curve point '
             f'(the same images, {preset.dense_folds} folds, no bootstrap), '
             'mean over seeds, band ±1 std; dotted: the random init.', '',
             f'![dense learning curves]({rel}/{png})', '']
    for name, curve in curves.items():
        ref = next((r for r in ('random init', ) if r in curves), None)
        if ref:
            lines.append(f'- {name} against {ref} over time: '
                         f'{gap_verdict(curves[ref], curve)}.')
    return lines + ['']


def _pictures(by_arm, preset, fig_dir, rel) -> List[str]:
    folder = osp.join(fig_dir, f'{preset.name}_pictures')
    if not osp.isdir(folder):
        return []
    retrieval = (f'retrieval prediction ({label(preset.dense_headline)})'
                 if preset.dense_headline else 'retrieval prediction')
    lines = ['### Pictures', '',
             'Six CamVid test images, one picture an arm (its seed-0 run, '
             '`tools/study/pictures.py`): the image, the ground truth, the '
             f'{retrieval}, the UperNet prediction where '
             'tools/study/finetune.py ran, and the first three principal '
             'components of the patch tokens as colours (the centre square '
             'at the evaluation size).', '']
    for name in by_arm:
        png = picture_file(name)
        if osp.isfile(osp.join(folder, png)):
            lines += [f'**{name}**', '',
                      f'![{name}]({rel}/{preset.name}_pictures/{png})', '']
    return lines


def _every_run(rows, columns) -> List[str]:
    return ['### Every run', '',
            '| run | seed | ' + ' | '.join(map(label, columns)) + ' | wall s |',
            '|---|---|' + '---|' * (len(columns) + 1),
            *[f'| {r["name"]} | {int(r["seed"])} | ' + ' | '.join(
                f'{figures(r)[m]:.2f}' for m in columns) +
              f' | {r["wall_s"]:.0f} |' for r in rows]]
