#!/usr/bin/env python3
"""Machine-code size of every CUDA kernel in the given .cu files, largest first; or, with
--against REV, which kernels' machine code a change altered.

A short block's time on the H200 is largely its code being fetched when the code is cold
(tools/bench/probe_icache.cu: straight-line code costs about 2-3 us at 66 KB and 12-30 us at
132 KB; docs/benchmarks/h200.md). This lists each kernel's SASS size (its .text section in a
-cubin build), so a change can be checked for code growth without a GPU:

    python3 tools/cuda/kernel_sizes.py src/cuda/*.cu
    python3 tools/cuda/kernel_sizes.py --filter '128, 2, __nv_bfloat16' src/cuda/mac_decode.cu

--against REV builds the same files from git revision REV (its src/ and include/) and compares
each kernel's code byte for byte: a switch meant to leave the default path alone should leave
the default kernels identical. A restructured kernel whose new form was off by default still ran
the H200's mixed MAC steps 3.6% slower (h200.md, twenty-fifth session); this finds such changes
before a device call:

    python3 tools/cuda/kernel_sizes.py --against HEAD~1 src/cuda/mac_decode.cu
    python3 tools/cuda/kernel_sizes.py --against c2a9210 --expect-same 'attend|finish' src/cuda/mac_decode.cu

Needs nvcc and c++filt (binutils); --against also git. Sizes are per template instantiation; only
the code a block executes is fetched, so read them as an upper bound of a block's cold code.
"""
import argparse
import io
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile


def text_sections(data):
    """[(name, code)] of the .text.<name> sections of an ELF64 little-endian image (a cubin)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shentsize < 64 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise ValueError("section header table out of bounds")
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]

    def name(offset):
        start = names_at + offset
        end = data.find(b"\0", start)
        if start >= len(data) or end < 0:
            raise ValueError("section name out of bounds")
        return data[start:end].decode("ascii", "replace")

    out = []
    for sh_name, _type, _flags, _addr, offset, size in headers:
        n = name(sh_name)
        if n.startswith(".text."):
            if offset + size > len(data):
                raise ValueError(f"section {n} out of bounds")
            out.append((n[len(".text."):], data[offset:offset + size]))
    return out


def kernel_code(source, arch, include_dirs):
    """{demangled kernel name: its machine code} of one .cu file, built with nvcc -cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        cmd = ["nvcc", "-std=c++20", "-O3", "--expt-relaxed-constexpr", f"-gencode=arch=compute_{arch},code=sm_{arch}",
               "-cubin", source, "-o", cubin] + [f"-I{d}" for d in include_dirs]
        try:
            build = subprocess.run(cmd, capture_output=True, text=True)
        except FileNotFoundError:
            sys.exit("kernel_sizes: nvcc not found (the CUDA toolkit's bin directory must be on PATH)")
        if build.returncode != 0:
            sys.exit(f"kernel_sizes: nvcc failed on {source}:\n{build.stderr}")
        with open(cubin, "rb") as f:
            sections = text_sections(f.read())
    names = subprocess.run(["c++filt"], input="\n".join(n for n, _ in sections), capture_output=True, text=True,
                           check=True).stdout.splitlines()
    # Kernels in anonymous namespaces keep their demangled names across builds (the mangled
    # ones carry a per-build hash).
    return {name: code for name, (_, code) in zip(names, sections)}


def short_name(name):
    short = re.sub(r"macattn::(cuda::detail|engine::gpu|engine)::(\(anonymous namespace\)::)?", "", name)
    return re.sub(r"^void |\(.*", "", short)


