"""The metadata is in setup.cfg; this file only gives OpenMMLab's ``mim``
the package's configs and tools in an editable install.

``mim train mrcl_plugin CONFIG`` (and ``mim test``, ``mim run``) look for
``<site-packages>/mrcl_plugin/.mim/{configs,tools}``: next to the package's
dist-info. ``pip install .`` puts them there (setup.cfg's package_data,
through the repo's ``mrcl_plugin/.mim`` links). ``pip install -e .`` is a
PEP 660 editable install: its wheel holds only a path hook and the
dist-info, no package folder (and wheels cannot hold links), so mim finds
nothing ("we can not find the config file in codebase mrcl_plugin"), and
``mim search`` no ``model-index.yml``. For it, the editable wheel below also
holds ``mrcl_plugin/.mim/`` with one stub per tool and config that runs or
inherits the file in this checkout, and a ``model-index.yml`` that imports
the checkout's, so edits take effect at once (a new config or tool needs a
re-install); and it puts this checkout on ``sys.path`` with a ``.pth``
(setuptools' "compat" mode, what the old ``setup.py develop`` did), so that
the package found there is the checkout's, not that stub folder.
"""
import os.path as osp
from glob import glob

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel

ROOT = osp.dirname(osp.abspath(__file__))


def mim_stubs():
    """(path in the wheel, text) of each ``.mim`` stub."""
    yield ('mrcl_plugin/.mim/model-index.yml',
           '# mim stub of an editable install (setup.py)\n'
           f'Import:\n  - {osp.join(ROOT, "model-index.yml")}\n')
    for path in sorted(glob(osp.join(ROOT, 'tools', '**', '*.py'),
                            recursive=True)):
        rel = osp.relpath(path, ROOT)
        yield (f'mrcl_plugin/.mim/{rel}',
               '# mim stub of an editable install (setup.py)\n'
               'import runpy\n'
               f'runpy.run_path({path!r}, run_name="__main__")\n')
    for path in sorted(glob(osp.join(ROOT, 'configs', '**', '*.py'),
                            recursive=True)):
        rel = osp.relpath(path, ROOT)
        if '_base_' not in rel.split(osp.sep):
            yield (f'mrcl_plugin/.mim/{rel}',
                   '# mim stub of an editable install (setup.py)\n'
                   f'_base_ = {path!r}\n')


class _WithMimStubs:
    """An editable strategy of setuptools that also writes the stubs."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        for path, text in mim_stubs():
            wheel.writestr(path, text)


class EditableWheelForMim(editable_wheel):

    def finalize_options(self):
        self.mode = self.mode or 'compat'
        super().finalize_options()

    def _select_strategy(self, name, tag, build_lib):
        return _WithMimStubs(super()._select_strategy(name, tag, build_lib))


setup(cmdclass={'editable_wheel': EditableWheelForMim})
