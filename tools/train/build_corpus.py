#!/usr/bin/env python3
"""Build the training corpus of the macattn reference model from Debian packages.

Everything comes from packages of Debian's main archive (documentation, books and
source code that the packages ship); nothing else is fetched.  Two subcommands:

  build     download the .debs (apt-get download, no install), extract them
            (dpkg-deb -x), collect text files, clean and deduplicate them, split
            off a held-out set of long documents, write
              OUT/train.jsonl, OUT/heldout.jsonl      (text, never committed)
              models/corpus_manifest                  (small, committed)
  tokenize  tokenize train/heldout with the trained tokenizer.json and write the
            token files that travel to the GPU machine (uint16, xz-compressed):
              TOK/train.u16.xz       [BOS] doc [EOS] [BOS] doc [EOS] ...
              TOK/heldout.u16.xz     same layout, held-out documents only
              TOK/heldout.json       offsets/lengths/source of each held-out doc
              TOK/meta.json          counts, tokenizer sha256

Typical use (from the repository root):

  python3 tools/train/build_corpus.py build --out .data/corpus
  python3 tools/train/train_tokenizer.py --corpus .data/corpus/train.jsonl \
      --out models/macattn-ref
  python3 tools/train/build_corpus.py tokenize --corpus .data/corpus \
      --tokenizer models/macattn-ref/tokenizer.json --out .data/tok

The held-out split is chosen per file by a hash of its path (so it is stable
under package updates); held-out files of one package are concatenated in path
order and cut into documents of at least --heldout-doc-bytes bytes, which the
tokenize step keeps only when they are at least 16385 tokens long.
"""
import argparse
import glob
import gzip
import hashlib
import json
import lzma
import os
import re
import subprocess
import sys

# Each source: a Debian package, the files to take from it, and its licence as
# stated by the package's debian/copyright file (usr/share/doc/PKG/copyright).
SOURCES = [
    dict(name="python-docs", package="python3.11-doc", kind="prose",
         globs=["usr/share/doc/python3.11/html/_sources/**/*.rst.txt"],
         licence="PSF-2.0 (Python documentation)", max_bytes=None),
    dict(name="linux-docs", package="linux-doc-6.1", kind="prose",
         globs=["usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz",
                "usr/share/doc/linux-doc-6.1/Documentation/**/*.txt.gz"],
         exclude=[r"/translations/", r"/ABI/"],
         licence="GPL-2.0 (Linux kernel documentation; a few files CC-BY-4.0 or dual-licensed)",
         max_bytes=None),
    dict(name="perl-docs", package="perl-doc", kind="prose",
         globs=["usr/share/perl/*/pod/*.pod"],
         licence="Artistic-1.0 OR GPL-1.0-or-later (Perl)", max_bytes=None),
    dict(name="vim-docs", package="vim-runtime", kind="prose",
         globs=["usr/share/vim/vim*/doc/*.txt"],
         licence="Vim licence (GPL-compatible charityware)", max_bytes=None),
    dict(name="git-docs", package="git-doc", kind="prose",
         globs=["usr/share/doc/git-doc/*.txt", "usr/share/doc/git-doc/**/*.txt"],
         licence="GPL-2.0", max_bytes=None),
    dict(name="gnu-standards", package="gnu-standards", kind="prose",
         globs=["usr/share/doc/gnu-standards/*.text.gz"],
         licence="GFDL-1.3-or-later (no invariant sections)", max_bytes=None),
    dict(name="postgresql-docs", package="postgresql-doc-15", kind="prose",
         globs=["usr/share/doc/postgresql-doc-15/html/*.html"], html=True,
         licence="PostgreSQL (MIT-like)", max_bytes=None),
    dict(name="python-stdlib", package="libpython3.11-stdlib", kind="code",
         globs=["usr/lib/python3.11/**/*.py"],
         licence="PSF-2.0", max_bytes=None),
    dict(name="python-stdlib-min", package="libpython3.11-minimal", kind="code",
         globs=["usr/lib/python3.11/**/*.py"],
         exclude=[r"/encodings/"],
         licence="PSF-2.0", max_bytes=None),
    dict(name="python-tests", package="libpython3.11-testsuite", kind="code",
         globs=["usr/lib/python3.11/test/**/*.py"],
         licence="PSF-2.0", max_bytes=8_000_000),
    dict(name="perl-modules", package="perl-modules-5.36", kind="code",
         globs=["usr/share/perl/*/**/*.pm"],
         licence="Artistic-1.0 OR GPL-1.0-or-later (Perl)", max_bytes=None),
    dict(name="go-src", package="golang-1.19-src", kind="code",
         globs=["usr/share/go-1.19/src/**/*.go"], exclude=[r"/testdata/", r"/vendor/"],
         licence="BSD-3-Clause (Go)", max_bytes=20_000_000),
    dict(name="django", package="python3-django", kind="code",
         globs=["usr/lib/python3/dist-packages/django/**/*.py"],
         licence="BSD-3-Clause (Django)", max_bytes=8_000_000),
    dict(name="vim-scripts", package="vim-runtime", kind="code",
         globs=["usr/share/vim/vim*/**/*.vim"],
         licence="Vim licence (GPL-compatible charityware)", max_bytes=5_000_000),
]