def source_tree(root, rev, tmp):
    """src/ and include/ of git revision `rev` (a commit: main checks) unpacked under tmp; returns tmp."""
    archive = subprocess.run(["git", "-C", root, "archive", "--format=tar", rev, "src", "include"],
                             capture_output=True)
    if archive.returncode != 0:
        sys.exit(f"kernel_sizes: git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        try:
            tar.extractall(tmp, filter="data")
        except TypeError:  # Python before 3.11.4 / 3.12: no filters (git's own archive)
            tar.extractall(tmp)
    return tmp


def by_kernel(code):
    """{kernel name without its parameter list: (full name, code)}, so that a kernel that gained
    a parameter is compared with its old form; names that would collide stay whole."""
    keys = {}
    for name in code:
        bare = re.sub(r"\(anonymous namespace\)::", "", name)
        keys.setdefault(bare.split("(", 1)[0], []).append(name)
    out = {}
    for key, names in keys.items():
        for name in names:
            out[key if len(names) == 1 else name] = (name, code[name])
    return out


def compare(before, after):
    """Rows (status, size before, size after, name): changed first, then new, gone, same. A
    kernel whose parameters changed is 'changed' (or 'same', if its code is) under its new name."""
    order = {"changed": 0, "new": 1, "gone": 2, "same": 3}
    b_keyed, a_keyed = by_kernel(before), by_kernel(after)
    rows = []
    for key in set(b_keyed) | set(a_keyed):
        b, a = b_keyed.get(key), a_keyed.get(key)
        status = "new" if b is None else "gone" if a is None else "same" if a[1] == b[1] else "changed"
        name = (a or b)[0]
        rows.append((status, len(b[1]) if b else 0, len(a[1]) if a else 0, name))
    return sorted(rows, key=lambda r: (order[r[0]], short_name(r[3]), r[3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", help=".cu files (paths relative to the repository root)")
    parser.add_argument("--arch", default="90a", help="SM architecture (default 90a)")
    parser.add_argument("--filter", default="", help="only kernels whose demangled name matches this regex")
    parser.add_argument("--against", metavar="REV", help="compare with the same files built from git revision REV")
    parser.add_argument("--expect-same", metavar="REGEX",
                        help="with --against: exit with status 1 if a kernel matching REGEX changed, appeared "
                             "or disappeared")
    args = parser.parse_args()
    if args.expect_same and not args.against:
        parser.error("--expect-same needs --against REV")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    pattern = re.compile(args.filter) if args.filter else None
    expect = re.compile(args.expect_same) if args.expect_same else None
    for source in args.sources:
        if not os.path.isfile(source):
            sys.exit(f"kernel_sizes: no such file: {source}")
    if not args.against:
        for source in args.sources:
            now = kernel_code(source, args.arch, [os.path.join(root, "include"), os.path.join(root, "src")])
            for name, code in sorted(now.items(), key=lambda kv: len(kv[1]), reverse=True):
                if not pattern or pattern.search(name):
                    print(f"{len(code):8d}  {source}  {short_name(name)}")
        return
    # Before any build: a bad revision is named at once.
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--verify", "--quiet", args.against + "^{commit}"],
                             capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("kernel_sizes: git not found (needed for --against)")
    if rev.returncode != 0:
        sys.exit(f"kernel_sizes: --against {args.against}: not a commit of {root}")
    unexpected = 0
    with tempfile.TemporaryDirectory() as tmp:
        tree = source_tree(root, args.against, tmp)  # once, for every file
        for source in args.sources:
            rel = os.path.relpath(os.path.abspath(source), root)
            old_source = os.path.join(tree, rel)
            if not os.path.isfile(old_source):
                sys.exit(f"kernel_sizes: {rel} is not in {args.against}")
            before = kernel_code(old_source, args.arch, [os.path.join(tree, "include"), os.path.join(tree, "src")])
            now = kernel_code(source, args.arch, [os.path.join(root, "include"), os.path.join(root, "src")])
            counts = {}
            for status, size_b, size_a, name in compare(before, now):
                if pattern and not pattern.search(name):
                    continue
                counts[status] = counts.get(status, 0) + 1
                if status != "same":
                    print(f"{status:8s} {size_b:8d} -> {size_a:8d}  {source}  {short_name(name)}")
                if expect and status != "same" and expect.search(name):
                    unexpected += 1
            print(f"{source} against {args.against}: " +
                  ", ".join(f"{counts.get(s, 0)} {s}" for s in ("same", "changed", "new", "gone")))
    if unexpected:
        print(f"kernel_sizes: {unexpected} kernel(s) matching '{args.expect_same}' differ from {args.against}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
