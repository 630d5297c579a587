"""Train and evaluate the runs of a study preset, one CSV row per finished
run; runs already in the CSV are not trained again."""
import json
import os
import os.path as osp
import platform
import time
from typing import Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from presets import CONFIG, Preset, Run

from mrcl_plugin.checkpoint import atomic_path
from mrcl_plugin.evaluation import bank_and_query_features, knn_top1

LOSSES = ('loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked')
COLUMNS = ('preset', 'name', 'variant', 'method', 'mask_ratio', 'alpha',
           'lambd', 'seed', 'precision', 'iters', 'batch_size', *LOSSES,
           'knn_top1', 'linear_top1', 'knn_bank', 'knn_queries', 'train_s',
           'wall_s', 'machine', 'overrides')
NUMERIC = ('mask_ratio', 'alpha', 'lambd', 'seed', 'iters', 'batch_size',
           *LOSSES, 'knn_top1', 'linear_top1', 'knn_bank', 'knn_queries',
           'train_s', 'wall_s')


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
    if not lines or tuple(lines[0]) != COLUMNS:
        got = ','.join(lines[0])[:120] if lines else 'an empty file'
        raise StudyCSVError(
            f'{path}: not a study CSV of this tool (its first line is '
            f'{got!r}; expected {",".join(COLUMNS[:4])},...). Move it away '
            'or pass another --csv; it is left as it is')
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(COLUMNS):
            raise StudyCSVError(
                f'{path}, line {number}: {len(line)} fields, expected '
                f'{len(COLUMNS)} (a truncated or hand-edited row?)')
        row = dict(zip(COLUMNS, line))
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


def machine() -> str:
    """What the run ran on, e.g. 'Intel(R) Xeon(R) ... x2 cores, torch
    2.14.1, cpu'."""
    cpu = platform.processor() or platform.machine()
    if osp.isfile('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            cpu = next((line.split(':', 1)[1].strip() for line in f
                        if line.startswith('model name')), cpu)
    device = (torch.cuda.get_device_name()
              if torch.cuda.is_available() else 'cpu')
    return (f'{cpu} x{os.cpu_count()} cores, torch {torch.__version__}, '
            f'{device}')


def run_config(run: Run, preset: Preset, work_dir: str) -> Config:
    """The variant's small config with the run's overrides and the preset's
    budget: iterations (the warm-up and cosine rescaled to them), batch,
    seed; no checkpoints and no kNN hook (the study evaluates once, at the
    end; the runtime's NaN-stop hook stays)."""
    cfg = Config.fromfile(CONFIG.format(variant=run.variant))
    workers = preset.num_workers
    cfg.merge_from_dict({
        **run.overrides(),
        'work_dir': work_dir,
        'experiment_name': f'{preset.name}_{run.name}',
        'train_cfg.max_iters': preset.iters,
        'train_dataloader.batch_size': preset.batch_size,
        'train_dataloader.num_workers': workers,
        'train_dataloader.persistent_workers': workers > 0,
        'default_hooks.checkpoint': None,
        'default_hooks.logger.interval': max(1, preset.iters // 10),
        'log_processor.window_size': max(1, preset.iters // 10),
        # the study prints one line a run; each run's own log is in its
        # work_dir (vis_data/scalars.json)
        'log_level': 'WARNING',
    })
    if run.precision_in(preset) == 'bf16':
        cfg.optim_wrapper.type = 'CPUBF16OptimWrapper'
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
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


def evaluate(model, cfg: Config, preset: Preset) -> Dict:
    """kNN (k=20, T=0.07) and linear top-1 of the encoder's class tokens of
    the full train (bank) and test (queries) splits, or the preset's
    per-class subsets."""
    bank, queries = bank_and_query_features(
        model, cfg.train_dataloader.dataset.data_root,
        bank_per_class=preset.knn_per_class,
        query_per_class=preset.knn_test_per_class,
        num_workers=preset.num_workers)
    return dict(
        knn_top1=round(knn_top1(bank, queries), 2),
        linear_top1=round(
            linear_probe(bank, queries, preset.linear_epochs), 2),
        knn_bank=len(bank[1]),
        knn_queries=len(queries[1]))


def train_and_evaluate(run: Run, preset: Preset, work_root: str) -> Dict:
    """Pretrain one run in this process and evaluate its encoder: its CSV
    row."""
    start = time.time()
    cfg = run_config(run, preset, osp.join(work_root, run.name))
    runner = Runner.from_cfg(cfg)
    if run.method == 'init':
        runner.model.init_weights()
    else:
        runner.train()
    train_s = time.time() - start
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
        iters=0 if run.method == 'init' else preset.iters,
        batch_size=preset.batch_size,
        **losses,
        **evaluate(model, cfg, preset),
        train_s=round(train_s, 1),
        machine=machine(),
        overrides=json.dumps(run.overrides()))
    row['wall_s'] = round(time.time() - start, 1)
    return row


def _expected_s(run: Run, rows: List[Dict]) -> float:
    trained = run.method != 'init'
    alike = [r['wall_s'] for r in rows
             if (r['method'] != 'init') == trained] or \
        [r['wall_s'] for r in rows]
    return sum(alike) / len(alike)


def run_study(preset: Preset, csv_path: str, work_root: str,
              max_runs: Optional[int] = None, log=print) -> List[Dict]:
    """Train every run of ``preset`` not yet in ``csv_path`` (at most
    ``max_runs`` of them), appending its row as it finishes. Returns all
    the rows."""
    rows = read_rows(csv_path, preset.name)
    done = {row['name'] for row in rows}
    todo = [run for run in preset.runs() if run.name not in done]
    total = len(preset.runs())
    log(f'[study] preset {preset.name}: {total} runs, {len(done)} done '
        f'already ({csv_path}), {len(todo)} to go')
    for i, run in enumerate(todo[:max_runs]):
        row = train_and_evaluate(run, preset, work_root)
        rows.append(row)
        write_rows(csv_path, rows)
        # time left: the runs to go, each at the mean of the finished runs
        # of its kind (an untrained init costs only its evaluation)
        left = todo[i + 1:]
        log(f'[study] {len(rows)}/{total} done: {run.name}: kNN '
            f'{row["knn_top1"]:.1f}%, linear {row["linear_top1"]:.1f}%, '
            f'{row["wall_s"]:.0f} s; {len(left)} left, about '
            f'{sum(_expected_s(r, rows) for r in left) / 60:.0f} min to go')
    return rows
