"""Helpers shared by the benchmark scripts: the machine label printed next to
every figure, thread settings, process memory readings and table printing."""
import os
import platform
import statistics
import sys
from typing import Dict, List, Optional, Sequence

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty
    on Linux), else platform.processor()."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_threads(threads: Optional[int]) -> int:
    """Set torch's intra-op threads explicitly (default: the usable cores)."""
    threads = threads or usable_cpus()
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        sys.exit('--device cuda: no CUDA device is available')
    return torch.device(name)


def machine_lines(device: Optional[torch.device] = None) -> List[str]:
    """One labelled line per fact about the machine the figures come from."""
    lines = [
        f'host       : {platform.node()}  ({platform.system()} '
        f'{platform.release()}, {platform.machine()})',
        f'cpu        : {cpu_model()}  (platform.processor()='
        f'{platform.processor()!r}; {usable_cpus()} usable of '
        f'{os.cpu_count()} logical cores)',
        f'python     : {platform.python_version()}',
        f'torch      : {torch.__version__}  (intra-op threads '
        f'{torch.get_num_threads()}, inter-op threads '
        f'{torch.get_num_interop_threads()})',
    ]
    if device is not None:
        lines.append(f'device     : {device}')
    if torch.cuda.is_available():
        idx = device.index if device is not None and device.type == 'cuda' \
            and device.index is not None else 0
        props = torch.cuda.get_device_properties(idx)
        lines.append(f'gpu        : {props.name}, '
                     f'{props.total_memory / 2**30:.1f} GiB, CUDA '
                     f'{torch.version.cuda}, cuDNN '
                     f'{torch.backends.cudnn.version()}')
    else:
        lines.append('gpu        : none (torch.cuda.is_available() is False)')
    try:
        import mmcv
        import mmengine
        import mmpretrain
        lines.append(f'openmmlab  : mmengine {mmengine.__version__}, mmcv '
                     f'{mmcv.__version__}, mmpretrain '
                     f'{mmpretrain.__version__}')
    except ImportError:
        pass
    try:
        load = os.getloadavg()
        lines.append(f'load avg   : {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} '
                     '(1/5/15 min, at start: other work on the machine '
                     'shows here)')
    except OSError:
        pass
    return lines


def print_machine(title: str, device: Optional[torch.device] = None) -> str:
    """Print the machine block and return a one-line label for tables."""
    print('=' * 78)
    print(title)
    print('-' * 78)
    for line in machine_lines(device):
        print(line)
    print('=' * 78)
    label = f'{cpu_model()}, {torch.get_num_threads()} thr'
    if device is not None and device.type == 'cuda':
        label = torch.cuda.get_device_name(device) + f' (host {label})'
    return f'[{label}, torch {torch.__version__}]'


def proc_status_kib(field: str) -> Optional[int]:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), None off Linux."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to
    /proc/self/clear_refs). Returns whether it worked."""
    try:
        before = proc_status_kib('VmRSS')
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        hwm = proc_status_kib('VmHWM')
        # After the reset the high-water mark is (about) the current RSS.
        return hwm is not None and before is not None and \
            hwm <= before + 64 * 1024
    except OSError:
        return False


def median_min(values: Sequence[float]) -> Dict[str, float]:
    return dict(median=statistics.median(values), min=min(values),
                max=max(values), n=len(values))


def print_table(headers: Sequence[str], rows: Sequence[Sequence],
                align: Optional[str] = None) -> None:
    """A plain text table; align is a string of 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or 'l' + 'r' * (len(headers) - 1)

    def fmt(row):
        return '  '.join(c.ljust(w) if a == 'l' else c.rjust(w)
                         for c, w, a in zip(row, widths, align))

    print(fmt(cells[0]))
    print('  '.join('-' * w for w in widths))
    for row in cells[1:]:
        print(fmt(row))


def verdict(value: float, target: float, at_most: bool = True) -> str:
    ok = value <= target if at_most else value >= target
    return 'PASS' if ok else 'FAIL'
