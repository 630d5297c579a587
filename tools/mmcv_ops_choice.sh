# Which of mmcv's compiled ops tools/setup.sh builds: CUDA ops where nvcc and
# a CUDA build of torch of the same CUDA major version are present and there
# is a GPU to build for (one visible, or TORCH_CUDA_ARCH_LIST naming its
# compute capabilities, as on a cluster's login node); the CPU ops elsewhere.
# MRCL_MMCV_OPS=cpu|cuda forces the choice. Sourced by tools/setup.sh and by
# tests/test_setup_script.py (with a fake nvcc and python).
#
# mmcv_ops_choice PYTHON sets
#   MMCV_OPS        cpu | cuda
#   MMCV_BUILD_ENV  NAME=value words for `env` before mmcv's build: FORCE_CUDA,
#                   MMCV_WITH_OPS, and TORCH_CUDA_ARCH_LIST (CUDA) or an empty
#                   CUDA_VISIBLE_DEVICES (CPU: mmcv's setup.py builds CUDA ops
#                   whenever torch sees a GPU, FORCE_CUDA=0 or not)
#   MMCV_OPS_KEY    the wheel cache's key: cpu, or cuda<nvcc version>-sm<archs>
#                   (a wheel built for other GPUs or another CUDA is not reused)
#   MMCV_OPS_WHY    a sentence for the log
mmcv_ops_choice() {
    local python=$1 nvcc_version='' probe torch_cuda gpu_archs
    # torch's CUDA build and the capabilities of the GPUs it sees, e.g.
    # "13.0 9.0;8.0" or "None "
    probe=$("$python" -c 'import torch
archs = {"%d.%d" % torch.cuda.get_device_capability(i)
         for i in range(torch.cuda.device_count())}
print(torch.version.cuda, ";".join(sorted(archs)))' 2>/dev/null) || probe='None '
    torch_cuda=${probe%% *}
    gpu_archs=${probe#* }
    if command -v nvcc >/dev/null 2>&1; then
        nvcc_version=$( (nvcc --version 2>/dev/null || true) |
            sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p')
    fi
    MMCV_OPS=cpu
    if [ "${MRCL_MMCV_OPS:-auto}" = cpu ] || [ "${MRCL_MMCV_OPS:-auto}" = cuda ]; then
        MMCV_OPS=$MRCL_MMCV_OPS
        MMCV_OPS_WHY="MRCL_MMCV_OPS=$MRCL_MMCV_OPS"
    elif [ "${MRCL_MMCV_OPS:-auto}" != auto ]; then
        echo "error: MRCL_MMCV_OPS=$MRCL_MMCV_OPS: expected cpu, cuda or auto" >&2
        return 1
    elif [ "$torch_cuda" = None ]; then
        MMCV_OPS_WHY="torch is a CPU build"
    elif [ -z "$nvcc_version" ]; then
        MMCV_OPS_WHY="torch is built for CUDA $torch_cuda, but no nvcc is on PATH"
    elif [ "${nvcc_version%%.*}" != "${torch_cuda%%.*}" ]; then
        MMCV_OPS_WHY="nvcc $nvcc_version does not match torch's CUDA $torch_cuda (put a CUDA ${torch_cuda%%.*} nvcc on PATH for the CUDA ops)"
    elif [ -z "$gpu_archs" ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        MMCV_OPS_WHY="nvcc $nvcc_version and torch CUDA $torch_cuda, but no GPU is visible (set TORCH_CUDA_ARCH_LIST, e.g. 9.0, to build for one)"
    else
        MMCV_OPS=cuda
        MMCV_OPS_WHY="nvcc $nvcc_version and torch CUDA $torch_cuda"
    fi
    if [ "$MMCV_OPS" = cuda ]; then
        # "8.0 9.0" or "8.0;9.0" -> 8.0;9.0 (one word for env); none: torch
        # builds for every architecture its CUDA knows
        local archs
        archs=$(echo "${TORCH_CUDA_ARCH_LIST:-$gpu_archs}" | tr -s ' ' ';')
        MMCV_BUILD_ENV="FORCE_CUDA=1 MMCV_WITH_OPS=1${archs:+ TORCH_CUDA_ARCH_LIST=$archs}"
        MMCV_OPS_KEY="cuda${nvcc_version:-$torch_cuda}-sm$(echo "${archs:-all}" | tr ';' '_')"
        MMCV_OPS_WHY="CUDA ops for compute capability ${archs:-all}: $MMCV_OPS_WHY"
    else
        MMCV_BUILD_ENV="FORCE_CUDA=0 MMCV_WITH_OPS=1 CUDA_VISIBLE_DEVICES="
        MMCV_OPS_KEY=cpu
        MMCV_OPS_WHY="CPU ops only: $MMCV_OPS_WHY"
    fi
}