HELDOUT_FRACTION = 0.04      # share of files (by path hash) reserved for evaluation
MAX_HELDOUT_DOCS = 6         # per source
MIN_FILE_BYTES = 400
MAX_FILE_BYTES = 1_500_000


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fetch(cache):
    """apt-get download + dpkg-deb -x every package once; returns {pkg: (root, version, sha256)}."""
    debs = os.path.join(cache, "debs")
    os.makedirs(debs, exist_ok=True)
    out = {}
    for pkg in sorted({s["package"] for s in SOURCES}):
        have = glob.glob(os.path.join(debs, f"{pkg}_*.deb"))
        if not have:
            sh(["apt-get", "download", pkg], cwd=debs)
            have = glob.glob(os.path.join(debs, f"{pkg}_*.deb"))
        deb = sorted(have)[-1]
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        sha = hashlib.sha256(open(deb, "rb").read()).hexdigest()
        root = os.path.join(cache, "x", pkg)
        if not os.path.isdir(root):
            os.makedirs(root + ".tmp", exist_ok=True)
            sh(["dpkg-deb", "-x", deb, root + ".tmp"])
            os.rename(root + ".tmp", root)
        out[pkg] = (root, version, sha)
    return out


def read_text(path):
    data = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text


class _HTMLText(__import__("html.parser").parser.HTMLParser):
    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt",
             "dd", "table", "ul", "ol", "section", "blockquote", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out, self.skip, self.pre = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.out.append("\n\n" if tag != "br" else "\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(text):
    p = _HTMLText()
    p.feed(text)
    lines = [l.strip(" ") if l.strip() else "" for l in "".join(p.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def clean(text):
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"
    return text


def acceptable(text):
    if len(text.encode()) < MIN_FILE_BYTES or len(text.encode()) > MAX_FILE_BYTES:
        return False
    lines = text.split("\n")
    if max(len(l) for l in lines) > 3000:
        return False                     # data tables, minified code
    if len(text) / max(1, len(lines)) > 160:
        return False
    return True


def norm_key(text):
    return hashlib.sha1(re.sub(r"\s+", " ", text).strip().encode()).hexdigest()


def path_hash(s):
    return int(hashlib.sha1(s.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def cmd_build(args):
    pkgs = fetch(args.cache)
    seen = set()
    manifest = dict(description="Corpus of the macattn reference model: text and code shipped by "
                                "Debian (bookworm, main) packages. Rebuild with "
                                "tools/train/build_corpus.py build.",
                    heldout_fraction=HELDOUT_FRACTION, sources=[])
    os.makedirs(args.out, exist_ok=True)
    ftrain = open(os.path.join(args.out, "train.jsonl"), "w")
    fheld = open(os.path.join(args.out, "heldout.jsonl"), "w")
    for src in SOURCES:
        root, version, sha = pkgs[src["package"]]
        files = set()
        for g in src["globs"]:
            files.update(glob.glob(os.path.join(root, g), recursive=True))
        files = sorted(f for f in files if os.path.isfile(f)
                       and not any(re.search(x, f) for x in src.get("exclude", [])))
        # deterministic order for the byte cap: by path hash
        if src["max_bytes"]:
            files.sort(key=lambda f: path_hash(os.path.relpath(f, root)))
        n_train = b_train = n_dup = n_rej = 0
        held = []
        total = 0
        for f in files:
            rel = os.path.relpath(f, root)
            text = read_text(f)
            if text is None:
                n_rej += 1
                continue
            if src.get("html"):
                text = html_to_text(text)
            text = clean(text)
            if not acceptable(text):
                n_rej += 1
                continue
            k = norm_key(text)
            if k in seen:
                n_dup += 1
                continue
            seen.add(k)
            nb = len(text.encode())
            if src["max_bytes"] and total + nb > src["max_bytes"]:
                continue
            total += nb
            if path_hash(src["name"] + ":" + rel) < HELDOUT_FRACTION:
                held.append((rel, text))
            else:
                ftrain.write(json.dumps(dict(source=src["name"], path=rel, text=text)) + "\n")
                n_train += 1
                b_train += nb
        # held-out: concatenate in path order, cut into long documents
        held.sort()
        docs, cur, cur_paths = [], [], []
        for rel, text in held:
            cur.append(text)
            cur_paths.append(rel)
            if sum(len(t.encode()) for t in cur) >= args.heldout_doc_bytes:
                docs.append((cur_paths, "\n".join(cur)))
                cur, cur_paths = [], []
        docs = docs[:MAX_HELDOUT_DOCS]
        for i, (paths, text) in enumerate(docs):
            fheld.write(json.dumps(dict(source=src["name"], id=f"{src['name']}-{i}",
                                        paths=paths, text=text)) + "\n")
        ent = dict(name=src["name"], package=src["package"], version=version,
                   deb_sha256=sha, kind=src["kind"], licence=src["licence"],
                   copyright_file=f"/usr/share/doc/{src['package']}/copyright",
                   globs=src["globs"], exclude=src.get("exclude", []),
                   max_bytes=src["max_bytes"], train_files=n_train, train_bytes=b_train,
                   duplicates_dropped=n_dup, rejected=n_rej,
                   heldout_docs=len(docs), heldout_bytes=sum(len(t.encode()) for _, t in docs))
        manifest["sources"].append(ent)
        print(f"{src['name']:18s} {src['package']:24s} train {n_train:5d} files "
              f"{b_train/1e6:7.2f} MB  dup {n_dup:4d} rej {n_rej:4d}  heldout docs {len(docs)}",
              flush=True)
    ftrain.close()
    fheld.close()
    manifest["train_jsonl_sha256"] = hashlib.sha256(open(os.path.join(args.out, "train.jsonl"), "rb").read()).hexdigest()
    manifest["heldout_jsonl_sha256"] = hashlib.sha256(open(os.path.join(args.out, "heldout.jsonl"), "rb").read()).hexdigest()
    manifest["train_bytes"] = sum(s["train_bytes"] for s in manifest["sources"])
    manifest["heldout_docs"] = sum(s["heldout_docs"] for s in manifest["sources"])
    os.makedirs(os.path.dirname(args.manifest), exist_ok=True)
    old = {}
    if os.path.exists(args.manifest):
        try:
            old = json.load(open(args.manifest))
        except Exception:
            old = {}
    if "tokens" in old:              # keep the token counts written by `tokenize`
        manifest["tokens"] = old["tokens"]
    json.dump(manifest, open(args.manifest, "w"), indent=1)
    print("train", manifest["train_bytes"] / 1e6, "MB; held-out docs", manifest["heldout_docs"])


def cmd_tokenize(args):
    import numpy as np
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(args.tokenizer)
    bos = tok.token_to_id("<|begin_of_text|>")
    eos = tok.token_to_id("<|end_of_text|>")
    assert tok.get_vocab_size() <= 65535
    os.makedirs(args.out, exist_ok=True)

    def encode_docs(path):
        rows = [json.loads(l) for l in open(path)]
        ids = []
        B = 256
        for i in range(0, len(rows), B):
            enc = tok.encode_batch([r["text"] for r in rows[i:i + B]], add_special_tokens=False)
            ids.extend(e.ids for e in enc)
        return rows, ids

    rows, ids = encode_docs(os.path.join(args.corpus, "train.jsonl"))
    per_source = {}
    chunks = []
    for r, x in zip(rows, ids):
        chunks.append(np.array([bos] + x + [eos], dtype=np.uint16))
        per_source[r["source"]] = per_source.get(r["source"], 0) + len(x) + 2
    train = np.concatenate(chunks)
    nbytes_text = sum(len(r["text"].encode()) for r in rows)
    with lzma.open(os.path.join(args.out, "train.u16.xz"), "wb", preset=6) as f:
        f.write(train.tobytes())

    hrows, hids = encode_docs(os.path.join(args.corpus, "heldout.jsonl"))
    index, chunks, off = [], [], 0
    for r, x in zip(hrows, hids):
        if len(x) + 1 < args.min_heldout_tokens:
            continue
        a = np.array([bos] + x, dtype=np.uint16)
        index.append(dict(id=r["id"], source=r["source"], offset=off, length=len(a)))
        chunks.append(a)
        off += len(a)
    held = np.concatenate(chunks)
    with lzma.open(os.path.join(args.out, "heldout.u16.xz"), "wb", preset=6) as f:
        f.write(held.tobytes())
    json.dump(index, open(os.path.join(args.out, "heldout.json"), "w"), indent=1)
    tsha = hashlib.sha256(open(args.tokenizer, "rb").read()).hexdigest()
    meta = dict(train_tokens=int(len(train)), train_docs=len(rows),
                train_bytes=nbytes_text, bytes_per_token=nbytes_text / len(train),
                heldout_tokens=int(len(held)), heldout_docs=len(index),
                tokens_per_source=per_source, tokenizer_sha256=tsha)
    json.dump(meta, open(os.path.join(args.out, "meta.json"), "w"), indent=1)
    if os.path.exists(args.manifest):
        man = json.load(open(args.manifest))
        man["tokens"] = meta
        json.dump(man, open(args.manifest, "w"), indent=1)
    print(json.dumps(meta, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", default=".data/corpus")
    b.add_argument("--cache", default=os.path.expanduser("~/.cache/macattn-corpus"))
    b.add_argument("--manifest", default="models/corpus_manifest")
    b.add_argument("--heldout-doc-bytes", type=int, default=100_000)
    t = sub.add_parser("tokenize")
    t.add_argument("--corpus", default=".data/corpus")
    t.add_argument("--tokenizer", default="models/macattn-ref/tokenizer.json")
    t.add_argument("--out", default=".data/tok")
    t.add_argument("--manifest", default="models/corpus_manifest")
    t.add_argument("--min-heldout-tokens", type=int, default=16385)
    args = ap.parse_args()
    {"build": cmd_build, "tokenize": cmd_tokenize}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
