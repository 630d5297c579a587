"""The small-scale study: the micro presets end to end (CSV, resume, report,
plots, learning curves, the stall rule), and clear errors on a CSV it did
not write."""
import csv as csv_module
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
from statistics import mean

import mmcv
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools', 'study'))
from compare import compare, compare_csv  # noqa: E402
from curves import gap_verdict, parse_curve  # noqa: E402
from dense_report import arm_name, picture_file  # noqa: E402
from presets import PRESETS  # noqa: E402
from report import write_report  # noqa: E402
from runner import (COLUMNS, StudyCSVError, load_areas,  # noqa: E402
                    planned_runs, read_rows, run_config, run_study,
                    save_areas)

from mrcl_plugin.checkpoints import AtomicLocalBackend  # noqa: E402


def test_grid_compares_at_the_same_budget():
    preset = PRESETS['cifar10-cpu']
    runs = preset.runs()
    # 3 random inits, 3 learners x (X, MR-X) x 3 seeds, then the sweep
    # points not already there: Fig. 3 r (4 new), Fig. 4 alpha=lambda (4
    # new), Fig. 5 (3 new), and the fp32 check of the bf16 preset
    assert len(runs) == 3 + 18 + 4 + 4 + 3 + 1
    assert len({r.name for r in runs}) == len(runs)
    assert [r.name for r in runs[:3]] == ['init_s0', 'init_s1', 'init_s2']
    baselines = [r for r in runs if r.method == 'baseline']
    assert {(r.mask_ratio, r.alpha, r.lambd) for r in baselines} == {(0, 0, 0)}
    headline = runs[3:21]
    for learner, alpha in (('barlowtwins', 10), ('byol', 0.01),
                           ('simclr', 0.01)):
        for method in ('baseline', 'mrcl'):
            found = [r for r in headline
                     if (r.learner, r.method) == (learner, method)]
            assert {r.seed for r in found} == {0, 1, 2}
            if method == 'mrcl':  # the paper's STL-10 weights per learner
                assert {(r.alpha, r.lambd) for r in found} == {(alpha, alpha)}
    assert {r.precision_in(preset) for r in runs[:-1]} == {'bf16'}
    # the sweeps and the check: MR-SimCLR (docs/study.md says why)
    assert {r.learner for r in runs[21:]} == {'simclr'}
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


def test_long_preset_order_and_stall_rule():
    preset = PRESETS['cifar10-long']
    names = [r.name for r in planned_runs(preset, [])]
    # seed 0 of every arm first, SimCLR before Barlow Twins
    assert names[3:7] == [
        'simclr_baseline_s0', 'simclr_mrcl_r0.2_a0.01_l0.01_s0',
        'barlowtwins_baseline_s0', 'barlowtwins_mrcl_r0.2_a10_l10_s0'
    ]
    assert len(names) == 3 + 12 and preset.iters == 390
    cfg = run_config(planned_runs(preset, [])[3], preset, 'w')
    assert cfg.resume and cfg.default_hooks.checkpoint.interval == 65
    knn = [h for h in cfg.custom_hooks if h['type'] == 'KNNHook']
    assert [(h['interval'], h['bank_per_class'], h['query_per_class'])
            for h in knn] == [(65, 100, 100)]

    def row(learner, method, iters):
        return dict(learner=learner, method=method, seed=0., iters=iters)

    # one arm stopped: the plan stands
    rows = [row('barlowtwins', 'baseline', 195.)]
    assert [r.name for r in planned_runs(preset, rows)] == names
    # both stopped at seed 0: Barlow Twins' later seeds go to SimCLR's
    rows.append(row('barlowtwins', 'mrcl', 195.))
    now = [r.name for r in planned_runs(preset, rows)]
    assert not [n for n in now if n.startswith('barlowtwins') and
                not n.endswith('_s0')]
    assert now[-2:] == [
        'simclr_baseline_s3', 'simclr_mrcl_r0.2_a0.01_l0.01_s3'
    ]


