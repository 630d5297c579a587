"""Reading training logs: the paper's result tables and training curves."""
from .curves import plot_curves, training_curves
from .results import collect_runs, find_work_dirs, read_run, render_tables
from .work_dir import read_config_text, read_scalars

__all__ = [
    'collect_runs', 'find_work_dirs', 'plot_curves', 'read_config_text',
    'read_run', 'read_scalars', 'render_tables', 'training_curves'
]
