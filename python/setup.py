"""Builds macattn_torch: the macattn library (CMake, static) and the torch extension over it.

    pip install --no-build-isolation ./python        # from the repository root

Environment:
  MACATTN_TORCH_CUDA   auto (default: CUDA kernels when torch has CUDA and nvcc is found), 1, 0
  MACATTN_CUDA_ARCHS   CMAKE_CUDA_ARCHITECTURES for the library's kernels (default 90a: H100/H200)
  MAX_JOBS             parallel compile jobs (default 2)
  MACATTN_BUILD_DIR    an existing CMake build of the library to link (its libmacattn.a and
                       include/); CUDA kernels then follow that build's MACATTN_WITH_CUDA
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from torch.utils import cpp_extension

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the macattn repository: CMakeLists.txt, include/, src/


def prebuilt_dir():
    d = os.environ.get("MACATTN_BUILD_DIR")
    if not d:
        return None
    d = Path(d).resolve()
    if not (d / "libmacattn.a").exists() or not (d / "include" / "macattn" / "version.hpp").exists():
        sys.exit(f"MACATTN_BUILD_DIR={d}: no libmacattn.a and include/macattn/version.hpp there (cmake --build it first)")
    return d


def want_cuda() -> bool:
    import torch

    pre = prebuilt_dir()
    if pre is not None:
        built = "#define MACATTN_WITH_CUDA 1" in (pre / "include" / "macattn" / "version.hpp").read_text()
        return built and torch.version.cuda is not None
    mode = os.environ.get("MACATTN_TORCH_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"MACATTN_TORCH_CUDA={mode!r}: must be auto, 0 or 1")

    have = torch.version.cuda is not None and (shutil.which("nvcc") or cpp_extension.CUDA_HOME)
    if mode == "1" and not have:
        sys.exit("MACATTN_TORCH_CUDA=1 but torch has no CUDA or no nvcc/CUDA_HOME was found")
    return mode == "1" or (mode == "auto" and bool(have))


def build_library(cuda: bool) -> Path:
    """Configures and builds libmacattn.a (position-independent) with CMake; returns the build dir."""
    if not (ROOT / "include" / "macattn" / "attention.hpp").exists():
        sys.exit(f"macattn sources not found under {ROOT}: build from a checkout (pip install ./python)")
    build = HERE / "build" / ("lib-cuda" if cuda else "lib-cpu")
    jobs = os.environ.get("MAX_JOBS", "2")
    config = [
        "cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        "-DMACATTN_BUILD_TESTS=OFF", "-DMACATTN_BUILD_TOOLS=OFF", "-DMACATTN_BUILD_ENGINE=OFF",
        f"-DMACATTN_CUDA={'ON' if cuda else 'OFF'}",
    ]
    if cuda:
        config.append(f"-DCMAKE_CUDA_ARCHITECTURES={os.environ.get('MACATTN_CUDA_ARCHS', '90a')}")
    subprocess.check_call(config)
    subprocess.check_call(["cmake", "--build", str(build), "--target", "macattn_static", "-j", jobs])
    return build


class BuildExt(cpp_extension.BuildExtension):
    def run(self):
        build = prebuilt_dir() or build_library(CUDA)
        for ext in self.extensions:
            ext.include_dirs += [str(ROOT / "include"), str(build / "include")]
            ext.extra_objects.append(str(build / "libmacattn.a"))
        super().run()


CUDA = want_cuda()
sources = [f"csrc/{name}.cpp" for name in ("ops", "common", "cpu_ops", "cuda_ops")]
# -Wno-unused-parameter: torch's own headers trip it under -Wextra.
cxx_flags = ["-std=c++20", "-O2", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
Extension = cpp_extension.CUDAExtension if CUDA else cpp_extension.CppExtension
ext = Extension(
    "macattn_torch._C",
    sources,
    extra_compile_args={"cxx": cxx_flags + (["-DMACATTN_TORCH_WITH_CUDA=1"] if CUDA else []), "nvcc": []},
    # On compilers that link libstdc++ statically into shared objects, build with the system
    # compiler instead (python/README.md: CC=gcc CXX=g++ LDSHARED="g++ -shared").
    extra_link_args=["-fopenmp"],
)

setup(
    name="macattn_torch",
    version="0.1.0",
    description="PyTorch ops for macattn (MAC-Attention decode): CPU and CUDA, torch.compile ready",
    packages=["macattn_torch"],
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=shutil.which("ninja") is not None)},
    python_requires=">=3.9",
)
