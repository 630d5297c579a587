#!/usr/bin/env bash
# Creates .venv/ in the repo root with the pinned OpenMMLab stack, mmcv 2.1.0 built
# from source with its compiled ops (CUDA ops where nvcc, a CUDA torch and a GPU
# are there, CPU ops elsewhere: tools/mmcv_ops_choice.sh), and this plugin
# (editable). Idempotent: a second run only checks what is there. Pins and the
# reasons for them: requirements/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
MMCV_VERSION=2.1.0
CACHE=${MRCL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mrcl_plugin}

t0=$SECONDS
step() { echo "[setup +$((SECONDS - t0))s] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
    step "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi

step "build tools (setuptools with pkg_resources, wheel, ninja)"
$PIP install -q -r requirements/build.txt

step "torch + torchvision (matching pair; takes ~2 min the first time)"
$PIP install -q -r requirements/torch.txt
TORCH=$($VENV/bin/python -c 'import torch; print(torch.__version__)')
step "torch $TORCH"

. tools/mmcv_ops_choice.sh
mmcv_ops_choice "$VENV/bin/python"
step "mmcv ops: $MMCV_OPS_WHY"
# pip's own wheel cache is keyed by the sdist only, so a wheel built against another
# torch would be silently reused and then fail to import. Our cache is keyed on torch
# and on the ops (a CPU-ops wheel is not reused where the CUDA ops are wanted).
mmcv_ok() { $VENV/bin/python -c "import mmcv; from mmcv.ops import get_compiling_cuda_version as cuda
assert mmcv.__version__ == '$MMCV_VERSION'
assert (cuda() != 'not available') == ('$MMCV_OPS' == 'cuda')" 2>/dev/null; }
if mmcv_ok; then
    step "mmcv $MMCV_VERSION with $MMCV_OPS ops already installed"
else
    WHEELS="$CACHE/mmcv-$MMCV_VERSION-torch-$TORCH-$MMCV_OPS_KEY"
    if ! ls "$WHEELS"/mmcv-*.whl >/dev/null 2>&1; then
        step "building mmcv $MMCV_VERSION with $MMCV_OPS ops from source (CPU ops: about 5.5 min on 2 cores)"
        BUILD=$(mktemp -d)
        $PIP download -q --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$BUILD"
        tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
        # torch>=2.10 headers refuse anything older than C++20 ("C++20 or later
        # compatible compiler is required to use ATen"); mmcv 2.1 forces c++14/17.
        sed -i -E "s/-std=c\+\+1[47]/-std=c++20/g" "$BUILD/mmcv-$MMCV_VERSION/setup.py"
        mkdir -p "$WHEELS"
        # shellcheck disable=SC2086  # NAME=value words
        env $MMCV_BUILD_ENV MAX_JOBS=${MAX_JOBS:-2} CFLAGS=-g0 \
            $PIP wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$BUILD/mmcv-$MMCV_VERSION"
        rm -rf "$BUILD"
    fi
    step "installing mmcv from $WHEELS"
    $PIP install -q --no-deps --force-reinstall "$WHEELS"/mmcv-*.whl
fi

step "OpenMMLab stack (mmengine, mmpretrain, mmseg, mmdet) and pinned deps"
# mmcv is installed already; a pinned constraint keeps pip from replacing it.
echo "mmcv==$MMCV_VERSION" > "$VENV/mmcv-constraint.txt"
$PIP install -q -r requirements/openmmlab.txt -c requirements/torch.txt -c "$VENV/mmcv-constraint.txt"
# mmcv's own runtime deps (it was installed with --no-deps).
$PIP install -q addict packaging Pillow pyyaml yapf -c requirements/openmmlab.txt

step "openmim without opendatalab/openxlab (they pin an old setuptools), timm without its hub deps, pytest"
$PIP install -q --no-deps -r requirements/tests.txt
$PIP install -q pytest -c requirements/tests.txt

step "mrcl_plugin (editable, with mim's .mim stubs of configs/ and tools/: setup.py)"
# Earlier versions of this script linked <site-packages>/mrcl_plugin to the
# checkout; pip would now write the .mim stubs through that link, over the
# checkout's own configs. Remove the link first.
SITE=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ -L "$SITE/mrcl_plugin" ]; then rm "$SITE/mrcl_plugin"; fi
$PIP install -q --no-deps --no-build-isolation -e .

step "checking the stack imports and mmcv's compiled ops load"
# Here, not right after installing the wheel: mmcv imports mmengine, which
# is only installed above.
mmcv_ok || { echo "error: the mmcv wheel in ${WHEELS:-.venv} is not a build with $MMCV_OPS ops: remove it and run again" >&2; exit 1; }
$VENV/bin/python - <<'PY'
import torch, torchvision, mmcv, mmcv.ops, mmengine, mmpretrain, mmseg, mmdet, mrcl_plugin
print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| mmcv', mmcv.__version__,
      '(ops compiled for CUDA: %s)' % mmcv.ops.get_compiling_cuda_version(),
      '| mmengine', mmengine.__version__, '| mmpretrain', mmpretrain.__version__,
      '| mmseg', mmseg.__version__, '| mmdet', mmdet.__version__)
PY
step "done"