def test_gap_verdict_over_time():
    base = {0: (30, 1, 3), 130: (35, 1, 3), 260: (36, 1, 3), 390: (37, 1, 3)}
    mr = {0: (30, 1, 3), 130: (37, 1, 3), 260: (36.5, 1, 3), 390: (40, 2, 3)}
    # above at 130, within the spread at 260, above again at 390
    assert gap_verdict(base, mr).startswith(
        'MR-X is above X by more than the seed spread from iteration 390 on')
    mr[390] = (37.5, 1, 3)
    assert 'within the seed spread at the end (it exceeded it at ' \
        'iterations [130])' in gap_verdict(base, mr)
    assert 'fewer than 2 runs' in gap_verdict(
        {0: (30, 0, 1)}, {0: (31, 0, 1)})


class Killed(Exception):
    pass


def knn_points(work_dir):
    """Every KNNHook point the run logged: {session: [(step, top1)]}."""
    points = {}
    for path in sorted(glob.glob(f'{work_dir}/*/vis_data/scalars.json')):
        with open(path) as f:
            lines = [json.loads(line) for line in f]
        points[path] = [(d['step'], d['knn/top1']) for d in lines
                        if 'knn/top1' in d]
    return points


def test_micro_long_study_resumes_stalls_and_plots(tmp_path, mrcl_data_env,
                                                    monkeypatch):
    preset, csv = PRESETS['micro-long'], str(tmp_path / 'long.csv')
    work = tmp_path / 'runs'
    put = AtomicLocalBackend.put

    def save_then_die(self, obj, filepath):
        put(self, obj, filepath)
        raise Killed  # a kill after the checkpoint, before last_checkpoint

    # killed in the first trained run, after its checkpoint at iteration 1
    monkeypatch.setattr(AtomicLocalBackend, 'put', save_then_die)
    with pytest.raises(Killed):
        run_study(preset, csv, str(work), log=lambda _: None)
    assert [r['name'] for r in read_rows(csv)] == ['init_s0', 'init_s1']
    monkeypatch.undo()

    log = []
    rows = run_study(preset, csv, str(work), log=log.append)
    assert [r['name'] for r in rows] == [
        'init_s0', 'init_s1', 'simclr_baseline_s0',
        'simclr_mrcl_r0.2_a0.01_l0.01_s0', 'barlowtwins_baseline_s0',
        'barlowtwins_mrcl_r0.2_a10_l10_s0', 'simclr_baseline_s1',
        'simclr_mrcl_r0.2_a0.01_l0.01_s1'
    ]  # Barlow Twins' seed 1: dropped by the stall rule
    assert any('stall rule changed the plan' in line for line in log)
    # the killed run resumed from its checkpoint: its second session
    # started at iteration 1
    first, second = knn_points(work / 'simclr_baseline_s0').values()
    assert [s for s, _ in first] == [0, 1]
    assert [s for s, _ in second] == [1, 2]
    for row in read_rows(csv)[2:]:
        curve = parse_curve(row['knn_curve'])
        stopped = row['learner'] == 'barlowtwins'
        assert row['iters'] == (1 if stopped else 2)
        assert [s for s, _ in curve] == ([0, 1] if stopped else [0, 1, 2])
        # the curve is what the run's KNNHook logged (its latest session's
        # value where a step was evaluated twice)
        logged = {}
        for points in knn_points(work / row['name']).values():
            logged.update(points)
        assert curve == [(s, round(logged[s], 2)) for s, _ in curve]

    # the report fills its own section of an existing file, keeps the rest
    out = tmp_path / 'study.md'
    out.write_text('<!-- study:other -->\nkept\n<!-- /study:other -->\n'
                   '<!-- study:micro-long -->\n**Not run yet.**\n'
                   '<!-- /study:micro-long -->\n')
    text = write_report(csv, str(out))
    assert text.startswith('<!-- study:other -->\nkept\n')
    assert 'Not run yet' not in text and '### Learning curves' in text
    png = tmp_path / 'study' / 'learning_curves.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the plotted data: per arm and iteration, the mean over the runs' CSV
    # curves
    with open(tmp_path / 'study' / 'curves.csv') as f:
        plotted = [line.split(',') for line in f.read().split()[1:]]
    expected = []
    for arm, params in (
            ('SimCLR', dict(learner='simclr', method='baseline')),
            ('MR-SimCLR', dict(learner='simclr', method='mrcl')),
            ('BarlowTwins', dict(learner='barlowtwins', method='baseline')),
            ('MR-BarlowTwins', dict(learner='barlowtwins', method='mrcl'))):
        curves = [dict(parse_curve(r['knn_curve'])) for r in rows
                  if all(r[k] == v for k, v in params.items())]
        for step in sorted(curves[0]):
            values = [c[step] for c in curves if step in c]
            expected.append((arm, step, mean(values), len(values)))
    assert [(a, int(s), float(m), int(n)) for a, s, m, _, n in plotted] == \
        pytest.approx(expected)
    assert 'the stall rule stopped `barlowtwins_baseline_s0` at ' \
        'iteration 1' in text


