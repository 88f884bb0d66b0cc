/* tools/c_api_check/c_api_check.c: checks the C API from C.
 *
 * Compiled as C99 (so it also proves that macattn/c_api.h is valid C). On a tiny batch it
 * compares, against a double-precision model written out here:
 *   1. exact decode over a contiguous cache and over paged caches (NHD and HND);
 *   2. MAC decode after prefill init, step by step: hits, matched positions and outputs;
 * then checks that bad inputs give a nonzero status and a message. Returns 0 when all pass.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "macattn/c_api.h"

enum { B = 2, HQ = 4, HKV = 2, D = 64, G = HQ / HKV, MAX_LEN = 64 };
enum { W = 8, S = 3, F = 2, PROMPT0 = 20, PROMPT1 = 13, STEPS = 12 };

static int g_failures = 0;
static int g_backend = MACATTN_BACKEND_REFERENCE; /* the backend under check */

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      ++g_failures;                                        \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
  } while (0)

/* ---- deterministic random numbers --------------------------------------------------------- */
static unsigned long long g_rng = 0x9E3779B97F4A7C15ull;
static double uniform01(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return (double)(g_rng >> 11) / 9007199254740992.0;
}
/* Approximately normal (Irwin-Hall of 4), enough for test data. */
static double gauss(void) {
  return (uniform01() + uniform01() + uniform01() + uniform01() - 2.0) * 1.7320508;
}

/* ---- the K/V data: k[b][pos][g][i], fp32 -------------------------------------------------- */
static float g_k[B][MAX_LEN][HKV][D];
static float g_v[B][MAX_LEN][HKV][D];
static int g_len[B];

static void fill_token(int b, int pos) {
  int g, i;
  for (g = 0; g < HKV; ++g) {
    for (i = 0; i < D; ++i) {
      g_k[b][pos][g][i] = (float)gauss();
      g_v[b][pos][g][i] = (float)gauss();
    }
  }
}

/* ---- double-precision attention model ----------------------------------------------------- */
typedef struct {
  double o[D];
  double lse; /* -INFINITY = empty */
} state_d;

static state_d attn_d(const float* q, int b, int g, int lo, int hi, double scale) {
  state_d st;
  double s[MAX_LEN], m = -INFINITY, sum = 0.0;
  int j, i;
  memset(st.o, 0, sizeof st.o);
  st.lse = -INFINITY;
  if (hi <= lo) return st;
  for (j = lo; j < hi; ++j) {
    double dot = 0.0;
    for (i = 0; i < D; ++i) dot += (double)q[i] * (double)g_k[b][j][g][i];
    s[j] = scale * dot;
    if (s[j] > m) m = s[j];
  }
  for (j = lo; j < hi; ++j) {
    const double w = exp(s[j] - m);
    sum += w;
    for (i = 0; i < D; ++i) st.o[i] += w * (double)g_v[b][j][g][i];
  }
  for (i = 0; i < D; ++i) st.o[i] /= sum;
  st.lse = m + log(sum);
  return st;
}

static state_d merge_d(state_d a, state_d c) {
  state_d r;
  double m, wa, wc;
  int i;
  if (a.lse == -INFINITY) return c;
  if (c.lse == -INFINITY) return a;
  m = a.lse > c.lse ? a.lse : c.lse;
  wa = exp(a.lse - m);
  wc = exp(c.lse - m);
  for (i = 0; i < D; ++i) r.o[i] = (wa * a.o[i] + wc * c.o[i]) / (wa + wc);
  r.lse = m + log(wa + wc);
  return r;
}

static int entry_end(int p) {
  return p + 1 - S > 0 ? p + 1 - S : 0;
}
static int imin(int a, int c) {
  return a < c ? a : c;
}

/* Relative L2 distance of a float D-vector to a double one. */
static double rel_err(const float* got, const double* want) {
  double num = 0.0, den = 0.0;
  int i;
  for (i = 0; i < D; ++i) {
    num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
    den += want[i] * want[i];
  }
  return sqrt(num / (den > 1e-30 ? den : 1e-30));
}

static const double kTol = 2e-5;

