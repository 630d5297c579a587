"""docs/extending.md runs as written. Every code block of the page that
starts with a ``# my_project/...`` line is written to that path in a
project laid out as the page says, beside a link to this checkout named
``mrcl_plugin``; then its two commands run from ``my_project/``: the
training command with the page's own smoke-run options (two iterations
of MR-SimSiam with the new mask generator on the real CIFAR-10 sample),
and the check that MR-SimSiam at r = 0 is mmpretrain's SimSiam. Both in
subprocesses, so the example's classes never enter this process's
registries."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mrcl_plugin.checkpoints import load_checkpoint_file

GUIDE = Path(__file__).resolve().parents[1] / 'docs' / 'extending.md'
BLOCK = re.compile(r'^```(\w*)\n(.*?)^```', re.S | re.M)


def blocks(kind=None):
    return [body for lang, body in BLOCK.findall(GUIDE.read_text())
            if kind is None or lang == kind]


def commands():
    """The page's shell commands, each a list of words."""
    return [shlex.split(line) for body in blocks('bash')
            for line in body.splitlines() if line.startswith('PYTHONPATH=.')]


def smoke_options():
    """The --cfg-options the page gives for a smoke run."""
    text = ' '.join(GUIDE.read_text().split())
    found = re.search(r'For a smoke run of .*?add `(--cfg-options [^`]+)`',
                      text)
    assert found, 'docs/extending.md no longer gives its smoke-run options'
    return found.group(1).split()


@pytest.fixture(scope='module')
def project(tmp_path_factory, repo_root):
    """The page's layout: ``mrcl_plugin`` (this checkout) beside
    ``my_project`` with the page's files in it."""
    root = tmp_path_factory.mktemp('extending')
    (root / 'mrcl_plugin').symlink_to(repo_root)
    written = []
    for body in blocks('python'):
        first, _, rest = body.partition('\n')
        path = re.fullmatch(r'# (my_project/\S+)', first)
        if path:
            (root / path.group(1)).parent.mkdir(parents=True, exist_ok=True)
            (root / path.group(1)).write_text(rest)
            written.append(path.group(1))
    assert sorted(written) == [
        'my_project/check_mr_simsiam.py',
        'my_project/configs/mr-simsiam_vit-tiny-p4_inner-mask_cifar10.py',
        'my_project/my_mrcl/__init__.py',
    ]
    return root / 'my_project'


def run(words, cwd, data_root):
    """A ``PYTHONPATH=. python ...`` line of the page, in ``cwd``."""
    env = dict(os.environ, MRCL_DATA=str(data_root))
    assert words[0] == 'PYTHONPATH=.'
    env['PYTHONPATH'] = '.'
    proc = subprocess.run(words[1:], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


def test_the_guide_trains_mr_simsiam_with_the_new_mask_generator(
        project, data_root):
    train, _ = commands()
    assert train[-2].endswith('tools/train.py')
    log = run(train + smoke_options(), project, data_root)
    for term in ('loss_contrastive', 'loss_rec_masked', 'loss_rec_unmasked'):
        assert re.search(term + r': -?\d', log), term
    config = Path(train[-1]).stem
    checkpoint = project / 'work_dirs' / config / 'iter_2.pth'
    saved = load_checkpoint_file(str(checkpoint))
    mrcl = saved['meta']['mrcl']
    assert mrcl['type'] == 'MRSimSiam' and mrcl['learner'] == 'simsiam'
    assert mrcl['mask_generator'] == 'InnerMaskGenerator'
    assert mrcl['mask_ratio'] == pytest.approx(0.2)
    # SimSiam's predictor, trained as the head
    assert any(k.startswith('head.predictor.') for k in saved['state_dict'])


def test_the_guides_check_of_mr_simsiam_against_simsiam_passes(
        project, data_root):
    _, check = commands()
    assert check[-1] == 'check_mr_simsiam.py'
    assert 'MR-SimSiam at r = 0 is SimSiam' in run(check, project, data_root)


def test_the_guide_quotes_the_learners_table_as_it_is():
    table = next(body for body in blocks('') if 'LEARNERS = {' in body)
    source = (GUIDE.parents[1] / 'mrcl_plugin/models/algorithms/'
              '__init__.py').read_text()
    assert table.strip() in source
