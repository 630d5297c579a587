"""What mmengine 0.10 leaves in a work_dir, read back.

A run started at ``<timestamp>`` writes into ``<work_dir>/<timestamp>/``:

- ``vis_data/scalars.json`` (``LocalVisBackend``) and the same records in
  ``vis_data/<timestamp>.json`` (``LoggerHook``): one JSON object per line;
  training lines carry ``iter`` and ``step``, validation lines the metrics and
  ``step`` (the iteration, or the epoch for epoch-based loops);
- ``<timestamp>.json`` after a test run (``tools/test.py``, ``mim test``): one
  JSON object with the test metrics;
- ``vis_data/config.py``, the config as run (also dumped at the work_dir's
  top as ``<config name>.py``).
"""
import json
import re
from pathlib import Path
from typing import Dict, List

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')


def run_folders(work_dir: Path) -> List[Path]:
    """The ``<timestamp>`` folders of a work_dir, oldest first (a resumed or
    tested run adds one).

    Raises:
        NotADirectoryError: ``work_dir`` is a file (a log, a checkpoint).
        FileNotFoundError: there is nothing at ``work_dir``.
    """
    work_dir = Path(work_dir)
    if work_dir.is_file():
        raise NotADirectoryError(
            f'{work_dir} is a file, not a work_dir: give the folder '
            'tools/train.py wrote into (with <timestamp>/vis_data/ in it)')
    if not work_dir.is_dir():
        raise FileNotFoundError(f'{work_dir}: no such work_dir')
    return sorted(p for p in work_dir.iterdir()
                  if p.is_dir() and TIMESTAMP.match(p.name))


def _json_lines(path: Path) -> List[Dict]:
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f'{path}, line {n}: not a JSON log line ({e})')
    return records


def read_scalars(work_dir: Path) -> List[Dict]:
    """Every logged record of every run in ``work_dir``, oldest first; a test
    run's record gets ``mode='test'``."""
    records = []
    for folder in run_folders(work_dir):
        vis = folder / 'vis_data'
        for name in ('scalars.json', f'{folder.name}.json'):
            if (vis / name).is_file():
                records += _json_lines(vis / name)
                break
        test_log = folder / f'{folder.name}.json'
        if test_log.is_file():
            try:
                test = json.loads(test_log.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f'{test_log}: not a JSON test log ({e})')
            records.append(dict(test, mode='test'))
    return records


def read_config_text(work_dir: Path) -> str:
    """The config a work_dir ran, as text (a config is code: it is read,
    never executed). The newest run's copy; '' when there is none."""
    for folder in reversed(run_folders(work_dir)):
        if (folder / 'vis_data' / 'config.py').is_file():
            return (folder / 'vis_data' / 'config.py').read_text()
    dumped = sorted(Path(work_dir).glob('*.py'))
    return dumped[-1].read_text() if dumped else ''
