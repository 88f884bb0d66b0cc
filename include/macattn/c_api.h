/* macattn/c_api.h: the C API of the MAC-Attention library (C99, no C++ types).
 *
 * A thin layer over the C++ API in macattn/attention.hpp: same functions, same shapes, same
 * validation. Conventions:
 * - Every function returns int: MACATTN_OK (0) on success, a nonzero MACATTN_ERROR_* code on
 *   failure. No C++ exception ever crosses this boundary.
 * - On failure, macattn_last_error() returns a message naming the function, the argument and its
 *   value (the text of macattn::Error), e.g. "mac_decode: q_post is null". The message is
 *   thread-local and stays until the next failing call on the same thread.
 * - Inputs are validated before anything is written, so a call rejected for bad input leaves its
 *   outputs and rings untouched.
 * - B sequences, Hq query heads, Hkv KV heads, head dim D. Query head h reads KV head
 *   h / (Hq / Hkv). Decode position of sequence b: t_b = seq_len(b) - 1 (its current K/V is
 *   already in the cache). LSE is the natural logarithm, fp32.
 * - Dtype and layout fields are int32_t holding MACATTN_DTYPE_* / MACATTN_LAYOUT_* values, so
 *   struct layouts do not depend on the compiler's enum size.
 */
#ifndef MACATTN_C_API_H
#define MACATTN_C_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------------------------ */
enum {
  MACATTN_OK = 0,
  MACATTN_ERROR_INVALID_ARGUMENT = 1, /* bad or null input (macattn::Error) */
  MACATTN_ERROR_OUT_OF_MEMORY = 2,    /* an allocation failed */
  MACATTN_ERROR_INTERNAL = 3          /* any other failure; a bug: please report the message */
};

/* ---- enumerations (values equal the C++ enumerators) ------------------------------------- */
enum {
  MACATTN_DTYPE_F32 = 0, /* IEEE binary32 */
  MACATTN_DTYPE_F16 = 1, /* IEEE binary16 */
  MACATTN_DTYPE_BF16 = 2 /* bfloat16 */
};
enum {
  MACATTN_LAYOUT_NHD = 0, /* a page is [page_size, num_kv_heads, head_dim] */
  MACATTN_LAYOUT_HND = 1  /* a page is [num_kv_heads, page_size, head_dim] */
};
enum {
  MACATTN_KV_CONTIGUOUS = 0, /* macattn_kv_cache.seqs is used */
  MACATTN_KV_PAGED = 1       /* macattn_kv_cache.paged is used */
};
enum {
  MACATTN_BACKEND_REFERENCE = 0, /* the scalar CPU oracle, single-threaded */
  MACATTN_BACKEND_CPU = 1        /* the fast CPU backend: SIMD chosen at run time, OpenMP threads */
};

/* ---- plain structs ----------------------------------------------------------------------- */

/* Shape of one attention layer's decode (macattn::AttentionShape). */
typedef struct macattn_shape {
  int32_t num_q_heads;  /* Hq >= 1 */
  int32_t num_kv_heads; /* Hkv >= 1, divides Hq */
  int32_t head_dim;     /* D in [1, 1024] */
  float softmax_scale;  /* 0 = 1/sqrt(D) */
} macattn_shape;

/* MAC parameters (macattn::MacConfig); start from macattn_config_default(). */
typedef struct macattn_config {
  int32_t window;      /* W: ring capacity = lookback window, >= 1 (default 512) */
  int32_t rect_offset; /* S: the last S keys are never reused, >= 1 (default 256) */
  float tau;           /* match threshold in [0, 1): hit iff dist^2 < 2*D*(1-tau)^2 (default 0.45) */
  int32_t front_sinks; /* F: tokens [0, F) recomputed exactly every step, >= 0 (default 0) */
  int64_t min_context; /* no matching while t < min_context, >= 0 (default 2048) */
  /* With per-head stats: 1 (default) = a miss reports its best row even at or over the
   * threshold (every row scanned in full); 0 = such a miss reports matched_position -1 and an
   * infinite distance, and the scan drops rows that cannot be hits early. Hits, outputs and
   * the other stats are the same either way. 0 or 1. */
  int32_t report_miss_matches;
} macattn_config;

