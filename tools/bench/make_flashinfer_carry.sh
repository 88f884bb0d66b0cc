#!/usr/bin/env bash
# Builds .fiw/ (ignored; add `/.fiw/` to .git/info/exclude): what a GPU machine with no network
# needs for FlashInfer's batch decode in tools/bench/torch_side_by_side.py (paged KV, page 16,
# NHD, bf16 q/kv/o, int32 indices, head dim 128, use_cuda_graph=True), in both of its variants:
# the CUDA-core decode kernel (use_tensor_cores=False) and the tensor-core path
# (use_tensor_cores=True: the FA2 batch prefill kernels run with a decode plan).
#
#   .fiw/apache_tvm_ffi-*-cp312-*.whl    the FFI layer FlashInfer's kernels are loaded through
#   .fiw/flashinfer-<ver>-decode.tar.xz   flashinfer-python <ver> (the PyPI wheel), trimmed:
#       every Python module and non-source file of the package (nothing stubbed), and of
#       data/ only what the two JIT modules read or include: csrc/ (batch decode and FA2 batch
#       prefill sources and jinja templates, top-level headers), include/, cccl/libcudacxx;
#       plus data/aot/<uri>/<uri>.so for both modules, compiled HERE for sm_90a (nvcc, no GPU
#       needed), which FlashInfer loads as prebuilt AOT modules instead of compiling:
#         batch_decode_with_kv_cache_dtype_q_bf16_..._head_dim_qk_128_... (CUDA cores), and
#         batch_prefill_with_kv_cache_dtype_q_bf16_..._head_dim_qk_128_..._kv_stride_equal, the
#         FA2 module flashinfer.prefill.get_batch_prefill_module("fa2", ...) loads for the
#         tensor-core decode (bf16 resolves backend "auto" to "fa2" there, not FA3/cuDNN).
#       Left out: the ~390 MB of kernel sources of other ops (FA3/sm90 prefill included),
#       CUTLASS, CUB/Thrust, spdlog, b12x/.
#
# Run here:  tools/bench/make_flashinfer_carry.sh     (prints the size of .fiw/)
# Env: FIW_VERSION (0.7.4), FIW_TVM_FFI (0.1.15.post2), FIW_CACHE (/tmp/fiw: wheel downloads and
# the host-side build), MAX_JOBS (2). Needs python3 with torch (CPU is enough), pip, nvcc 13.x
# (CUDA_HOME or on PATH) and ninja here.
#
# On the device, carry `.fiw` and begin the command with:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/fisite .fiw/*.whl && mkdir -p /tmp/fi && \
#   python3 -m tarfile --filter data -e .fiw/flashinfer-*-decode.tar.xz /tmp/fi && \
#   export PYTHONPATH=/tmp/fisite:/tmp/fi${PYTHONPATH:+:$PYTHONPATH} \
#       FLASHINFER_WORKSPACE_BASE=/tmp/fiws FLASHINFER_CUDA_ARCH_LIST=9.0a \
#       TVM_FFI_CACHE_DIR=/tmp/fiws/tvm-ffi MAX_JOBS=16 || exit;
#
# (If other wheels travel in .whl/, install them in the same pip call or another --target and
# join the PYTHONPATHs.) Check: python3 -c 'import flashinfer; print(flashinfer.__version__)'.
# The prebuilt module loads through tvm_ffi (no nvcc, no torch C++ ABI); should it fail to load,
# FlashInfer logs a warning and compiles it there from the carried sources instead (here on 2 cores:
# 30 s the decode module, 80 s the prefill one). FLASHINFER_DISABLE_JIT=1 turns that fallback into an
# error, to prove that nothing is compiled. Anything other than the shape above (another dtype, head
# dim, sliding window, soft-cap) is JIT-compiled there with nvcc from the carried headers, which works
# only for kernels whose sources were kept (CUDA-core decode, single decode, FA2 batch prefill; also
# the FA2 independent-K/V-stride paged module, loaded only when K and V caches differ in strides).
set -euo pipefail

VER=${FIW_VERSION:-0.7.4}
TVM_FFI=${FIW_TVM_FFI:-0.1.15.post2}
CACHE=${FIW_CACHE:-/tmp/fiw}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/.fiw
PY=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-2}
PIPDL=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

grep -qx '/.fiw/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.fiw/' >>"$ROOT/.git/info/exclude"
mkdir -p "$CACHE/dl312" "$CACHE/dlhost"

# 1. Wheels: flashinfer (pure Python), tvm-ffi for the device (cp312) and for this host's python.
WHL=$(ls "$CACHE"/flashinfer_python-"$VER"-py3-none-any.whl 2>/dev/null || true)
if [ -z "$WHL" ]; then
  $PY -m pip download -q --no-deps -d "$CACHE" "flashinfer-python==$VER"
  WHL=$CACHE/flashinfer_python-$VER-py3-none-any.whl
fi
ls "$CACHE"/dl312/apache_tvm_ffi-"$TVM_FFI"-cp312-*.whl >/dev/null 2>&1 ||
  $PY -m pip download -q "${PIPDL[@]}" -d "$CACHE/dl312" "apache-tvm-ffi==$TVM_FFI"
HOSTSITE=$CACHE/hostsite-$TVM_FFI
if [ ! -d "$HOSTSITE/tvm_ffi" ]; then  # host-only helpers to import flashinfer here (not carried)
  $PY -m pip install -q --no-deps --target "$HOSTSITE" "apache-tvm-ffi==$TVM_FFI" nvidia-ml-py einops tabulate
fi

# 2. The full package, unpacked once (host build + source of the trimmed copy).
FULL=$CACHE/full-$VER
if [ ! -f "$FULL/flashinfer/__init__.py" ]; then
  rm -rf "$FULL" && mkdir -p "$FULL" && (cd "$FULL" && unzip -q "$WHL")