/* ---- 1. exact decode: contiguous and paged ------------------------------------------------ */
static void check_exact(const macattn_shape* shape) {
  const double scale = 1.0 / sqrt((double)D);
  macattn_contiguous_seq seqs[B];
  float q[B][HQ][D], out[B][HQ][D], lse[B][HQ];
  int b, h, i, rc, layout;

  for (b = 0; b < B; ++b) {
    seqs[b].k = &g_k[b][0][0][0];
    seqs[b].v = &g_v[b][0][0][0];
    seqs[b].length = g_len[b];
    for (h = 0; h < HQ; ++h)
      for (i = 0; i < D; ++i) q[b][h][i] = (float)gauss();
  }
  {
    const macattn_kv_cache kv = macattn_kv_contiguous(seqs, B, MACATTN_DTYPE_F32);
    rc = macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, &lse[0][0], g_backend);
    CHECK(rc == 0, "exact_decode (contiguous) returned %d: %s", rc, macattn_last_error());
    for (b = 0; b < B && rc == 0; ++b) {
      for (h = 0; h < HQ; ++h) {
        const state_d want = attn_d(q[b][h], b, h / G, 0, g_len[b], scale);
        const double e = rel_err(out[b][h], want.o);
        CHECK(e < kTol, "exact contiguous b=%d h=%d: rel err %.3g", b, h, e);
        CHECK(fabs(lse[b][h] - want.lse) < 1e-4, "exact contiguous b=%d h=%d: lse %.7f vs %.7f", b, h, lse[b][h],
              want.lse);
      }
    }
  }

  /* Paged, page size 4, pages of the two sequences interleaved and reversed. */
  for (layout = MACATTN_LAYOUT_NHD; layout <= MACATTN_LAYOUT_HND; ++layout) {
    enum { PS = 4, MAX_PAGES = 2 * (MAX_LEN / PS) };
    static float kp[MAX_PAGES][PS * HKV * D], vp[MAX_PAGES][PS * HKV * D];
    int indptr[B + 1], indices[MAX_PAGES], last[B], n_pages = 0, p, j, g;
    macattn_paged_kv paged;
    indptr[0] = 0;
    for (b = 0; b < B; ++b) {
      const int pages = (g_len[b] + PS - 1) / PS;
      for (p = 0; p < pages; ++p) indices[n_pages + p] = MAX_PAGES - 1 - (2 * p + b); /* scattered */
      for (j = 0; j < g_len[b]; ++j) {
        const int page = indices[n_pages + j / PS], in = j % PS;
        for (g = 0; g < HKV; ++g) {
          for (i = 0; i < D; ++i) {
            const int off = layout == MACATTN_LAYOUT_NHD ? (in * HKV + g) * D + i : (g * PS + in) * D + i;
            kp[page][off] = g_k[b][j][g][i];
            vp[page][off] = g_v[b][j][g][i];
          }
        }
      }
      n_pages += pages;
      indptr[b + 1] = n_pages;
      last[b] = g_len[b] - (pages - 1) * PS;
    }
    paged.k_pages = kp;
    paged.v_pages = vp;
    paged.num_pages = MAX_PAGES;
    paged.page_size = PS;
    paged.layout = layout;
    paged.indptr = indptr;
    paged.indices = indices;
    paged.last_page_len = last;
    {
      const macattn_kv_cache kv = macattn_kv_paged(&paged, B, MACATTN_DTYPE_F32);
      rc = macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, g_backend);
      CHECK(rc == 0, "exact_decode (paged, layout %d) returned %d: %s", layout, rc, macattn_last_error());
      for (b = 0; b < B && rc == 0; ++b) {
        for (h = 0; h < HQ; ++h) {
          const state_d want = attn_d(q[b][h], b, h / G, 0, g_len[b], scale);
          const double e = rel_err(out[b][h], want.o);
          CHECK(e < kTol, "exact paged layout %d b=%d h=%d: rel err %.3g", layout, b, h, e);
        }
      }
    }
  }
}

/* ---- 2. MAC decode against a double model of MAC_ATTENTION.md sections 5-6 ---------------- */
typedef struct {
  float q[W][HQ][D]; /* pre-RoPE queries (the C++ ring is f32 here, so no rounding) */
  state_d entry[W][HQ];
} ring_d;

static ring_d g_ring[B];
static float g_qpre[B][HQ][D]; /* the current pre-RoPE query of each head */

