"""The small-scale study: the micro preset end to end (CSV, resume, report,
plots), and clear errors on a CSV it did not write."""
import os
import subprocess
import sys

import mmcv
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools', 'study'))
from presets import PRESETS  # noqa: E402
from report import write_report  # noqa: E402
from runner import (COLUMNS, StudyCSVError, read_rows, run_config,  # noqa
                    run_study)


def test_grid_compares_at_the_same_budget():
    preset = PRESETS['cifar10-cpu']
    runs = preset.runs()
    # 3 random inits, 3 variants x (X, MR-X) x 3 seeds, then the sweep
    # points not already there: Fig. 3 r (4 new), Fig. 4 alpha=lambda (4
    # new), Fig. 5 (3 new), and the fp32 check of the bf16 preset
    assert len(runs) == 3 + 18 + 4 + 4 + 3 + 1
    assert len({r.name for r in runs}) == len(runs)
    assert [r.name for r in runs[:3]] == ['init_s0', 'init_s1', 'init_s2']
    baselines = [r for r in runs if r.method == 'baseline']
    assert {(r.mask_ratio, r.alpha, r.lambd) for r in baselines} == {(0, 0, 0)}
    headline = runs[3:21]
    for variant, alpha in (('barlowtwins', 10), ('byol', 0.01),
                           ('simclr', 0.01)):
        for method in ('baseline', 'mrcl'):
            found = [r for r in headline
                     if (r.variant, r.method) == (variant, method)]
            assert {r.seed for r in found} == {0, 1, 2}
            if method == 'mrcl':  # the paper's STL-10 weights per variant
                assert {(r.alpha, r.lambd) for r in found} == {(alpha, alpha)}
    assert {r.precision_in(preset) for r in runs[:-1]} == {'bf16'}
    # the sweeps and the check: MR-SimCLR (docs/study.md says why)
    assert {r.variant for r in runs[21:]} == {'simclr'}
    assert runs[-1].name == 'simclr_mrcl_r0.2_a0.01_l0.01_s0_fp32'
    assert run_config(runs[-1], preset, 'w').optim_wrapper.type == \
        'OptimWrapper'
    assert run_config(runs[-2], preset, 'w').optim_wrapper.type == \
        'CPUBF16OptimWrapper'


def test_micro_study_runs_resumes_and_reports(tmp_path, mrcl_data_env):
    preset, csv = PRESETS['micro'], str(tmp_path / 'micro.csv')
    log = []
    first = run_study(preset, csv, str(tmp_path / 'runs'), max_runs=2,
                      log=log.append)
    assert [r['name'] for r in first] == ['init_s0', 'barlowtwins_baseline_s0']
    assert '2/4 done' in log[-1] and '2 left' in log[-1]

    log.clear()
    rows = run_study(preset, csv, str(tmp_path / 'runs'), log=log.append)
    assert '2 done already' in log[0] and '2 to go' in log[0]
    assert [r['name'] for r in rows] == [
        'init_s0', 'barlowtwins_baseline_s0',
        'barlowtwins_mrcl_r0.2_a10_l10_s0',
        'barlowtwins_mrcl_r0.2_a10_l10_s0_fp32'
    ]
    saved = read_rows(csv, 'micro')
    assert saved[1]['wall_s'] == first[1]['wall_s']  # not trained again
    init, baseline, mrcl, fp32 = saved
    assert init['iters'] == 0 and init['loss_contrastive'] == 0
    assert baseline['iters'] == preset.iters and baseline['loss_contrastive']
    assert baseline['loss_rec_masked'] == baseline['loss_rec_unmasked'] == 0
    assert mrcl['loss_rec_masked'] > 0 and mrcl['loss_rec_unmasked'] > 0
    assert [r['precision'] for r in saved] == ['bf16'] * 3 + ['fp32']
    for row in saved:
        assert (row['knn_bank'], row['knn_queries']) == (100, 50)
        assert 0 <= row['knn_top1'] <= 100 and 0 <= row['linear_top1'] <= 100

    out = tmp_path / 'study.md'
    text = write_report(csv, str(out))
    assert out.read_text() == text
    assert '| BarlowTwins | 1' in text and 'MR-BarlowTwins beats' in text
    assert '| random init | ' in text and 'beats its random init' in text
    assert '## bf16 against fp32' in text
    assert '| barlowtwins_mrcl_r0.2_a10_l10_s0_fp32 | 0 | fp32 |' in text
    png = tmp_path / 'study' / 'mask_ratio.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert mmcv.imread(str(png)).shape[:2] == (340, 900)


@pytest.mark.parametrize('content, message', [
    ('epoch,loss\n1,0.5\n', 'not a study CSV of this tool'),
    ('', 'not a study CSV of this tool'),
])
def test_foreign_csv_is_refused_and_left_alone(tmp_path, content, message):
    csv = tmp_path / 'foreign.csv'
    csv.write_text(content)
    out = subprocess.run(
        [sys.executable, 'tools/study/run.py', '--preset', 'micro', '--csv',
         str(csv), '--work-dir', str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode != 0
    assert message in out.stderr and 'Traceback' not in out.stderr
    assert csv.read_text() == content


def test_truncated_row_names_the_line(tmp_path):
    csv = tmp_path / 'cut.csv'
    csv.write_text(','.join(COLUMNS) + '\nmicro,barlowtwins_baseline_s0,bar')
    with pytest.raises(StudyCSVError, match='cut.csv, line 2: 3 fields'):
        read_rows(str(csv))
