"""The commands quoted in README.md and docs/get_started.md run as
written, shrunk only where the pages say how; and the project's tools print
no ``pkg_resources`` deprecation notice.

The docs check runs, each in a subprocess from a scratch folder (so that
``work_dirs/`` is its own), after checking that the page still quotes the
command word for word (``python`` is this environment's):

- get_started: ``python tools/train.py CONFIG [--resume] [--amp]
  [--cfg-options k=v ...]`` on the small CIFAR-10 config with ``--amp``
  and the page's smoke-run options (two iterations at batch 8); the
  commands below use its work dir and checkpoint;
- README: ``python tools/model_converters/mrcl2mmpretrain.py
  work_dirs/mrcl/epoch_600.pth encoder.pth`` on that checkpoint, and
  ``python tools/analysis_tools/results.py work_dirs/``;
- get_started: ``knn_eval.py CONFIG CHECKPOINT`` with the page's
  ``--per-class``/``--test-per-class`` for a first look, and
  ``visualize_reconstruction.py CONFIG CHECKPOINT --out rec.png
  --mask-ratio 0.5``;
- get_started: ``bash tools/sweeps/stl10_ablations.sh barlowtwins``, which
  prints its 18 commands;
- README: ``mim search mrcl_plugin``;
- get_started: ``.venv/bin/python -m pytest --collect-only -q tests |
  tail -1``;
- get_started's own-config example, written where the page's layout puts
  it beside a link to this checkout, loaded with mmengine's
  ``Config.fromfile`` and built; its two logging blocks, merged onto the
  small config: they keep ``LocalVisBackend`` and name mmengine's
  backends (TensorBoard itself is not installed here);
- every relative link of both pages, headings included, resolves;
  CITATION.cff holds this version and the README's BibTeX authors.

It leaves out, and why:

- ``bash tools/setup.sh && bash tools/demo.sh``: about 8 minutes each
  (.ci/run runs the set-up, tests/test_setup_script.py its choice of
  mmcv's ops; get_started's figures come from these runs);
  ``.venv/bin/python -m pytest tests``: this suite;
- ``tools/dist_train.sh ... 8``, ``mim train mrcl_plugin ... --gpus 8``,
  ``mim train mmpretrain ...``, the STL-10 sweep's training command and
  the linear probe: 8 GPUs on ImageNet or STL-10 (tests/test_config_matrix.py
  starts every config through these launchers, shrunk, on the samples;
  tests/test_install.py runs ``mim train mrcl_plugin`` by name);
- ``tools/benchmarks/mmsegmentation/ade20k.sh``,
  ``tools/benchmarks/mmdetection/coco.sh``: GPUs (tests/test_transfer_*.py
  run their configs shrunk on the CPU);
- ``benchmark_compile.py --device cuda --noise-floor``: a GPU;
- ``pip install -r requirements/deepspeed.txt``, ``pip install -e
  '.[tensorboard]'``, ``pip install wandb``, ``tensorboard --logdir``:
  installs, and a server.

The tools' check: mmengine's ``Config.fromfile`` imports ``pkg_resources``
to resolve ``mmpretrain::`` bases, setuptools warns on that import, and
each tool that reads a config filters exactly that message. Each case runs
a tool on a config under ``-X importtime``, so that the test sees that
``pkg_resources`` was imported in that run (the warning's cause) and that
its warning was not printed.
"""
import os
import re
import subprocess
import sys

import pytest
import torch

from mrcl_testing import DATA, ROOT