/* Next query of a head: a small step (a hit next time) or, with probability 1/4, a jump. */
static void next_query(int b, int h, int jump) {
  int i;
  for (i = 0; i < D; ++i) g_qpre[b][h][i] = jump ? (float)gauss() : g_qpre[b][h][i] + (float)(0.05 * gauss());
}
/* The "post-RoPE" query: any fixed function of the pre-RoPE one will do for the check. */
static void post_of(const float* pre, float* post) {
  int i;
  for (i = 0; i < D; i += 2) {
    post[i] = 0.8f * pre[i] - 0.6f * pre[i + 1];
    post[i + 1] = 0.6f * pre[i] + 0.8f * pre[i + 1];
  }
}

/* report: macattn_config.report_miss_matches (1: every miss reports its best row; 0: only rows
 * under the threshold are reported, a miss without one reports -1). */
static void check_mac(const macattn_shape* shape, int report) {
  const double scale = 1.0 / sqrt((double)D);
  macattn_config cfg = macattn_config_default();
  macattn_state* states[B] = {NULL, NULL};
  macattn_contiguous_seq seqs[B];
  int b, h, i, r, rc, step, total_hits = 0, total_heads = 0;
  double thr;

  cfg.window = W;
  cfg.rect_offset = S;
  cfg.front_sinks = F;
  cfg.min_context = 16; /* sequence 1 starts below it: its first steps must miss */
  cfg.report_miss_matches = report;
  thr = 2.0 * D * (1.0 - cfg.tau) * (1.0 - cfg.tau);

  for (b = 0; b < B; ++b) {
    rc = macattn_state_create(shape, &cfg, MACATTN_DTYPE_F32, &states[b]);
    CHECK(rc == 0 && states[b] != NULL, "state_create returned %d: %s", rc, macattn_last_error());
    if (rc != 0) return;
  }

  /* Prefill: queries for the last W prompt positions (all prompt rows are passed; the library
   * skips those below P - W, as the model does). */
  {
    static float qpre_rows[PROMPT0 + PROMPT1][HQ][D], qpost_rows[PROMPT0 + PROMPT1][HQ][D];
    int indptr[B + 1], row = 0, p, ready = 0;
    int64_t pos = -1;
    indptr[0] = 0;
    for (b = 0; b < B; ++b) {
      for (h = 0; h < HQ; ++h) next_query(b, h, 1);
      for (p = 0; p < g_len[b]; ++p, ++row) {
        for (h = 0; h < HQ; ++h) {
          next_query(b, h, 0);
          memcpy(qpre_rows[row][h], g_qpre[b][h], sizeof(float) * D);
          post_of(g_qpre[b][h], qpost_rows[row][h]);
          if (p >= g_len[b] - W) { /* the model's ring row */
            const int slot = p % W, e = entry_end(p);
            memcpy(g_ring[b].q[slot][h], g_qpre[b][h], sizeof(float) * D);
            g_ring[b].entry[slot][h] = attn_d(qpost_rows[row][h], b, h / G, imin(F, e), e, scale);
          }
        }
      }
      indptr[b + 1] = row;
      seqs[b].k = &g_k[b][0][0][0];
      seqs[b].v = &g_v[b][0][0][0];
      seqs[b].length = g_len[b];
    }
    {
      const macattn_kv_cache kv = macattn_kv_contiguous(seqs, B, MACATTN_DTYPE_F32);
      rc = macattn_prefill_init(shape, &cfg, &kv, qpost_rows, qpre_rows, MACATTN_DTYPE_F32, indptr, states, g_backend);
      CHECK(rc == 0, "prefill_init returned %d: %s", rc, macattn_last_error());
    }
    rc = macattn_state_position(states[0], &pos);
    CHECK(rc == 0 && pos == g_len[0], "state_position after prefill: rc %d, %lld (want %d)", rc, (long long)pos,
          g_len[0]);
    rc = macattn_state_ready(states[1], &ready);
    CHECK(rc == 0 && ready == 1, "state_ready after prefill: rc %d, %d", rc, ready);
  }

  for (step = 0; step < STEPS; ++step) {
    float qpost[B][HQ][D], out[B][HQ][D];
    macattn_head_stats hs[B][HQ];
    macattn_step_stats ss;
    for (b = 0; b < B; ++b) {
      fill_token(b, g_len[b]);
      ++g_len[b];
      seqs[b].length = g_len[b];
      for (h = 0; h < HQ; ++h) {
        next_query(b, h, uniform01() < 0.25);
        post_of(g_qpre[b][h], qpost[b][h]);
      }
    }
    {
      const macattn_kv_cache kv = macattn_kv_contiguous(seqs, B, MACATTN_DTYPE_F32);
      rc = macattn_mac_decode(shape, &cfg, &kv, qpost, g_qpre, MACATTN_DTYPE_F32, states, out, NULL, &hs[0][0], &ss,
                              g_backend);
      CHECK(rc == 0, "mac_decode step %d returned %d: %s", step, rc, macattn_last_error());
      if (rc != 0) break;
    }
    CHECK(ss.heads == B * HQ && ss.groups == B * HKV, "step %d: stats heads %lld groups %lld", step,
          (long long)ss.heads, (long long)ss.groups);

    for (b = 0; b < B; ++b) {
      const int t = g_len[b] - 1, new_end = entry_end(t);
      for (h = 0; h < HQ; ++h) {
        /* Match: oldest best among [max(0, t-W), t); no scan below min_context (m = -1). */
        int m = -1, hit, start;
        double best = INFINITY;
        state_d entry, full;
        for (r = t - W > 0 ? t - W : 0; r < t && t >= cfg.min_context; ++r) {
          double d = 0.0;
          for (i = 0; i < D; ++i) {
            const double diff = (double)g_qpre[b][h][i] - (double)g_ring[b].q[r % W][h][i];
            d += diff * diff;
          }
          if (d < best) {
            best = d;
            m = r;
          }
        }
        hit = t >= cfg.min_context && m >= 0 && best < thr && g_ring[b].entry[m % W][h].lse != -INFINITY &&
              entry_end(m) >= F && new_end - entry_end(m) >= 0 && new_end - entry_end(m) <= W;
        if (hit) {
          entry = merge_d(g_ring[b].entry[m % W][h], attn_d(qpost[b][h], b, h / G, entry_end(m), new_end, scale));
          start = entry_end(m);
        } else {
          start = imin(F, new_end);
          entry = attn_d(qpost[b][h], b, h / G, start, new_end, scale);
        }
        memcpy(g_ring[b].q[t % W][h], g_qpre[b][h], sizeof(float) * D);
        g_ring[b].entry[t % W][h] = entry;
        full = merge_d(merge_d(entry, attn_d(qpost[b][h], b, h / G, 0, imin(F, start), scale)),
                       attn_d(qpost[b][h], b, h / G, new_end, t + 1, scale));

        CHECK(hs[b][h].hit == hit, "step %d b=%d h=%d: hit %d, model %d (d=%.4g thr=%.4g)", step, b, h, hs[b][h].hit,
              hit, best, thr);
        {
          const int want = report || best < thr ? m : -1;
          CHECK(hs[b][h].matched_position == want, "step %d b=%d h=%d: matched %lld, model %d (report %d)", step, b,
                h, (long long)hs[b][h].matched_position, want, report);
        }
        {
          const double e = rel_err(out[b][h], full.o);
          CHECK(e < kTol, "step %d b=%d h=%d (hit %d): rel err %.3g", step, b, h, hit, e);
        }
        total_hits += hit;
        ++total_heads;
      }
    }
  }
  CHECK(total_hits > 0 && total_hits < total_heads, "MAC check saw %d hits of %d heads: want both kinds", total_hits,
        total_heads);
  printf("c_api_check: %s backend: MAC decode %d steps, %d/%d head hits\n", macattn_backend_name(g_backend), STEPS,
         total_hits, total_heads);
  for (b = 0; b < B; ++b) CHECK(macattn_state_destroy(states[b]) == 0, "state_destroy");
}

