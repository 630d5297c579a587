"""Write the study report from a study CSV: Markdown with plots in the
style of the paper's Figs. 3-5, saying claim by claim whether it held at
this scale.

    python tools/study/report.py work_dirs/study/cifar10-cpu.csv --out docs/study.md
"""
import argparse
import os
import os.path as osp
import sys
from statistics import mean, stdev
from typing import Dict, List, Tuple

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # its siblings
from curves import (Stat, arm_curve, gap_verdict, parse_curve,  # noqa: E402
                    plot_curves)
from dense_report import dense_section  # noqa: E402
from presets import PRESETS  # noqa: E402

from mrcl_plugin.models import learner_name  # noqa: E402
from runner import StudyCSVError, read_rows  # noqa: E402

METRICS = (('knn_top1', 'kNN top-1'), ('linear_top1', 'linear top-1'))


def stat(rows: List[Dict], metric: str) -> Stat:
    values = [r[metric] for r in rows]
    return (mean(values), stdev(values) if len(values) > 1 else 0.,
            len(values))


def fmt(s: Stat) -> str:
    return f'{s[0]:.1f} ± {s[1]:.1f} (n={s[2]})' if s[2] > 1 else \
        f'{s[0]:.1f} (n=1)'


def select(rows, **params) -> List[Dict]:
    return [r for r in rows if all(r[k] == v for k, v in params.items())]


def sweep(rows, preset, key: str, values) -> List[Tuple[float, Dict]]:
    """(x, {metric: Stat}) of MR-<sweep learner> along one axis, the other
    parameters at the preset's defaults (all seeds at each point)."""
    base = preset.mr_defaults(preset.sweep_learner)
    alpha = base['alpha']
    points = []
    for x in values:
        params = dict(base)
        if key == 'balance':
            params['lambd'] = alpha / x
        elif key == 'weight':
            params.update(alpha=x, lambd=x)
        else:
            params[key] = x
        found = select(rows, **params)
        if found:
            points.append((x, {m: stat(found, m) for m, _ in METRICS}))
    return points


def plot(points, name: str, baseline: Dict, init: Dict, xlabel: str,
         title: str, path: str, log_x: bool) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, (metric, label) in zip(axes, METRICS):
        xs = [x for x, _ in points]
        ax.errorbar(xs, [p[metric][0] for _, p in points],
                    yerr=[p[metric][1] for _, p in points], marker='o',
                    capsize=3, color='tab:blue', label=f'MR-{name}')
        if metric in baseline:
            m, s, n = baseline[metric]
            ax.axhline(m, color='tab:red', linestyle='--',
                       label=f'{name} (n={n})')
            ax.axhspan(m - s, m + s, color='tab:red', alpha=0.1)
        if metric in init:
            ax.axhline(init[metric][0], color='gray', linestyle=':',
                       label=f'random init (n={init[metric][2]})')
        if log_x and min(xs) > 0:
            ax.set_xscale('log')
        elif log_x:  # a 0 on a log axis: linear up to the smallest x > 0
            ax.set_xscale('symlog', linthresh=min(x for x in xs if x > 0))
            ax.set_xlim(left=0)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f'{label} (%)')
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def beats(mr: Stat, base: Stat) -> Tuple[bool, str]:
    diff, spread = mr[0] - base[0], max(mr[1], base[1])
    return diff > spread, f'{diff:+.1f} points (seed spread {spread:.1f})'


def peak_verdict(points, metric: str, spread: float) -> str:
    """Where the curve peaks, and how far each end falls below the peak:
    both ends by more than the seed spread is a reversed U, one end a
    threshold on that side only."""
    if len(points) < 3:
        return 'too few points to tell'
    values = [(p[metric][0], x) for x, p in points]
    best, best_x = max(values)
    low, high = best - values[0][0], best - values[-1][0]
    shape = {
        (True, True): 'a reversed U',
        (False, True): 'falls off at the high end only',
        (True, False): 'falls off at the low end only',
        (False, False): 'flat within the seed spread',
    }[(low > spread, high > spread)]
    return (f'best at {best_x:g} ({best:.1f}); the lowest setting '
            f'({points[0][0]:g}) {low:.1f} below it, the highest '
            f'({points[-1][0]:g}) {high:.1f} below: {shape}')