SMALL = ROOT / ('configs/mrcl/'
                'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
WARNING = 'pkg_resources is deprecated'


def imported_modules(stderr: str) -> set:
    """The modules ``-X importtime`` lists."""
    return {
        line.rsplit('|', 1)[-1].strip()
        for line in stderr.splitlines() if line.startswith('import time:')
    }


def python(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, MRCL_DATA=str(DATA))
    env.pop('PYTHONWARNINGS', None)
    return subprocess.run(
        [sys.executable, '-X', 'importtime', *map(str, args)], cwd=cwd,
        env=env, capture_output=True, text=True, timeout=120)


def test_config_reading_still_warns_without_a_filter():
    """The control: without the tools' filter, reading the config warns,
    so the cases below can fail. (When setuptools drops pkg_resources this
    fails: then the filters can go.)"""
    proc = python('-c', 'from mmengine.config import Config; '
                  f'Config.fromfile({str(SMALL)!r})')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'pkg_resources' in imported_modules(proc.stderr)
    assert WARNING in proc.stderr


@pytest.mark.parametrize('tool, extra', [
    ('tools/test.py', []),
    ('tools/analysis_tools/dense_eval.py',
     ['--data-root', DATA / 'coco_semseg_ade_layout']),
    ('tools/analysis_tools/knn_eval.py', []),
    ('tools/analysis_tools/visualize_reconstruction.py',
     ['--out', 'unused.png']),
])
def test_tool_reads_a_config_without_the_pkg_resources_warning(
        tmp_path, tool, extra):
    # an empty checkpoint: each tool reads the config, then stops with one
    # line (test.py: a pretraining config has no test_dataloader;
    # dense_eval.py: the checkpoint holds no encoder)
    checkpoint = tmp_path / 'empty.pth'
    torch.save({'state_dict': {}, 'meta': {}}, checkpoint)
    proc = python(tool, SMALL, checkpoint, *extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r'^error: ', proc.stdout + proc.stderr, re.M), out[-2000:]
    assert 'pkg_resources' in imported_modules(proc.stderr), out[-2000:]
    assert WARNING not in out


def test_study_tools_read_configs_without_the_pkg_resources_warning(
        tmp_path):
    """The study's tools share runner.py's filter: the instrument check
    reads its preset's configs, then stops in one line (no kept weights)."""
    proc = python('tools/study/instrument.py', '--preset',
                  'micro-camvid-instrument', '--work-dir', tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r'^error: no kept weights of init_s0', out, re.M), \
        out[-2000:]
    assert 'pkg_resources' in imported_modules(proc.stderr), out[-2000:]
    assert WARNING not in out


# The docs check ------------------------------------------------------------

PAGES = {'README': ROOT / 'README.md',
         'get_started': ROOT / 'docs' / 'get_started.md'}
FENCE = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)


def blocks(page: str, lang=None) -> list:
    return [body for kind, body in FENCE.findall(PAGES[page].read_text())
            if lang is None or kind == lang]


def quoted(page: str, line: str) -> list:
    """``line``, which must be a line of a code block of ``page`` or a code
    span of its text, as the words to run: ``python`` and
    ``.venv/bin/python`` are this environment's, ``tools/...`` this
    checkout's."""
    lines = {l.strip() for body in blocks(page) for l in body.splitlines()}
    spans = set(re.findall(r'`([^`]+)`', text(page)))
    assert line in lines | spans, \
        f'{PAGES[page].name} no longer quotes: {line}'
    words = line.split()
    words[0] = {'python': sys.executable,
                '.venv/bin/python': sys.executable}.get(words[0], words[0])
    return [str(ROOT / w) if w.startswith('tools/') else w for w in words]


def text(page: str) -> str:
    """The page's prose (its code blocks left out), on one line."""
    return ' '.join(FENCE.sub('', PAGES[page].read_text()).split())


def smoke_options() -> list:
    """get_started's smoke-run options for a small config."""
    found = re.search(r'A smoke run of a small config, .*?`(--cfg-options '
                      r'[^`]+)`', text('get_started'))
    assert found, 'get_started.md no longer gives its smoke-run options'
    return found.group(1).split()


