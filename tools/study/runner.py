"""Train and evaluate the runs of a study preset, one CSV row per finished
run; runs already in the CSV are not trained again."""
import json
import math
import os
import os.path as osp
import sys
import time
import warnings
from typing import Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from curves import CurveHook, format_curve
from presets import PRESETS, Preset, Run

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..',
                            'analysis_tools'))
from machine import machine  # noqa: E402

from mrcl_plugin.checkpoints import atomic_path, latest_checkpoint
from mrcl_plugin.evaluation import (balanced_subset, bank_and_query_features,
                                    dense_eval, knn_top1, load_seg_folder,
                                    split_dataset)

# Config.fromfile imports pkg_resources (for `mmpretrain::`-style bases);
# its deprecation notice is mmengine's, not the study tools', to show (each
# of them imports this module)
warnings.filterwarnings('ignore', 'pkg_resources is deprecated', UserWarning)

LOSSES = ('loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked')
COLUMNS = ('preset', 'name', 'learner', 'method', 'mask_ratio', 'alpha',
           'lambd', 'seed', 'precision', 'iters', 'batch_size', *LOSSES,
           'knn_top1', 'linear_top1', 'knn_bank', 'knn_queries', 'train_s',
           'wall_s', 'machine', 'overrides', 'knn_curve',
           'contrastive_weight', 'dense', 'dense_curve')
# Columns are only ever added at the end: a header that is a prefix of
# COLUMNS down to this one is read, the missing cells at their defaults.
FIRST_COLUMNS = COLUMNS[:COLUMNS.index('overrides') + 1]
DEFAULTS = dict(contrastive_weight='1')
NUMERIC = ('mask_ratio', 'alpha', 'lambd', 'seed', 'iters', 'batch_size',
           *LOSSES, 'knn_top1', 'linear_top1', 'knn_bank', 'knn_queries',
           'train_s', 'wall_s', 'contrastive_weight')


class StudyCSVError(ValueError):
    """A results CSV this tool did not write, or cannot read."""


def read_rows(path: str, preset: Optional[str] = None) -> List[Dict]:
    """The rows of a study CSV, numbers as floats (none if it does not
    exist).

    Raises:
        StudyCSVError: another header, a malformed row, or (with
            ``preset``) rows of another preset; the message names the file
            and the line.
    """
    import csv
    if not osp.isfile(path):
        return []
    with open(path, newline='') as f:
        lines = list(csv.reader(f))
    header = tuple(lines[0]) if lines else ()
    if not (len(header) >= len(FIRST_COLUMNS) and
            header == COLUMNS[:len(header)]):
        got = ','.join(lines[0])[:120] if lines else 'an empty file'
        raise StudyCSVError(
            f'{path}: not a study CSV of this tool (its first line is '
            f'{got!r}; expected {",".join(COLUMNS[:4])},...). Move it away '
            'or pass another --csv; it is left as it is')
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            raise StudyCSVError(
                f'{path}, line {number}: {len(line)} fields, expected '
                f'{len(header)} (a truncated or hand-edited row?)')
        row = {**dict.fromkeys(COLUMNS, ''), **DEFAULTS,
               **dict(zip(header, line))}
        try:
            row.update({k: float(row[k]) for k in NUMERIC})
        except ValueError as e:
            raise StudyCSVError(f'{path}, line {number}: {e}') from None
        if preset is not None and row['preset'] != preset:
            raise StudyCSVError(
                f'{path}, line {number}: a run of preset '
                f'{row["preset"]!r}, not {preset!r}: use one CSV per preset')
        rows.append(row)
    return rows