def test_plan_times_whole_iterations_loading_included():
    """--plan's step time runs from one iteration's end to the next's, so
    loading a batch in the main process (no loader workers) is counted."""
    import time

    from budget import _StepTimes
    times = _StepTimes()
    times.after_train_iter(None, 0)
    time.sleep(0.05)  # the next batch loads before before_train_iter
    times.before_train_iter(None, 1)
    times.after_train_iter(None, 1)
    assert len(times.times) == 1 and times.times[0] >= 0.05


def test_stall_rule_gives_both_arms_of_a_seed_one_budget():
    """X of a stall learner checks itself; its MR-X stops at the halfway
    point exactly when X stopped, whatever its own curve does."""
    from runner import stall_rule
    preset = PRESETS['cifar10-long']
    runs = {(r.learner, r.method, r.seed): r for r in preset.runs()}
    x, mr = runs['barlowtwins', 'baseline', 0], runs['barlowtwins', 'mrcl', 0]

    def x_row(iters):
        return [dict(learner='barlowtwins', method='baseline', seed=0.,
                     iters=float(iters))]

    assert stall_rule(x, preset, []) == dict(stall_check=True,
                                             stall_margin=None)
    assert stall_rule(mr, preset, x_row(390))['stall_check'] is False
    stop = stall_rule(mr, preset, x_row(195))
    assert stop['stall_check'] and stop['stall_margin'] == float('inf')
    assert stall_rule(runs['simclr', 'mrcl', 0], preset,
                      x_row(195)) == dict(stall_check=False)


def test_micro_dense_study_runs_and_reports(tmp_path, mrcl_data_env):
    """The dense preset at micro size: each run's row carries its dense
    evaluation and its dense curve (what its DenseKNNHook logged), and the
    report has the dense section and figure."""
    preset, csv = PRESETS['micro-dense'], str(tmp_path / 'dense.csv')
    work = tmp_path / 'runs'
    rows = run_study(preset, csv, str(work), log=lambda _: None)
    assert [r['name'] for r in rows] == [
        'init_s0', 'simclr_baseline_s0', 'simclr_mrcl_r0.2_a0.01_l0.01_s0',
        'simclr_mrcl_r0.2_a1_l1_c0_s0'
    ]
    keys = {f'knn_b{b}_t{t}' for b in (0, 1) for t in ('0.02', '0.07')} | \
        {'linear_b0', 'linear_b1'}
    for row in read_rows(csv, 'micro-dense'):
        dense = json.loads(row['dense'])
        assert set(dense) == keys
        for result in dense.values():
            assert 0 < result['low'] <= result['high'] < 100
        if row['method'] == 'init':
            continue
        logged = {}
        for path in (work / row['name']).glob('*/vis_data/scalars.json'):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                if 'dense/knn_b1_t0.02' in record:
                    logged[record['step']] = record['dense/knn_b1_t0.02']
        curve = json.loads(row['dense_curve'])
        assert [step for step, _ in curve] == [0, 1, 2] == sorted(logged)
        assert [p['dense/knn_b1_t0.02'] for _, p in curve] == \
            pytest.approx([logged[s] for s in (0, 1, 2)], abs=0.01)
    recon = rows[-1]
    assert recon['contrastive_weight'] == 0 and recon['loss_contrastive'] == 0
    text = write_report(csv, str(tmp_path / 'study.md'))
    assert '## Dense features' in text and '| reconstruction alone' in text
    assert 'No verdicts: they need the paired interval' in text
    # with each run's per-image areas, the paired comparisons: one seed,
    # so the seed interval is unbounded and no verdict is above or below
    found = compare(read_rows(csv), preset, str(work), bootstrap=50)
    assert {(r['arm'], r['reference']) for r in found} == {
        ('MR-SimCLR', 'SimCLR'), ('SimCLR', 'random init'),
        (RECON, 'SimCLR'), (RECON, 'random init')}
    assert {r['verdict'] for r in found} == {'within'}
    assert all(r['images'] == 200 and r['paired_low'] <= r['diff'] <=
               r['paired_high'] for r in found)
    with open(compare_csv(csv), 'w', newline='') as f:
        writer = csv_module.DictWriter(f, list(found[0]))
        writer.writeheader()
        writer.writerows(found)
    text = write_report(csv, str(tmp_path / 'study.md'))
    assert '| MR-SimCLR - SimCLR | kNN b1 T=0.07 | +' in text or \
        '| MR-SimCLR - SimCLR | kNN b1 T=0.07 | -' in text
    png = tmp_path / 'study' / 'micro-dense_dense_curves.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