def run(words, cwd, timeout=120) -> str:
    env = dict(os.environ, MRCL_DATA=str(DATA))
    env.pop('PYTHONWARNINGS', None)
    proc = subprocess.run(list(map(str, words)), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{words}\n{out[-3000:]}'
    return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """get_started's ``python tools/train.py CONFIG [--resume] [--amp]
    [--cfg-options k=v ...]`` on the small CIFAR-10 config, with --amp and
    the page's smoke-run options, in a scratch folder: its work_dirs/ and
    the checkpoint."""
    cwd = tmp_path_factory.mktemp('docs')
    cmd = quoted('get_started', 'python tools/train.py CONFIG [--resume] '
                 '[--amp] [--cfg-options k=v ...]')
    run(cmd[:2] + [SMALL, '--amp'] + smoke_options(), cwd, timeout=300)
    checkpoint = cwd / 'work_dirs' / SMALL.stem / 'iter_2.pth'
    assert checkpoint.is_file()
    return cwd, checkpoint


def test_readme_converter_and_results_commands(trained):
    cwd, checkpoint = trained
    cmd = quoted('README', 'python tools/model_converters/mrcl2mmpretrain.py '
                 'work_dirs/mrcl/epoch_600.pth encoder.pth')
    out = run([*cmd[:2], checkpoint, cmd[-1]], cwd)
    assert 'strict load into the mmpretrain VisionTransformer: ok' in out
    assert torch.load(cwd / 'encoder.pth', weights_only=True)['meta'][
        'learner'] == 'barlowtwins'

    out = run(quoted('README',
                     'python tools/analysis_tools/results.py work_dirs/'), cwd)
    assert SMALL.stem in out


def test_get_started_evaluation_commands(trained):
    cwd, checkpoint = trained
    cmd = quoted('get_started', '.venv/bin/python '
                 'tools/analysis_tools/knn_eval.py CONFIG CHECKPOINT')
    shrink = re.search(r'`(--per-class \d+ --test-per-class \d+)` gives a '
                       'first look', text('get_started'))
    assert shrink, 'get_started.md no longer says how to shrink knn_eval'
    out = run([*cmd[:2], SMALL, checkpoint, *shrink.group(1).split()], cwd)
    assert len(re.findall(r'kNN top-1 \d+\.\d+%', out)) == 2  # random init too

    cmd = quoted('get_started', '.venv/bin/python '
                 'tools/analysis_tools/visualize_reconstruction.py CONFIG '
                 'CHECKPOINT --out rec.png [--mask-ratio 0.5]')
    run([*cmd[:2], SMALL, checkpoint, '--out', 'rec.png', '--mask-ratio',
         '0.5'], cwd)
    assert (cwd / 'rec.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_get_started_sweep_prints_its_18_commands():
    words = quoted('get_started', 'bash tools/sweeps/stl10_ablations.sh '
                   'barlowtwins')
    assert 'prints the 18 commands' in text('get_started')
    out = run(words, ROOT)
    commands = [l for l in out.splitlines()
                if l.startswith('bash tools/dist_train.sh')]
    assert len(commands) == 18 and len(set(commands)) == 18


def test_readme_mim_search_lists_the_metafile(venv_bin):
    assert '`mim search mrcl_plugin` lists them' in text('README')
    out = run([venv_bin / 'mim', 'search', 'mrcl_plugin'], ROOT)
    assert 'config id: mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k' \
        in out


def test_get_started_test_count_command():
    line = ('.venv/bin/python -m pytest --collect-only -q tests | tail -1')
    assert f'`{line}` counts them' in text('get_started')
    out = run(['bash', '-c', line.replace('.venv/bin/python',
                                          sys.executable)], ROOT)
    assert re.fullmatch(r'\d+ tests collected in [\d.]+s\n', out), out


def test_get_started_own_config_example_loads_where_the_page_puts_it(
        tmp_path):
    """The example, written where the page's layout puts it (a project
    beside this checkout, here a link named ``mrcl_plugin``), loads with
    mmengine's Config.fromfile, overrides the inherited model and builds."""
    body = next(b for b in blocks('get_started', 'python')
                if '_base_' in b and 'mrcl_plugin/configs' in b)
    first, _, rest = body.partition('\n')
    path = re.fullmatch(r'# (my_project/\S+\.py)', first).group(1)
    (tmp_path / 'mrcl_plugin').symlink_to(ROOT)
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text(rest)

    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mrcl_plugin  # noqa: F401
    cfg = Config.fromfile(str(tmp_path / path))
    assert cfg.model.type == 'MRSimCLR'  # inherited
    assert cfg.model.backbone.arch == 'b'  # inherited, beside the override
    assert cfg.model.backbone.mask_ratio == 0.1
    assert cfg.model.backbone.mask_generator.type == 'BlockMaskGenerator'
    assert (cfg.model.rec_head.alpha, cfg.model.rec_head.lambd) == (10, 10)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    assert type(model.backbone.mask_generator).__name__ == 'BlockMaskGenerator'


def test_get_started_logging_blocks_name_mmengines_backends(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import VISBACKENDS
    logging = [b for b in blocks('get_started', 'python')
               if 'vis_backends' in b]
    assert len(logging) == 2
    for i, body in enumerate(logging):
        path = tmp_path / f'logging{i}.py'
        path.write_text(f'_base_ = [{str(SMALL)!r}]\n' + body)
        visualizer = Config.fromfile(str(path)).visualizer
        assert visualizer.type == 'UniversalVisualizer'  # inherited
        kinds = [b.type for b in visualizer.vis_backends]
        assert kinds[0] == 'LocalVisBackend' and len(kinds) == 2
        assert all(VISBACKENDS.get(k) is not None for k in kinds)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


@pytest.mark.parametrize('page', list(PAGES))
def test_links_resolve(page):
    source = PAGES[page]
    for target in re.findall(r'\]\(([^)\s]+)\)', source.read_text()):
        if target.startswith(('http://', 'https://')):
            continue
        file, _, anchor = target.partition('#')
        linked = (source.parent / file).resolve() if file else source
        assert linked.exists(), f'{source.name}: {target}'
        if anchor:
            headings = re.findall(r'^#+ (.+)$', linked.read_text(), re.M)
            assert anchor in map(slug, headings), f'{source.name}: {target}'


def test_citation_cff_is_this_version_and_the_readmes_paper():
    import yaml

    from mrcl_plugin import __version__
    cff = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    assert cff['cff-version'] == '1.2.0' and cff['version'] == __version__
    paper = cff['preferred-citation']
    bibtex = next(b for b in blocks('README', 'bibtex'))
    authors = re.search(r'author\s*=\s*\{(.*?)\}', bibtex, re.S).group(1)
    assert [f"{a['family-names']}, {a['given-names']}"
            for a in paper['authors']] == [
                a.strip() for a in ' '.join(authors.split()).split(' and ')]
    assert '2211.09013' in paper['url'] and '2211.09013' in bibtex
