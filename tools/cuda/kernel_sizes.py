#!/usr/bin/env python3
"""Machine-code size of every CUDA kernel in the given .cu files, largest first.

A short block's time on the H200 is largely its code being fetched when the code is cold
(tools/bench/probe_icache.cu: straight-line code costs about 2-3 us at 66 KB and 12-30 us at
132 KB; docs/benchmarks/h200.md). This lists each kernel's SASS size (its .text section in a
-cubin build), so a change can be checked for code growth without a GPU:

    python3 tools/cuda/kernel_sizes.py src/cuda/*.cu
    python3 tools/cuda/kernel_sizes.py --filter '128, 2, __nv_bfloat16' src/cuda/mac_decode.cu

Needs nvcc, readelf and c++filt (binutils). Sizes are per template instantiation; only the code a
block executes is fetched, so read them as an upper bound of a block's cold code.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile


def kernel_sizes(source, arch, include_dirs):
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        cmd = ["nvcc", "-std=c++20", "-O3", "--expt-relaxed-constexpr", f"-gencode=arch=compute_{arch},code=sm_{arch}",
               "-cubin", source, "-o", cubin] + [f"-I{d}" for d in include_dirs]
        build = subprocess.run(cmd, capture_output=True, text=True)
        if build.returncode != 0:
            sys.exit(f"kernel_sizes: nvcc failed on {source}:\n{build.stderr}")
        sections = subprocess.run(["readelf", "-SW", cubin], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in sections.splitlines():
        # [Nr] Name Type Address Off Size ...: the size is the sixth field after the name.
        m = re.search(r"\]\s+\.text\.(\S+)\s+\S+\s+\S+\s+\S+\s+([0-9a-f]+)", line)
        if m:
            rows.append((int(m.group(2), 16), m.group(1)))
    names = subprocess.run(["c++filt"], input="\n".join(n for _, n in rows), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return [(size, name) for (size, _), name in zip(rows, names)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help=".cu files (paths relative to the repository root)")
    parser.add_argument("--arch", default="90a", help="SM architecture (default 90a)")
    parser.add_argument("--filter", default="", help="only kernels whose demangled name matches this regex")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    includes = [os.path.join(root, "include"), os.path.join(root, "src")]
    pattern = re.compile(args.filter) if args.filter else None
    for source in args.sources:
        if not os.path.isfile(source):
            sys.exit(f"kernel_sizes: no such file: {source}")
        for size, name in sorted(kernel_sizes(source, args.arch, includes), reverse=True):
            if pattern and not pattern.search(name):
                continue
            short = re.sub(r"macattn::(cuda::detail|engine::gpu|engine)::(\(anonymous namespace\)::)?", "", name)
            short = re.sub(r"\(.*", "", short)
            print(f"{size:8d}  {source}  {short}")


if __name__ == "__main__":
    main()