def precision_check(checks: List[Dict], rows: List[Dict],
                    spread: float) -> List[str]:
    """Each run trained again in the other precision, same seed: the
    difference in accuracy against the seed spread, and the training
    times."""
    by_name = {r['name']: r for r in rows}
    lines = []
    for check in checks:
        name = check['name'].rsplit('_', 1)[0]
        if name not in by_name:
            continue
        ref = by_name[name]
        lines += [
            '', f'## {ref["precision"]} against {check["precision"]}', '',
            f'`{name}` trained again in {check["precision"]}, same seed: '
            + ', '.join(
                f'{label} {ref[m]:.1f} ({ref["precision"]}) against '
                f'{check[m]:.1f} ({check["precision"]}), '
                f'{ref[m] - check[m]:+.1f}' for m, label in METRICS) +
            f' points (headline seed spread {spread:.1f}); training '
            f'{ref["train_s"]:.0f} s against {check["train_s"]:.0f} s '
            f'({check["train_s"] / ref["train_s"]:.2f}x).'
        ]
    return lines


def curve_section(rows, preset, fig_dir: str, rel: str,
                  h: str) -> Tuple[List[str], List[str]]:
    """The learning-curve figure, the data it plots (``curves.csv``
    beside it, and a table), and the verdicts over time: (lines, claims)."""
    trained = [r for r in rows if r['knn_curve']]
    if not trained:
        return [], []
    starts = [parse_curve(r['knn_curve'])[0] for r in trained]
    init = mean(top1 for step, top1 in starts if step == 0)
    panels, table, claims = [], {}, []
    for learner in preset.headline_learners:
        arms = {}
        for params, label, color in (
                (dict(learner=learner, method='baseline'), learner_name(learner),
                 'tab:red'),
                (preset.mr_defaults(learner), f'MR-{learner_name(learner)}',
                 'tab:blue')):
            found = select(trained, **params)
            if found:
                arms[label] = (color, arm_curve(
                    [parse_curve(r['knn_curve']) for r in found]))
        if not arms:
            continue
        panels.append((learner_name(learner), arms))
        table.update(arms)
        if len(arms) == 2:
            (_, base), (_, mr) = arms.values()
            claims.append(f'- MR-{learner_name(learner)} against {learner_name(learner)} '
                          f'over time (kNN on the curve subset): '
                          f'{gap_verdict(base, mr)}.')
        stopped = [r for r in trained if r['learner'] == learner
                   and r['iters'] < preset.iters]
        if stopped:
            claims.append(
                f'- {learner_name(learner)}: the stall rule stopped '
                + ', '.join(f'`{r["name"]}` at iteration {r["iters"]:.0f}'
                            for r in stopped) + ': X no farther above '
                'its iteration-0 point than the stall margin there, and its '
                'MR-X stopped with it (the same budget for both arms); seeds '
                'after the first seed at which both stopped were not run. '
                f'Table 1\'s {learner_name(learner)} cells average these stopped '
                'runs with the full ones, the same seeds in both arms.')
    plot_curves(panels, init, osp.join(fig_dir, 'learning_curves.png'))
    with open(osp.join(fig_dir, 'curves.csv'), 'w') as f:
        f.write('arm,iteration,mean,std,runs\n')
        f.writelines(f'{label},{step},{m:.4g},{s:.4g},{n}\n'
                     for label, (_, arm) in table.items()
                     for step, (m, s, n) in arm.items())
    steps = sorted({s for _, arm in table.values() for s in arm})
    lines = [
        '', f'{h}# Learning curves', '',
        f'kNN top-1 every {preset.curve_interval} iterations on the first '
        f'{preset.curve_bank_per_class} train (bank) and '
        f'{preset.curve_query_per_class} test images (queries) of each '
        'class, the same images for every run and point: mean over seeds '
        '(n runs), band +-1 std; dotted: the random init (mean of every '
        f'run\'s iteration-0 point, {init:.1f}). The plotted data: '
        f'`{rel}/curves.csv`.', '',
        f'![Learning curves]({rel}/learning_curves.png)', '',
        '| iteration | ' + ' | '.join(table) + ' |',
        '|---|' + '---|' * len(table)
    ]
    lines += [f'| {step} | ' + ' | '.join(
        fmt(arm[step]) if step in arm else '' for _, arm in table.values())
        + ' |' for step in steps]
    return lines, claims


def place_section(name: str, text: str, out_md: str) -> str:
    """The file ``out_md`` with the preset's section (between its
    ``<!-- study:name -->`` markers) replaced by ``text``, or appended;
    the other presets' sections are kept."""
    begin, end = f'<!-- study:{name} -->', f'<!-- /study:{name} -->'
    section = f'{begin}\n{text}{end}\n'
    old = ''
    if osp.isfile(out_md):
        with open(out_md) as f:
            old = f.read()
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        return head + section + rest.split(end, 1)[1].lstrip('\n')
    return old + ('\n' if old else '') + section