RECON = 'reconstruction alone (r = 0.2, alpha = 1, lambda = 1)'


@pytest.fixture(scope='module')
def micro_instrument_runs(data_root, tmp_path_factory):
    """The folder of the micro instrument preset's runs (the init and
    SimCLR, 2 seeds, weights kept) and their CSV."""
    work = tmp_path_factory.mktemp('camvid')
    preset = PRESETS['micro-camvid-instrument']
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MRCL_DATA', str(data_root))
        run_study(preset, str(work / f'{preset.name}.csv'),
                  str(work / preset.name), log=lambda _: None)
    return work


def test_micro_instrument_check_chooses_a_design(
        micro_instrument_runs, tmp_path, mrcl_data_env, monkeypatch, capsys):
    """The instrument check on the micro preset: X and the init at two
    seeds, each kept encoder evaluated in two designs (size x bank), one
    row per design, figure and learner, and a choice that follows the
    rule (the most learners resolved, then the largest resolution)."""
    import instrument
    preset = PRESETS['micro-camvid-instrument']
    out = tmp_path / 'check.csv'
    monkeypatch.setattr(sys, 'argv', [
        'instrument.py', '--preset', preset.name, '--work-dir',
        str(micro_instrument_runs), '--sizes', '16', '--bank-copies', '0',
        '1', '--out', str(out)])
    instrument.main()
    with open(out, newline='') as f:
        rows = list(csv_module.DictReader(f))
    figures = {(r['size'], r['bank_copies'], r['figure']) for r in rows}
    # retrieval at both bank sizes, the probe only without augmentation
    assert len(figures) == len(rows) == 4 * 2 + 2
    for r in rows:
        x, init = float(r['x_mean']), float(r['init_mean'])
        pooled = ((float(r['x_std'])**2 + float(r['init_std'])**2) / 2)**.5
        assert float(r['resolution']) == pytest.approx(
            abs(x - init) / pooled, rel=1e-2, abs=1e-2)
        assert float(r['paired_low']) <= float(r['paired_diff']) <= \
            float(r['paired_high'])
    best = max(rows, key=lambda r: float(r['resolution']))
    printed = capsys.readouterr().out
    assert (f"Chosen: 16 px, {best['bank_copies']} bank copies, "
            f"{best['figure']} (resolution simclr") in printed
    # a design left out (--skip) is neither evaluated nor a candidate;
    # the kept ones come from the runs' caches
    argv = sys.argv[:-2] + ['--skip', '16x1', '--out', str(out)]
    monkeypatch.setattr(sys, 'argv', argv)
    instrument.main()
    with open(out, newline='') as f:
        assert {r['bank_copies'] for r in csv_module.DictReader(f)} == {'0'}
    monkeypatch.setattr(sys, 'argv', argv[:-4] + ['--skip', '16', '--out',
                                                  str(out)])
    with pytest.raises(SystemExit, match='--skip 16: expected SIZExBANK'):
        instrument.main()