/* One sequence of a contiguous cache: k and v are [length, Hkv, D] of the cache dtype. */
typedef struct macattn_contiguous_seq {
  const void* k;
  const void* v;
  int64_t length;
} macattn_contiguous_seq;

/* A paged cache with FlashInfer's page table (macattn::PagedKV). Sequence b owns pages
 * indices[indptr[b] .. indptr[b+1]); all full except the last, which holds last_page_len[b]
 * tokens. indptr: [B+1]; indices: [indptr[B]]; last_page_len: [B]. */
typedef struct macattn_paged_kv {
  const void* k_pages; /* [num_pages, page] in layout */
  const void* v_pages;
  int64_t num_pages;
  int32_t page_size;
  int32_t layout; /* MACATTN_LAYOUT_NHD or MACATTN_LAYOUT_HND */
  const int32_t* indptr;
  const int32_t* indices;
  const int32_t* last_page_len;
} macattn_paged_kv;

/* The K/V cache of one layer for a batch: contiguous or paged. The arrays it points to must
 * stay valid during the call. Fill it with macattn_kv_contiguous() or macattn_kv_paged(). */
typedef struct macattn_kv_cache {
  int32_t storage;                    /* MACATTN_KV_CONTIGUOUS or MACATTN_KV_PAGED */
  int32_t dtype;                      /* MACATTN_DTYPE_* of K and V */
  int32_t batch_size;                 /* B */
  const macattn_contiguous_seq* seqs; /* [B], when contiguous */
  macattn_paged_kv paged;             /* when paged */
} macattn_kv_cache;

/* What MAC decided for one query head in one step (macattn::HeadStats). */
typedef struct macattn_head_stats {
  int64_t matched_position; /* best candidate m (hit or not); -1 if none was scanned */
  int64_t kv_tokens_read;   /* tokens this head attended exactly */
  float match_distance;     /* squared L2 distance to m (pre-RoPE); +inf if none */
  int32_t band_len;         /* hit: new_end - E(m); miss: 0 */
  uint8_t hit;              /* 1 if the entry was reused */
} macattn_head_stats;

/* Totals over one call (macattn::StepStats). Group = one (sequence, KV head). */
typedef struct macattn_step_stats {
  int64_t heads;
  int64_t heads_hit;
  int64_t groups;
  int64_t groups_all_hit;
  int64_t kv_tokens_read;  /* tokens read by this call, summed over groups */
  int64_t kv_tokens_exact; /* tokens exact attention would read, summed over groups */
  int64_t ring_wipes;      /* sequences whose ring was stale and wiped this call */
} macattn_step_stats;

/* The MAC ring of one sequence in one layer (owns host memory; macattn::MacState). */
typedef struct macattn_state macattn_state;

/* ---- library ----------------------------------------------------------------------------- */

/* Message of the last failing call on this thread; "" if none failed. Never null. */
const char* macattn_last_error(void);
/* "MAJOR.MINOR.PATCH". Never null. */
const char* macattn_version(void);
/* "f32", "f16", "bf16", or "invalid". Never null. */
const char* macattn_dtype_name(int32_t dtype);
/* "reference", "cpu", or "invalid". Never null. */
const char* macattn_backend_name(int32_t backend);
/* Threads for MACATTN_BACKEND_CPU; 0 = OpenMP's default (all cores, or OMP_NUM_THREADS).
 * Process-wide. n < 0 is an error. */
int macattn_set_num_threads(int n);
/* *out = the kernel set MACATTN_BACKEND_CPU runs: "avx512bf16", "avx512", "avx2" or "portable"
 * (override with the environment variable MACATTN_CPU_ISA; an unusable override is an error). */
int macattn_cpu_isa(const char** out);
/* How MACATTN_BACKEND_CPU's avx512bf16 kernels multiply bf16 K/V (macattn::set_cpu_products):
 * MACATTN_CPU_PRODUCTS_FP32 (default; as exact as fp32) or MACATTN_CPU_PRODUCTS_BF16 (queries and
 * softmax weights rounded to bf16, as GPU kernels do: faster where arithmetic is the bound,
 * relative error about 2e-3). Process-wide; another value is an error. */
enum { MACATTN_CPU_PRODUCTS_FP32 = 0, MACATTN_CPU_PRODUCTS_BF16 = 1 };
int macattn_set_cpu_products(int32_t products);

