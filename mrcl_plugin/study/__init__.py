"""The small-scale study of the paper's claims (Sec. 4.3, Table 1 scaled
down): presets, the resumable runner and the report."""
from .presets import PRESETS, Preset, Run
from .report import write_report
from .runner import StudyCSVError, read_rows, run_study

__all__ = [
    'PRESETS', 'Preset', 'Run', 'StudyCSVError', 'read_rows', 'run_study',
    'write_report'
]