def write_report(csv_path: str, out_md: str) -> str:
    """Write the preset's section of ``out_md`` (:func:`place_section`)
    and its PNGs (in ``<out_md stem>/``); return the file's Markdown."""
    preset, every = preset_rows(csv_path)
    # runs in another precision than the preset's are a check of it, kept
    # out of every other statistic
    precision = 'bf16' if preset.bf16 else 'fp32'
    checks = [r for r in every if r['precision'] != precision]
    rows = [r for r in every if r['precision'] == precision]
    fig_dir = osp.splitext(out_md)[0]
    os.makedirs(fig_dir, exist_ok=True)
    rel = osp.basename(fig_dir)
    if preset.dense_root:
        lines = dense_section(rows, preset, csv_path, out_md, fig_dir, rel,
                              stat)
    else:
        # a preset with curves: a section of the 130-iteration report's file
        h = '##' if preset.curve_interval else '#'
        init_rows = select(rows, method='init')
        init = {m: stat(init_rows, m) for m, _ in METRICS} \
            if init_rows else {}
        table, claims = table1(rows, preset, init, h)
        figures, sweep_claims, spread = sweep_figures(rows, preset, init,
                                                      fig_dir, rel, h)
        curve_lines, curve_claims = curve_section(rows, preset, fig_dir, rel,
                                                  h)
        lines = (intro(rows, every, preset, csv_path, out_md, h) + table +
                 figures + curve_lines + precision_check(checks, rows, spread)
                 + closing(claims + sweep_claims + curve_claims, spread,
                           preset, every, h))
    return _write(place_section(preset.name, '\n'.join(lines) + '\n',
                                out_md), out_md)


def preset_rows(csv_path: str) -> Tuple[object, List[Dict]]:
    """The preset of a study CSV and its rows; one preset, one row or more.
    """
    rows = read_rows(csv_path)
    if not rows:
        raise ValueError(f'{csv_path}: no finished runs to report')
    presets = {r['preset'] for r in rows}
    if len(presets) != 1:
        raise ValueError(f'{csv_path}: rows of several presets {presets}')
    return PRESETS[presets.pop()], rows


def intro(rows, every, preset, csv_path: str, out_md: str,
          h: str) -> List[str]:
    """What ran, on what, how to re-run it, and why this budget."""
    total = sum(r['wall_s'] for r in every)
    seeds = sorted({int(r['seed']) for r in rows})
    inits = len(select(rows, method='init'))
    trained = len(rows) - inits
    sweeps = preset.mask_ratios or preset.rec_weights or preset.balances
    return [
        f'{h} Long horizon: does a gap open with training?'
        if preset.curve_interval else
        '# Small-scale study: does masking + reconstruction help?', '',
        f'Preset `{preset.name}`: {trained} runs of '
        f'{preset.iters} iterations at batch {preset.batch_size} each '
        f'(seeds {seeds} for the headline comparison'
        f'{", seed 0 for sweep points" if sweeps else ""})'
        f'{" under CPU bf16 autocast" if preset.bf16 else ""}, and '
        f'{inits} random inits evaluated untrained; the small ViT '
        'of `configs/mrcl/mrcl-*_vit-tiny-p4_1xb64-coslr-300it_cifar10.py` '
        'on the real CIFAR-10 sample. kNN: k=20, T=0.07, '
        f'{int(rows[0]["knn_bank"])} bank and '
        f'{int(rows[0]["knn_queries"])} test images; linear: softmax '
        'regression on the frozen class tokens of the same images.', '',
        f'Machine: {rows[0]["machine"]}. Wall time: {total / 60:.0f} min in '
        f'all, {min(r["wall_s"] for r in rows):.0f}-'
        f'{max(r["wall_s"] for r in rows):.0f} s per run.', '',
        f'Re-run: `python tools/study/run.py --preset {preset.name}` then '
        f'`python tools/study/report.py {csv_path} --out {out_md}`.', '',
        *([preset.rationale, ''] if preset.rationale else [])]