/* The reference defaults: W 512, S 256, tau 0.45, F 0, min_context 2048, report_miss_matches 1. */
macattn_config macattn_config_default(void);
/* A contiguous cache descriptor over seqs[0 .. batch_size). */
macattn_kv_cache macattn_kv_contiguous(const macattn_contiguous_seq* seqs, int32_t batch_size, int32_t dtype);
/* A paged cache descriptor over *paged (copied) for batch_size sequences. */
macattn_kv_cache macattn_kv_paged(const macattn_paged_kv* paged, int32_t batch_size, int32_t dtype);

/* ---- ring state -------------------------------------------------------------------------- */

/* Allocates a wiped, not-ready ring for shape and config->window; ring_dtype is the element
 * type of the stored queries and outputs (MACATTN_DTYPE_BF16 as in the reference, F32 exact).
 * On success *out is the new handle; on failure *out is left unchanged. */
int macattn_state_create(const macattn_shape* shape, const macattn_config* config, int32_t ring_dtype,
                         macattn_state** out);
/* Frees the ring. A null state is allowed and does nothing (like free()). */
int macattn_state_destroy(macattn_state* state);
/* Every slot unusable, position 0, not ready. */
int macattn_state_reset(macattn_state* state);
/* Marks the ring stale; the next decode or prefill step wipes it. */
int macattn_state_invalidate(macattn_state* state);
/* *out = the next decode position the ring expects. */
int macattn_state_position(const macattn_state* state, int64_t* out);
/* *out = 1 if the ring is ready, else 0. */
int macattn_state_ready(const macattn_state* state, int* out);
/* *out = host bytes owned by the ring. */
int macattn_state_bytes(const macattn_state* state, int64_t* out);

/* ---- attention --------------------------------------------------------------------------- */

/* Exact decode attention for one layer.
 *   q_post: [B, Hq, D] of q_dtype (post-RoPE);  out: [B, Hq, D] of q_dtype;
 *   lse: [B, Hq] fp32, or null. */
int macattn_exact_decode(const macattn_shape* shape, const macattn_kv_cache* kv, const void* q_post, int32_t q_dtype,
                         void* out, float* lse, int32_t backend);

/* MAC decode for one layer: match on pre-RoPE queries, amend the band, write the ring row of t_b,
 * complete with sinks and tail.
 *   q_post, q_pre: [B, Hq, D] of q_dtype;  out: [B, Hq, D] of q_dtype;  lse: [B, Hq] or null;
 *   states: [B] handles, one per sequence of this layer;  head_stats: [B, Hq] or null;
 *   step_stats: or null (overwritten, not accumulated). Sequences with length 0 are rejected. */
int macattn_mac_decode(const macattn_shape* shape, const macattn_config* config, const macattn_kv_cache* kv,
                       const void* q_post, const void* q_pre, int32_t q_dtype, macattn_state* const* states, void* out,
                       float* lse, macattn_head_stats* head_stats, macattn_step_stats* step_stats, int32_t backend);

/* Ring initialisation after prefill: for sequence b with P_b = seq_len(b), rows
 * row_indptr[b] .. row_indptr[b+1] of q_post / q_pre are the queries of positions
 * [P_b - n_b, P_b); rows below P_b - W are skipped. Afterwards the ring is ready at P_b.
 *   q_post, q_pre: [row_indptr[B], Hq, D] of q_dtype;  row_indptr: [B+1], row_indptr[0] = 0;
 *   states: [B] handles. */
int macattn_prefill_init(const macattn_shape* shape, const macattn_config* config, const macattn_kv_cache* kv,
                         const void* q_post, const void* q_pre, int32_t q_dtype, const int32_t* row_indptr,
                         macattn_state* const* states, int32_t backend);

/* Merges n pairs of attention states over disjoint key sets, elementwise:
 *   o1, o2, out: [n, head_dim] fp32;  lse1, lse2, lse_out: [n] fp32, natural log.
 * lse = -inf is the empty state. out may alias o1 or o2, lse_out lse1 or lse2. */
int macattn_merge_states(int64_t n, int32_t head_dim, const float* o1, const float* lse1, const float* o2,
                         const float* lse2, float* out, float* lse_out);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MACATTN_C_API_H */