fi

# 3. The two modules, compiled here for sm_90a (as FlashInfer would on an H100/H200), each capped
#    at 20 minutes: the CUDA-core decode module, and the FA2 batch prefill module that the
#    tensor-core decode loads (its "primary" one: K and V caches of equal strides, as ours are).
WS=$CACHE/ws-$VER
URIS=
for KIND in decode prefill; do
  URI=$(cd "$CACHE" && PYTHONPATH="$HOSTSITE:$FULL" FLASHINFER_CUDA_ARCH_LIST=9.0a \
    FLASHINFER_WORKSPACE_BASE="$WS" timeout 1200 nice $PY - "$KIND" <<'EOF'
import sys, torch
from flashinfer.jit.attention.modules import gen_batch_decode_module, _gen_batch_prefill_primary_module
# dtype q, kv, o, index; head dim qk, vo; pos encoding NONE; no sliding window; no soft-cap
# (and, for prefill, no fp16 qk reduction), as decode.py's plan() asks for them.
if sys.argv[1] == "decode":
    spec = gen_batch_decode_module(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32,
                                   128, 128, 0, False, False)
else:
    spec = _gen_batch_prefill_primary_module("fa2", torch.bfloat16, torch.bfloat16, torch.bfloat16,
                                             torch.int32, 128, 128, 0, False, False, False)
if not spec.jit_library_path.exists():
    print("compiling", spec.name, file=sys.stderr)
spec.build()
print(spec.name)
EOF
  )
  URI=$(printf '%s\n' "$URI" | tail -n 1)
  test -f "$WS/.cache/flashinfer/$VER/90a/cached_ops/$URI/$URI.so"
  URIS="$URIS $URI"
done

# 4. The trimmed copy.
STAGE=$CACHE/stage-$VER
rm -rf "$STAGE" && mkdir -p "$STAGE/flashinfer/data/csrc" "$STAGE/flashinfer/data/cccl"
(cd "$FULL" && find flashinfer -path flashinfer/data -prune -o -type f -print |
  grep -vE '\.(cu|cuh|h|hpp|inl|cpp|cc|c|ptx|inc|cubin|so)$' | grep -v '/__pycache__/' |
  tar -cf - -T - | tar -xf - -C "$STAGE")
cp -r "$FULL"/flashinfer_python-"$VER".dist-info "$STAGE/"
cp -r "$FULL/flashinfer/data/include" "$STAGE/flashinfer/data/"
cp -r "$FULL/flashinfer/data/cccl/libcudacxx" "$STAGE/flashinfer/data/cccl/"
(cd "$FULL/flashinfer/data/csrc" && find . -maxdepth 1 -type f \( -name '*.h' -o -name '*.cuh' \
  -o -name 'batch_decode.cu' -o -name 'batch_decode_jit_binding.cu' -o -name 'batch_decode_*.jinja' \
  -o -name 'single_decode*' -o -name 'batch_prefill*' \) ! -name '*mla*' ! -name '*sm90*' \
  -exec cp {} "$STAGE/flashinfer/data/csrc/" \;)
for URI in $URIS; do
  mkdir -p "$STAGE/flashinfer/data/aot/$URI"
  cp "$WS/.cache/flashinfer/$VER/90a/cached_ops/$URI/$URI.so" "$STAGE/flashinfer/data/aot/$URI/"
done

# 5. Check the trimmed copy here: it imports, and both modules resolve to the prebuilt .so files,
#    the prefill one through the getter the tensor-core decode's plan() calls.
(cd "$CACHE" && PYTHONPATH="$HOSTSITE:$STAGE" FLASHINFER_CUDA_ARCH_LIST=9.0a \
  FLASHINFER_WORKSPACE_BASE="$CACHE/ws-check" FLASHINFER_DISABLE_JIT=1 $PY - <<EOF
import torch, flashinfer
from flashinfer.jit.attention.modules import gen_batch_decode_module, _gen_batch_prefill_primary_module
from flashinfer.prefill import get_batch_prefill_module
assert flashinfer.__file__.startswith("$STAGE"), flashinfer.__file__
spec = gen_batch_decode_module(torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32,
                               128, 128, 0, False, False)
assert spec.is_aot, "the prebuilt decode module is not found"
mod = spec.build_and_load()  # loads the .so through tvm_ffi; FLASHINFER_DISABLE_JIT forbids nvcc
print("check: flashinfer", flashinfer.__version__, "imports; AOT decode module loads:",
      [f for f in ("plan", "run") if getattr(mod, f, None) is not None])
args = ("fa2", torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.int32, 128, 128, 0, False, False, False)
assert _gen_batch_prefill_primary_module(*args).is_aot, "the prebuilt prefill module is not found"
tc = get_batch_prefill_module(*args)  # what decode.py's plan() calls with use_tensor_cores=True
print("check: AOT prefill module (tensor-core decode) loads:",
      [f for f in ("plan", "paged_run") if getattr(tc, f, None) is not None])
EOF
)

# 6. Pack.
rm -rf "$OUT" && mkdir -p "$OUT"
cp "$CACHE"/dl312/apache_tvm_ffi-"$TVM_FFI"-cp312-*.whl "$OUT/"
tar -C "$STAGE" --sort=name --owner=0 --group=0 --numeric-owner --exclude=__pycache__ -cf - flashinfer flashinfer_python-"$VER".dist-info |
  xz -T"$MAX_JOBS" -9 >"$OUT/flashinfer-$VER-decode.tar.xz"
ls -l "$OUT"
du -sh --apparent-size "$OUT"
echo "$(du -sb "$OUT" | cut -f1) bytes in .fiw/ (limit for it: 35 MiB = 36700160)"