def test_micro_camvid_reuses_the_instruments_runs(
        micro_instrument_runs, tmp_path, mrcl_data_env, monkeypatch):
    """The camvid study takes its init and X runs from the instrument
    preset (rows and weights), trains only the rest, and refuses to reuse
    a run whose config differs; one picture an arm."""
    work = micro_instrument_runs
    instrument, study = (PRESETS['micro-camvid-instrument'],
                         PRESETS['micro-camvid'])
    theirs = read_rows(str(work / f'{instrument.name}.csv'))
    logged = []
    rows = run_study(study, str(work / f'{study.name}.csv'),
                     str(work / study.name), log=logged.append)
    assert f'4 runs trained by preset {instrument.name}' in logged[0]
    assert sorted(r['name'] for r in rows) == sorted(r.name for r in
                                                     study.runs())
    reused = {r['name']: r for r in rows if r['method'] != 'mrcl'}
    for row in theirs:
        assert reused[row['name']] == {**row, 'preset': study.name}
        assert (work / study.name / row['name']).is_symlink()
    trained = [r['name'] for r in rows if r['method'] == 'mrcl']
    assert len(trained) == 2
    for name in trained:
        assert not (work / study.name / name).is_symlink()
        assert (work / study.name / name / 'dense_areas.pt').is_file()
    # one picture an arm (seed 0), each its own file: 2 test images, a row
    # each of 4 tiles (image, truth, retrieval, PCA; UperNet where it ran)
    import pictures
    monkeypatch.setattr(sys, 'argv', [
        'pictures.py', str(work / f'{study.name}.csv'), '--work-dir',
        str(work), '--out', str(tmp_path / 'pics'), '--images', '2'])
    pictures.main()
    pngs = sorted(p.name for p in (tmp_path / 'pics').iterdir())
    assert pngs == sorted({picture_file(arm_name(r, study)) for r in rows})
    assert len(pngs) == 3
    grid = mmcv.imread(str(tmp_path / 'pics' / pngs[0]))
    assert grid.shape == (2 * 64, 4 * 64, 3)  # no UperNet: 4 tiles
    assert len({mmcv.imread(str(tmp_path / 'pics' / p)).tobytes()
                for p in pngs}) == 3  # the arms' pictures differ
    # a readout fine-tuned at seed 0 only is compared at that seed alone
    for name in ('simclr_baseline_s0', 'simclr_mrcl_r0.2_a0.01_l0.01_s0'):
        run_dir = work / study.name / name
        folds = load_areas(str(run_dir / 'dense_areas.pt'))['knn_b1_t0.02']
        save_areas(str(run_dir / 'linear_areas.pt'),
                   {'test': dict(areas=folds)})
    found = compare(read_rows(str(work / f'{study.name}.csv')), study,
                    str(work / study.name), bootstrap=20)
    seeds = {(r['arm'], r['reference'], r['figure']): r['seeds']
             for r in found}
    assert seeds[('MR-SimCLR', 'SimCLR', 'linear/test')] == 1
    assert seeds[('MR-SimCLR', 'SimCLR', 'knn_b1_t0.02')] == 2
    assert ('SimCLR', 'random init', 'linear/test') not in seeds
    # an instrument run configured otherwise is not taken
    monkeypatch.setitem(PRESETS, instrument.name,
                        dataclasses.replace(instrument, iters=3))
    with pytest.raises(StudyCSVError, match='init_s0 is configured '
                       'differently there'):
        run_study(study, str(work / 'again.csv'), str(work / 'again'),
                  log=lambda _: None)


def test_docs_study_is_what_report_py_writes(tmp_path, monkeypatch):
    """docs/study.md is report.py's output from the CSVs committed beside
    it (its hand-written paragraphs between the sections aside): a table
    edited by hand, or a CSV changed without the report, fails here."""
    docs = os.path.join(ROOT, 'docs')
    shutil.copytree(os.path.join(docs, 'study'), tmp_path / 'docs' / 'study')
    shutil.copy(os.path.join(docs, 'study.md'), tmp_path / 'docs')
    monkeypatch.chdir(tmp_path)
    for preset in ('cifar10-cpu', 'cifar10-long', 'dense', 'camvid'):
        write_report(f'docs/study/{preset}.csv', 'docs/study.md')
    with open(os.path.join(docs, 'study.md')) as f:
        assert (tmp_path / 'docs' / 'study.md').read_text() == f.read()