def table1(rows, preset, init: Dict, h: str) -> Tuple[List[str], List[str]]:
    """Table 1 scaled down, X against MR-X (and each against the random
    init): (lines, claims)."""
    lines = [
        f'{h}# Table 1, scaled down: X vs MR-X', '',
        '| method | ' + ' | '.join(
            f'{label} X | {label} MR-X | MR-X - X'
            for _, label in METRICS) + ' |',
        '|---|' + '---|' * 3 * len(METRICS)
    ]
    claims = []
    if init:
        lines.append('| random init | ' + ' | '.join(
            f'{fmt(init[m])} | | ' for m, _ in METRICS) + ' |')
    for learner in preset.headline_learners:
        base = select(rows, learner=learner, method='baseline')
        mr = select(rows, **preset.mr_defaults(learner))
        if not base or not mr:
            lines.append(f'| {learner_name(learner)} | missing |' + ' |' *
                         (3 * len(METRICS) - 1))
            continue
        cells = []
        for metric, label in METRICS:
            b, m = stat(base, metric), stat(mr, metric)
            held, how = beats(m, b)
            cells += [fmt(b), fmt(m), how]
            claims.append(f'- MR-{learner_name(learner)} beats {learner_name(learner)} '
                          f'({label}): **{"held" if held else "did not hold"}'
                          f'**, {how}.')
        lines.append(f'| {learner_name(learner)} | ' + ' | '.join(cells) + ' |')
        if init:
            metric, label = METRICS[0]
            for name, found in ((learner_name(learner), base),
                                (f'MR-{learner_name(learner)}', mr)):
                held, how = beats(stat(found, metric), init[metric])
                claims.append(
                    f'- {name} beats its random init ({label}): '
                    f'**{"held" if held else "did not hold"}**, {how}.')
    return lines, claims


def sweep_figures(rows, preset, init: Dict, fig_dir: str, rel: str,
                  h: str) -> Tuple[List[str], List[str], float]:
    """Figs. 3-5 scaled down, each a plot and a table: (lines, claims, the
    seed spread that resolves them)."""
    # the sweeps' reference: their learner's baseline; their resolution:
    # the larger seed spread of its baseline and of its MR default
    name = learner_name(preset.sweep_learner)
    base_rows = select(rows, learner=preset.sweep_learner, method='baseline')
    mr_rows = select(rows, **preset.mr_defaults(preset.sweep_learner))
    baseline = {m: stat(base_rows, m) for m, _ in METRICS} \
        if base_rows else {}
    spread = max([stat(found, m)[1] for found in (base_rows, mr_rows)
                  if found for m, _ in METRICS] + [0.])
    figures = (
        ('mask_ratio', preset.mask_ratios, 'mask ratio r',
         'Fig. 3: mask ratio', False),
        ('weight', preset.rec_weights, 'alpha = lambda',
         'Fig. 4: reconstruction weight', True),
        ('balance', preset.balances, 'alpha / lambda',
         'Fig. 5: masked vs unmasked weight', True),
    )
    lines, claims = [], []
    for key, values, xlabel, title, log_x in figures:
        points = sweep(rows, preset, key, values)
        if not points:
            continue
        png = f'{key}.png'
        plot(points, name, baseline, init, xlabel, title,
             osp.join(fig_dir, png), log_x)
        lines += ['', f'{h}# {title}', '',
                  f'MR-{name}, one seed per point (the default point: all '
                  f'seeds); dashed: {name}, dotted: random init.', '',
                  f'![{title}]({rel}/{png})', '',
                  f'| {xlabel} | ' + ' | '.join(l for _, l in METRICS) + ' |',
                  '|---|' + '---|' * len(METRICS)]
        lines += [f'| {x:g} | ' + ' | '.join(fmt(p[m]) for m, _ in METRICS)
                  + ' |' for x, p in points]
        for metric, label in METRICS:
            claims.append(f'- {title} ({label}): '
                          f'{peak_verdict(points, metric, spread)}.')
    return lines, claims, spread


def closing(claims: List[str], spread: float, preset, every,
            h: str) -> List[str]:
    """The claims, what "held" means, and every run's row."""
    sweeps = preset.mask_ratios or preset.rec_weights or preset.balances
    lines = ['', f'{h}# Claims, at this scale', '', *claims, '',
             '"Held" means the mean difference exceeds the larger of the two '
             'seed standard deviations.' + (
                 ' Sweep points have one seed (the default point has all of '
                 'them): differences between them smaller than the '
                 f'headline seed spread ({spread:.1f} points) are not '
                 'resolved.' if sweeps else ''), '', f'{h}# Every run', '',
             'Losses are those of the last iteration: the contrastive '
             'term, and the masked and unmasked reconstruction terms with '
             'their weights alpha and lambda applied.', '',
             '| run | seed | precision | iterations | kNN | linear | '
             'contrastive | masked | unmasked | train s | wall s |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    return lines + [
        f'| {r["name"]} | {int(r["seed"])} | {r["precision"]} | '
        f'{int(r["iters"])} | '
        f'{r["knn_top1"]:.1f} | {r["linear_top1"]:.1f} | '
        f'{r["loss_contrastive"]:.3g} | {r["loss_rec_masked"]:.3g} | '
        f'{r["loss_rec_unmasked"]:.3g} | {r["train_s"]:.0f} | '
        f'{r["wall_s"]:.0f} |' for r in every
    ]


def _write(text: str, out_md: str) -> str:
    with open(out_md, 'w') as f:
        f.write(text)
    return text


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
