"""An fp64 model of MAC_ATTENTION.md §2, §5 and §6 in plain PyTorch, independent of the library:
the oracle the ops are checked against, and helpers that build paged caches for the tests."""
import math

import torch

NEG_INF = float("-inf")


# --- caches ------------------------------------------------------------------------------------

def make_paged(lengths, num_kv_heads, head_dim, page_size, layout="NHD", dtype=torch.float32, spare_pages=3,
               seed=0, device="cpu"):
    """Random K/V for sequences of `lengths`, stored in shuffled pages. Returns
    (k_pages, v_pages, indptr, indices, last_page_len, k_seqs, v_seqs) where k_seqs[b] is the
    sequence's K as [len, Hkv, D] float64 (the values as stored, after rounding to dtype)."""
    g = torch.Generator().manual_seed(seed)
    pages_per = [(n + page_size - 1) // page_size for n in lengths]
    num_pages = sum(pages_per) + spare_pages
    perm = torch.randperm(num_pages, generator=g)
    shape = (num_pages, page_size, num_kv_heads, head_dim) if layout == "NHD" else \
        (num_pages, num_kv_heads, page_size, head_dim)
    k_pages = torch.randn(shape, generator=g).to(dtype)
    v_pages = torch.randn(shape, generator=g).to(dtype)
    indptr, indices, last = [0], [], []
    for n, p in zip(lengths, pages_per):
        indices += perm[indptr[-1]:indptr[-1] + p].tolist()
        indptr.append(indptr[-1] + p)
        last.append(n - (p - 1) * page_size if p else 0)
    i32 = dict(dtype=torch.int32)
    indptr_t, indices_t, last_t = torch.tensor(indptr, **i32), torch.tensor(indices, **i32), torch.tensor(last, **i32)
    k_seqs = gather_pages(k_pages, indptr_t, indices_t, last_t, layout)
    v_seqs = gather_pages(v_pages, indptr_t, indices_t, last_t, layout)
    dev = torch.device(device)
    return (k_pages.to(dev), v_pages.to(dev), indptr_t.to(dev), indices_t.to(dev), last_t.to(dev), k_seqs, v_seqs)


def gather_pages(pages, indptr, indices, last, layout="NHD"):
    """Per sequence, its tokens as [len, Hkv, D] float64 (pages may be strided views)."""
    out = []
    for b in range(len(indptr) - 1):
        rows = []
        for j, p in enumerate(indices[indptr[b]:indptr[b + 1]].tolist()):
            page = pages[p].double().cpu()
            if layout == "HND":
                page = page.transpose(0, 1)
            n = int(last[b]) if j == int(indptr[b + 1]) - int(indptr[b]) - 1 else page.shape[0]
            rows.append(page[:n])
        out.append(torch.cat(rows) if rows else pages.new_zeros((0,) + pages.shape[2:]).double().cpu())
    return out


# --- attention states (§2) ---------------------------------------------------------------------

def attend(q, k, v, lo, hi, scale):
    """State (o [D], lse) of one query q [D] over keys [lo, hi) of k, v [len, D], fp64."""
    if hi <= lo:
        return torch.zeros(q.shape[-1], dtype=torch.float64), NEG_INF
    s = (k[lo:hi].double() @ q.double()) * scale
    lse = torch.logsumexp(s, 0)
    return torch.softmax(s, 0) @ v[lo:hi].double(), float(lse)


def merge(a, b):
    (o1, l1), (o2, l2) = a, b
    if l1 == NEG_INF:
        return b
    if l2 == NEG_INF:
        return a
    m = max(l1, l2)
    w1, w2 = math.exp(l1 - m), math.exp(l2 - m)
    return (w1 * o1.double() + w2 * o2.double()) / (w1 + w2), m + math.log(w1 + w2)


def entry_end(p, rect_offset):
    return max(p + 1 - rect_offset, 0)


# --- decode steps (§5) -------------------------------------------------------------------------

def exact(q, k, v, scale):
    """q [Hq, D], k, v [len, Hkv, D] -> out [Hq, D], lse [Hq] (fp64)."""
    hq, hkv = q.shape[0], k.shape[1]
    outs, lses = [], []
    for h in range(hq):
        o, l = attend(q[h], k[:, h // (hq // hkv)], v[:, h // (hq // hkv)], 0, k.shape[0], scale)
        outs.append(o)
        lses.append(l)
    return torch.stack(outs), torch.tensor(lses, dtype=torch.float64)


def mac_step(q, q_pre, k, v, ring, window, rect_offset, tau, front_sinks, min_context, scale):
    """One MAC decode step of one sequence. ring: dict of fp64 qring [W, Hq, D], oring [W, Hq, D],
    lring [W, Hq], position, ready; updated in place. Returns out [Hq, D], lse [Hq], hit [Hq],
    matched [Hq]."""
    hq, d = q.shape
    g = hq // k.shape[1]
    t = k.shape[0] - 1
    new_end = entry_end(t, rect_offset)
    thr = 2 * d * (1 - tau) ** 2
    F = front_sinks
    if not ring["ready"] or ring["position"] != t:  # stale: wipe
        ring["qring"].zero_()
        ring["oring"].zero_()
        ring["lring"].fill_(NEG_INF)
    outs, lses, hits, matched = [], [], [], []
    new_rows = []
    for h in range(hq):
        kh, vh = k[:, h // g], v[:, h // g]
        best, best_p = math.inf, -1
        if t >= min_context:
            for p in range(max(0, t - window), t):  # oldest first: ties go to the oldest
                dist = float(((q_pre[h].double() - ring["qring"][p % window, h]) ** 2).sum())
                if dist < best:
                    best, best_p = dist, p
        hit = False
        if best_p >= 0:
            m = best_p
            lm = float(ring["lring"][m % window, h])
            em = entry_end(m, rect_offset)
            hit = best < thr and math.isfinite(lm) and (F == 0 or em >= F) and 0 <= new_end - em <= window
        if hit:
            entry = merge((ring["oring"][m % window, h], lm), attend(q[h], kh, vh, em, new_end, scale))
            start = em
        else:
            start = min(F, new_end)
            entry = attend(q[h], kh, vh, start, new_end, scale)
        new_rows.append(entry)
        out = entry
        if F > 0:
            out = merge(out, attend(q[h], kh, vh, 0, min(F, start), scale))
        out = merge(out, attend(q[h], kh, vh, new_end, t + 1, scale))
        outs.append(out[0])
        lses.append(out[1])
        hits.append(int(hit))
        matched.append(best_p)
    slot = t % window
    for h, (o, l) in enumerate(new_rows):
        ring["qring"][slot, h] = q_pre[h].double()
        ring["oring"][slot, h] = o
        ring["lring"][slot, h] = l
    ring["position"], ring["ready"] = t + 1, 1
    return torch.stack(outs), torch.tensor(lses, dtype=torch.float64), hits, matched


def prefix_state(q, k, v, p, rect_offset, front_sinks, scale):
    """The ring entry of position p for one head: state over [min(F, E(p)), E(p)) (§4, §6)."""
    e = entry_end(p, rect_offset)
    return attend(q, k, v, min(front_sinks, e), e, scale)