def write_rows(path: str, rows: List[Dict]) -> None:
    """Write the CSV whole, through a temporary file and a rename, so a
    kill leaves either the old file or the new one."""
    import csv
    with atomic_path(path) as partial, open(partial, 'w', newline='') as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def run_config(run: Run, preset: Preset, work_dir: str) -> Config:
    """The learner's small config with the run's overrides and the preset's
    budget: iterations (the warm-up and cosine rescaled to them), batch,
    seed. Without a curve: no checkpoints and no kNN hook (the study
    evaluates once, at the end; the runtime's NaN-stop hook stays). With
    one: a KNNHook point on the curve subset and a checkpoint every
    ``curve_interval`` iterations, and ``resume`` from the work_dir's last
    checkpoint."""
    cfg = Config.fromfile(preset.config.format(learner=run.learner))
    workers, interval = preset.num_workers, preset.curve_interval
    # the final weights stay where no curve keeps them
    saved = interval or (preset.iters if preset.keep_checkpoints else 0)
    cfg.merge_from_dict({
        **dict(preset.model_overrides),
        **run.overrides(),
        'work_dir': work_dir,
        'experiment_name': f'{preset.name}_{run.name}',
        'train_cfg.max_iters': preset.iters,
        'train_dataloader.batch_size': preset.batch_size,
        'train_dataloader.num_workers': workers,
        'train_dataloader.persistent_workers': workers > 0,
        'default_hooks.checkpoint': dict(
            type='CheckpointHook', by_epoch=False, interval=saved,
            max_keep_ckpts=1, backend_args=dict(backend='atomic_local'))
        if saved else None,
        'resume': bool(interval),
        'load_from': latest_checkpoint(work_dir) if interval else None,
        'default_hooks.logger.interval': max(1, preset.iters // 10),
        'log_processor.window_size': max(1, preset.iters // 10),
        # the study prints one line a run; each run's own log is in its
        # work_dir (vis_data/scalars.json)
        'log_level': 'WARNING',
    })
    if run.precision_in(preset) == 'bf16':
        cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
    if interval:
        cfg.custom_hooks.append(dict(
            type='KNNHook', interval=interval, before_train=True,
            bank_per_class=preset.curve_bank_per_class,
            query_per_class=preset.curve_query_per_class,
            num_workers=workers))
        if preset.dense_root:
            cfg.custom_hooks.append(dict(
                type='DenseKNNHook', interval=interval, before_train=True,
                data_root=dense_root(cfg, preset), **preset.dense_args()))
    warmup, cosine = cfg.param_scheduler
    warmup.end = cosine.begin = preset.warmup_iters
    cosine.end = preset.iters
    return cfg


def linear_probe(train, test, epochs: int) -> float:
    """Top-1 (%) of a softmax regression on frozen features: standardised
    with the train statistics, full-batch Adam from zero weights
    (deterministic)."""
    (x, y), (xt, yt) = train, test
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mean) / std, (xt - mean) / std
    num_classes = int(max(y.max(), yt.max())) + 1
    fc = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(fc.weight)
    torch.nn.init.zeros_(fc.bias)
    optim = torch.optim.Adam(fc.parameters(), lr=0.01)
    for _ in range(epochs):
        optim.zero_grad()
        torch.nn.functional.cross_entropy(fc(x), y).backward()
        optim.step()
    with torch.no_grad():
        return (fc(xt).argmax(1) == yt).float().mean().item() * 100


def dense_root(cfg: Config, preset: Preset) -> str:
    """The preset's segmentation folder: ``dense_root`` in the sample-data
    folder the config's training data lies in (``<data>/cls/<name>``)."""
    data = osp.dirname(osp.dirname(osp.normpath(
        cfg.train_dataloader.dataset.data_root)))
    return osp.join(data, preset.dense_root)


def evaluate(model, cfg: Config, preset: Preset) -> Dict:
    """kNN (k=20, T=0.07) and linear top-1 of the encoder's class tokens of
    the full train (bank) and test (queries) splits, or the preset's
    per-class subsets; with ``dense_root``, the dense evaluation of its
    patch tokens (:func:`~mrcl_plugin.evaluation.dense_eval`, a JSON
    cell), whose per-image areas go to ``<work_dir>/dense_areas.pt``
    (:func:`save_areas`) for the paired comparisons."""
    bank, queries = bank_and_query_features(
        model, cfg.train_dataloader.dataset.data_root,
        bank_per_class=preset.knn_per_class,
        query_per_class=preset.knn_test_per_class,
        num_workers=preset.num_workers)
    dense = ''
    if preset.dense_root:
        data = load_seg_folder(dense_root(cfg, preset), preset.dense_size,
                               preset.dense_splits)
        results = dense_eval(
            model, data, preset.dense_blocks, preset.dense_folds,
            temperatures=preset.dense_temperatures,
            bank_copies=preset.dense_bank_copies,
            linear_epochs=preset.linear_epochs,
            bootstrap=preset.dense_bootstrap, keep_areas=True)
        save_areas(osp.join(cfg.work_dir, AREAS), results)
        dense = json.dumps({
            key: {k: round(v, 2) for k, v in result.items() if k != 'areas'}
            for key, result in results.items()})
    return dict(
        dense=dense,
        knn_top1=round(knn_top1(bank, queries), 2),
        linear_top1=round(
            linear_probe(bank, queries, preset.linear_epochs), 2),
        knn_bank=len(bank[1]),
        knn_queries=len(queries[1]))


AREAS = 'dense_areas.pt'  # in a run's work_dir


def save_areas(path: str, results: Dict) -> None:
    """Each dense figure's per-image areas (int32: pixel counts) and its
    fold sizes, for :func:`load_areas`."""
    torch.save({
        key: dict(areas=torch.cat(r['areas']).int(),
                  fold_sizes=[len(a) for a in r['areas']])
        for key, r in results.items()}, path)


def load_areas(path: str) -> Dict[str, List[torch.Tensor]]:
    """{figure: per fold, its queries' (n_f, 3, K) areas} of a run."""
    from mrcl_plugin.checkpoints import load_checkpoint_file
    saved = load_checkpoint_file(path)
    return {key: list(torch.split(v['areas'].double(), v['fold_sizes']))
            for key, v in saved.items()}


def save_init(model, path: str) -> None:
    """A random init's weights as a checkpoint the converters read (its
    ``meta['mrcl']``, as MRCLMetaHook writes it), for readouts that start
    from the init."""
    with atomic_path(path) as partial:
        torch.save(dict(state_dict=model.state_dict(),
                        meta=dict(iter=0, mrcl=dict(model.describe(),
                                                    max_iters=0))), partial)


def train_and_evaluate(run: Run, preset: Preset, work_root: str,
                       rows: List[Dict] = ()) -> Dict:
    """Pretrain one run in this process (resuming from its last
    checkpoint, with a curve) and evaluate its encoder: its CSV row.
    ``rows``: the runs finished before it, for the stall rule."""
    start = time.time()
    cfg = run_config(run, preset, osp.join(work_root, run.name))
    runner = Runner.from_cfg(cfg)
    curve = None
    if run.method == 'init':
        runner.model.init_weights()
        if preset.keep_checkpoints:
            save_init(runner.model, osp.join(cfg.work_dir, 'init.pth'))
    elif preset.curve_interval:
        curve = CurveHook(preset.curve_interval,
                          **stall_rule(run, preset, rows),
                          queries=curve_queries(cfg, preset))
        runner.register_hook(curve)
        runner.train()
    else:
        runner.train()
    train_s = curve.train_s() if curve else time.time() - start
    trained = time.time()
    scalars = runner.message_hub.log_scalars
    losses = {
        k: scalars[f'train/{k}'].current() if f'train/{k}' in scalars else 0.
        for k in LOSSES
    }
    model = runner.model.eval()
    row = dict(
        preset=preset.name,
        name=run.name,
        **run.as_dict(preset),
        iters=runner.iter,  # less than the preset's: stopped (stall rule)
        batch_size=preset.batch_size,
        **losses,
        **evaluate(model, cfg, preset),
        train_s=round(train_s, 1),
        machine=machine(),
        overrides=json.dumps(run.overrides()),
        knn_curve=format_curve(curve.curve()) if curve else '',
        dense_curve=json.dumps(curve.dense_curve()) if curve and
        preset.dense_root else '')
    # with a curve, the training time of every session of the run
    row['wall_s'] = round(train_s + time.time() - trained, 1)
    return row


def stall_rule(run: Run, preset: Preset, rows: List[Dict]) -> Dict:
    """CurveHook's stall arguments for ``run``. X of a stall learner
    decides for its seed: X checks itself, and MR-X (trained after it)
    stops at the halfway point if and only if X stopped, so that the two
    arms of a seed always have the same budget."""
    if run.learner not in preset.stall_learners:
        return dict(stall_check=False)
    x = [r for r in rows if r['learner'] == run.learner and
         r['method'] == 'baseline' and int(r['seed']) == run.seed]
    if run.method == 'baseline' or not x:  # X, or MR-X trained first
        return dict(stall_check=True, stall_margin=preset.stall_margin)
    stopped = x[0]['iters'] < preset.iters
    return dict(stall_check=stopped, stall_margin=math.inf)


def curve_queries(cfg: Config, preset: Preset) -> int:
    """The number of queries of the curve's kNN points."""
    test = split_dataset(cfg.train_dataloader.dataset.data_root, 'test')
    return len(balanced_subset(test, preset.curve_query_per_class))


def planned_runs(preset: Preset, rows: List[Dict]) -> List[Run]:
    """The preset's runs, under its stall rule: once X and MR-X of a stall
    learner both stopped early at one seed (rows with fewer iterations
    than the preset's), its runs at later seeds are dropped and the spare
    seeds' runs added."""
    stopped = {(r['learner'], r['method'], int(r['seed'])) for r in rows
               if r['method'] != 'init' and r['iters'] < preset.iters}
    stalled = {}
    for learner in preset.stall_learners:
        seeds = [s for s in preset.headline_seeds
                 if {(learner, 'baseline', s), (learner, 'mrcl', s)} <=
                 stopped]
        if seeds:
            stalled[learner] = min(seeds)
    runs = [r for r in preset.runs() if r.method == 'init' or
            r.seed <= stalled.get(r.learner, r.seed)]
    return runs + (preset.spare_runs() if stalled else [])


def _expected_s(run: Run, rows: List[Dict]) -> float:
    trained = run.method != 'init'
    alike = [r['wall_s'] for r in rows
             if (r['method'] != 'init') == trained] or \
        [r['wall_s'] for r in rows]
    return sum(alike) / len(alike)


def adopt_reused(preset: Preset, rows: List[Dict], csv_path: str,
                 work_root: str, log=print) -> List[Dict]:
    """``rows`` and, where ``preset.reuses`` names a preset that trained
    some of this preset's runs with the same config (all but the
    experiment name), their rows from its CSV beside ``csv_path``, their
    work_dirs linked into ``work_root`` (weights and per-image areas)."""
    if not preset.reuses:
        return rows
    other = PRESETS[preset.reuses]
    theirs = read_rows(osp.join(osp.dirname(csv_path), f'{other.name}.csv'),
                       other.name)
    done = {r['name'] for r in rows}
    mine = {r.name: r for r in planned_runs(preset, rows)}
    adopted = []
    for row in theirs:
        run = mine.get(row['name'])
        if run is None or run.name in done:
            continue
        a, b = (run_config(run, p, 'work_dir').to_dict() for p in
                (preset, other))
        a.pop('experiment_name'), b.pop('experiment_name')
        if a != b:
            raise StudyCSVError(
                f'{preset.name} reuses {other.name}, but {run.name} is '
                'configured differently there: train it again (drop '
                '`reuses`)')
        link = osp.join(work_root, run.name)
        if not osp.lexists(link):
            os.makedirs(work_root, exist_ok=True)
            os.symlink(osp.join('..', other.name, run.name), link)
        adopted.append({**row, 'preset': preset.name})
    if adopted:
        log(f'[study] {len(adopted)} runs trained by preset {other.name} '
            f'with the same config: {", ".join(r["name"] for r in adopted)}')
        rows = rows + adopted
        write_rows(csv_path, rows)
    return rows


def run_study(preset: Preset, csv_path: str, work_root: str,
              max_runs: Optional[int] = None, log=print) -> List[Dict]:
    """Train every planned run of ``preset`` (:func:`planned_runs`) not yet
    in ``csv_path`` (at most ``max_runs`` of them), appending its row as it
    finishes. Returns all the rows."""
    rows = adopt_reused(preset, read_rows(csv_path, preset.name), csv_path,
                        work_root, log)

    def todo() -> List[Run]:
        done = {row['name'] for row in rows}
        return [r for r in planned_runs(preset, rows) if r.name not in done]

    left = todo()
    log(f'[study] preset {preset.name}: {len(rows) + len(left)} runs, '
        f'{len(rows)} done already ({csv_path}), {len(left)} to go')
    for _ in range(len(left) if max_runs is None else max_runs):
        if not left:
            break
        run, planned = left[0], left[1:]
        row = train_and_evaluate(run, preset, work_root, rows)
        rows.append(row)
        write_rows(csv_path, rows)
        if run.method != 'init' and row['iters'] < preset.iters:
            log(f'[study] {run.name} stopped at iteration '
                f'{row["iters"]:.0f} (the stall rule)')
        left = todo()
        if left != planned:
            log(f'[study] the stall rule changed the plan: now '
                f'{", ".join(r.name for r in left)}')
        # time left: the runs to go, each at the mean of the finished runs
        # of its kind (an untrained init costs only its evaluation)
        log(f'[study] {len(rows)}/{len(rows) + len(left)} done: {run.name}: '
            f'kNN {row["knn_top1"]:.1f}%, linear {row["linear_top1"]:.1f}%, '
            f'{row["wall_s"]:.0f} s; {len(left)} left, about '
            f'{sum(_expected_s(r, rows) for r in left) / 60:.0f} min to go')
    return rows