/* ---- 3. error paths ----------------------------------------------------------------------- */
static void expect_error(int rc, const char* call, const char* needle) {
  const char* msg = macattn_last_error();
  CHECK(rc != 0, "%s: returned 0, want an error", call);
  CHECK(msg != NULL && msg[0] != '\0', "%s: empty last_error", call);
  CHECK(msg == NULL || strstr(msg, needle) != NULL, "%s: message \"%s\" lacks \"%s\"", call, msg ? msg : "(null)",
        needle);
}

static void check_errors(const macattn_shape* shape) {
  const macattn_config cfg = macattn_config_default();
  macattn_contiguous_seq seq;
  macattn_kv_cache kv;
  macattn_state* st = NULL;
  macattn_state* states[2] = {NULL, NULL};
  float q[HQ][D], out[HQ][D];
  int64_t pos;
  int ready;
  macattn_shape bad_shape = *shape;
  macattn_config bad_cfg = cfg;

  memset(q, 0, sizeof q);
  seq.k = &g_k[0][0][0][0];
  seq.v = &g_v[0][0][0][0];
  seq.length = 4;
  kv = macattn_kv_contiguous(&seq, 1, MACATTN_DTYPE_F32);

  expect_error(macattn_exact_decode(NULL, &kv, q, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(shape=NULL)",
               "shape is null");
  expect_error(macattn_exact_decode(shape, NULL, q, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(kv=NULL)",
               "kv is null");
  expect_error(macattn_exact_decode(shape, &kv, NULL, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(q_post=NULL)",
               "q_post");
  expect_error(macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, NULL, NULL, 0), "exact_decode(out=NULL)", "out");
  expect_error(macattn_exact_decode(shape, &kv, q, 7, out, NULL, 0), "exact_decode(q_dtype=7)", "q_dtype = 7");
  expect_error(macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, 3), "exact_decode(backend=3)",
               "backend");
  expect_error(macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, 300), "exact_decode(backend=300)",
               "backend = 300");
  expect_error(macattn_set_num_threads(-1), "set_num_threads(-1)", "-1");
  expect_error(macattn_cpu_isa(NULL), "cpu_isa(NULL)", "out is null");
  expect_error(macattn_set_cpu_products(2), "set_cpu_products(2)", "neither fp32");
  CHECK(macattn_set_cpu_products(MACATTN_CPU_PRODUCTS_BF16) == 0, "set_cpu_products(bf16): %s", macattn_last_error());
  CHECK(macattn_set_cpu_products(MACATTN_CPU_PRODUCTS_FP32) == 0, "set_cpu_products(fp32): %s", macattn_last_error());
  kv.storage = 9;
  expect_error(macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(storage=9)",
               "storage = 9");
  kv = macattn_kv_paged(NULL, 1, MACATTN_DTYPE_F32);
  expect_error(macattn_exact_decode(shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(paged all null)",
               "page_size");
  kv = macattn_kv_contiguous(&seq, 1, MACATTN_DTYPE_F32);

  bad_shape.num_kv_heads = 3;
  expect_error(macattn_exact_decode(&bad_shape, &kv, q, MACATTN_DTYPE_F32, out, NULL, 0), "exact_decode(Hkv=3 of Hq=4)",
               "num_kv_heads");

  expect_error(macattn_state_create(shape, &cfg, MACATTN_DTYPE_BF16, NULL), "state_create(out=NULL)", "out is null");
  expect_error(macattn_state_create(NULL, &cfg, MACATTN_DTYPE_BF16, &st), "state_create(shape=NULL)", "shape is null");
  expect_error(macattn_state_create(shape, NULL, MACATTN_DTYPE_BF16, &st), "state_create(config=NULL)",
               "config is null");
  bad_cfg.report_miss_matches = 2;
  expect_error(macattn_state_create(shape, &bad_cfg, MACATTN_DTYPE_BF16, &st), "state_create(report_miss_matches=2)",
               "report_miss_matches = 2");
  bad_cfg.report_miss_matches = 1;
  bad_cfg.tau = 1.5f;
  expect_error(macattn_state_create(shape, &bad_cfg, MACATTN_DTYPE_BF16, &st), "state_create(tau=1.5)", "tau");
  CHECK(st == NULL, "state_create wrote *out on failure");
  expect_error(macattn_state_reset(NULL), "state_reset(NULL)", "state is null");
  expect_error(macattn_state_invalidate(NULL), "state_invalidate(NULL)", "state is null");
  expect_error(macattn_state_position(NULL, &pos), "state_position(NULL)", "state is null");
  expect_error(macattn_state_ready(NULL, &ready), "state_ready(NULL)", "state is null");
  CHECK(macattn_state_destroy(NULL) == 0, "state_destroy(NULL) must be a no-op");

  CHECK(macattn_state_create(shape, &cfg, MACATTN_DTYPE_BF16, &st) == 0, "state_create: %s", macattn_last_error());
  expect_error(macattn_state_position(st, NULL), "state_position(out=NULL)", "out is null");
  expect_error(macattn_mac_decode(shape, &cfg, &kv, q, q, MACATTN_DTYPE_F32, NULL, out, NULL, NULL, NULL, 0),
               "mac_decode(states=NULL)", "states is null");
  expect_error(macattn_mac_decode(shape, &cfg, &kv, q, q, MACATTN_DTYPE_F32, states, out, NULL, NULL, NULL, 0),
               "mac_decode(states[0]=NULL)", "states[0] is null");
  states[0] = st;
  expect_error(macattn_mac_decode(shape, NULL, &kv, q, q, MACATTN_DTYPE_F32, states, out, NULL, NULL, NULL, 0),
               "mac_decode(config=NULL)", "config is null");
  expect_error(macattn_mac_decode(shape, &cfg, &kv, q, NULL, MACATTN_DTYPE_F32, states, out, NULL, NULL, NULL, 0),
               "mac_decode(q_pre=NULL)", "q_pre");
  expect_error(macattn_prefill_init(shape, &cfg, &kv, q, q, MACATTN_DTYPE_F32, NULL, states, 0),
               "prefill_init(row_indptr=NULL)", "row_indptr is null");
  CHECK(macattn_state_reset(st) == 0 && macattn_state_invalidate(st) == 0, "reset/invalidate: %s",
        macattn_last_error());
  CHECK(macattn_state_destroy(st) == 0, "state_destroy");

  expect_error(macattn_merge_states(1, D, NULL, NULL, NULL, NULL, NULL, NULL), "merge_states(NULL)", "merge_states");
}

/* ---- merge_states against the model ------------------------------------------------------ */
static void check_merge(void) {
  float o1[2][D], o2[2][D], out[2][D], l1[2] = {0.5f, -INFINITY}, l2[2] = {1.25f, -INFINITY}, lo[2];
  state_d a, c, want;
  int i, rc;
  for (i = 0; i < D; ++i) {
    o1[0][i] = (float)gauss();
    o2[0][i] = (float)gauss();
    o1[1][i] = o2[1][i] = 1.0f;
    a.o[i] = o1[0][i];
    c.o[i] = o2[0][i];
  }
  a.lse = l1[0];
  c.lse = l2[0];
  want = merge_d(a, c);
  rc = macattn_merge_states(2, D, &o1[0][0], l1, &o2[0][0], l2, &out[0][0], lo);
  CHECK(rc == 0, "merge_states returned %d: %s", rc, macattn_last_error());
  CHECK(rel_err(out[0], want.o) < kTol && fabs(lo[0] - want.lse) < 1e-5, "merge_states: wrong merge");
  CHECK(lo[1] == -INFINITY && out[1][0] == 0.0f, "merge_states: two empty states must give (0, -inf)");
}

int main(void) {
  static const int backends[] = {MACATTN_BACKEND_REFERENCE, MACATTN_BACKEND_CPU};
  macattn_shape shape;
  const char* isa = NULL;
  int b, p, k;
  shape.num_q_heads = HQ;
  shape.num_kv_heads = HKV;
  shape.head_dim = D;
  shape.softmax_scale = 0.0f;

  CHECK(macattn_cpu_isa(&isa) == 0 && isa != NULL, "cpu_isa: %s", macattn_last_error());
  printf("c_api_check: macattn %s, cpu ISA %s\n", macattn_version(), isa ? isa : "?");
  CHECK(macattn_set_num_threads(2) == 0, "set_num_threads(2): %s", macattn_last_error());
  for (k = 0; k < (int)(sizeof backends / sizeof backends[0]); ++k) {
    int report;
    g_backend = backends[k];
    for (report = 1; report >= 0; --report) {
      g_rng = 0x9E3779B97F4A7C15ull; /* the same data for every backend and setting */
      g_len[0] = PROMPT0;
      g_len[1] = PROMPT1;
      for (b = 0; b < B; ++b)
        for (p = 0; p < g_len[b]; ++p) fill_token(b, p);
      check_exact(&shape); /* also in the second pass: the MAC steps then see the same data */
      check_mac(&shape, report);
    }
  }
  check_merge();
  check_errors(&shape);

  if (g_failures != 0) {
    printf("c_api_check: %d check(s) FAILED\n", g_failures);
    return 1;
  }
  printf("c_api_check: all checks passed\n");
  return 0;
}
