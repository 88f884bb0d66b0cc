"""tools/cuda/kernel_sizes.py: its ELF section reader on images made up here (every byte known),
its comparison of two builds (changed, new, gone, same; a kernel that gained a parameter is the
same kernel), its refusals, and, where nvcc is installed, a real cubin."""
import shutil
import struct

import pytest

import tool_script

SCRIPT = tool_script.ROOT / "tools" / "cuda" / "kernel_sizes.py"


def load_module():
    return tool_script.load(SCRIPT)


def make_elf(sections):
    """An ELF64 little-endian image whose sections are [(name, bytes)] after the null section,
    with the section-name table last."""
    names = b"\0"
    offsets = []
    for name, _ in sections:
        offsets.append(len(names))
        names += name.encode() + b"\0"
    shstr_name = len(names)
    names += b".shstrtab\0"
    body = b""
    placed = []
    for _, data in sections:
        placed.append((64 + len(body), len(data)))
        body += data
    names_at = 64 + len(body)
    body += names
    shoff = 64 + len(body)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    count = len(sections) + 2
    struct.pack_into("<HHH", header, 0x3A, 64, count, count - 1)
    table = bytes(64)  # the null section
    for (off, size), name_off in zip(placed, offsets):
        table += struct.pack("<IIQQQQIIQQ", name_off, 1, 6, 0, off, size, 0, 0, 1, 0)
    table += struct.pack("<IIQQQQIIQQ", shstr_name, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    return bytes(header) + body + table


def test_text_sections_reads_names_and_code():
    m = load_module()
    image = make_elf([(".text._Z3fooi", b"\x01\x02\x03\x04"), (".data", b"xx"), (".text._Z3barv", b"\xaa" * 16)])
    assert m.text_sections(image) == [("_Z3fooi", b"\x01\x02\x03\x04"), ("_Z3barv", b"\xaa" * 16)]


def test_text_sections_refuses_bad_images():
    m = load_module()
    with pytest.raises(ValueError, match="not a 64-bit little-endian ELF"):
        m.text_sections(b"\x7fELF\x01\x01" + bytes(60))
    image = bytearray(make_elf([(".text.k", b"\x00" * 8)]))
    struct.pack_into("<Q", image, 0x28, len(image))  # section table past the end
    with pytest.raises(ValueError, match="section header table out of bounds"):
        m.text_sections(bytes(image))


def test_compare_statuses():
    m = load_module()
    ns = "macattn::cuda::detail::(anonymous namespace)::"
    before = {
        f"void {ns}scan<1>(int, float*)": b"AAAA",
        f"void {ns}attend<1>(int)": b"BBBB",
        "void gone_kernel(int)": b"C",
        f"void {ns}finish(int)": b"DDDD",
    }
    after = {
        f"void {ns}scan<1>(int, float*, bool)": b"AAAA",  # a new parameter, the same code
        f"void {ns}attend<1>(int)": b"BBBBBB",
        "void new_kernel(int)": b"EE",
        f"void {ns}finish(int)": b"DDDD",
    }
    rows = m.compare(before, after)
    got = {m.short_name(name): (status, b, a) for status, b, a, name in rows}
    assert got == {
        "attend<1>": ("changed", 4, 6),
        "new_kernel": ("new", 0, 2),
        "gone_kernel": ("gone", 1, 0),
        "finish": ("same", 4, 4),
        "scan<1>": ("same", 4, 4),
    }
    assert [r[0] for r in rows] == ["changed", "new", "gone", "same", "same"]


def test_overloads_stay_apart():
    m = load_module()
    before = {"void k(int)": b"A", "void k(float)": b"B"}
    after = {"void k(int)": b"A", "void k(float)": b"C"}
    rows = {name: status for status, _, _, name in m.compare(before, after)}
    assert rows == {"void k(int)": "same", "void k(float)": "changed"}


def run(args):
    return tool_script.run(SCRIPT, args)


def test_cli_refusals():
    r = run(["--expect-same", "attend", "src/cuda/mac_decode.cu"])
    assert r.returncode == 2 and "--expect-same needs --against REV" in r.stderr
    r = run(["no/such/file.cu"])
    assert r.returncode != 0 and "no such file: no/such/file.cu" in r.stderr
    if shutil.which("git") and (tool_script.ROOT / ".git").exists():
        r = run(["--against", "no-such-revision", str(tool_script.ROOT / "src" / "cuda" / "exact_decode.cu")])
        assert r.returncode != 0 and "--against no-such-revision: not a commit of" in r.stderr


def test_real_cubin(tmp_path):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not on PATH: the cubin build of kernel_sizes.py is not tested here")
    m = load_module()
    source = tmp_path / "two.cu"
    source.write_text("__global__ void small(int* p) { p[0] = 1; }\n"
                      "template <int N> __global__ void big(float* p) { for (int i = 0; i < N; ++i) p[i] *= 2.f; }\n"
                      "template __global__ void big<64>(float*);\n")
    code = m.kernel_code(str(source), "90a", [])
    assert set(code) == {"small(int*)", "void big<64>(float*)"}
    assert all(len(c) > 0 for c in code.values())
    assert len(code["void big<64>(float*)"]) > len(code["small(int*)"])
