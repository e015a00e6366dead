/*
 * gemv.h — the CPU worker's own GEMV / small-M GEMM kernels on packed bf16, int8 and int4 weights
 * (docs/cpu-worker.md, "Kernels").
 *
 *   gemv.c          packing, activation preparation, CPUID dispatch, threading, the portable C
 *                   kernels (the reference every ISA is tested against)
 *   gemv_avx512.c   AVX-512 F/BW/VL + VNNI + BF16 kernels (vpdpbusd, vdpbf16ps)
 *   gemv_avx2.c     AVX2 + FMA + F16C kernels (any x86-64 of the last decade)
 *
 * y[r][n] = Σ_k W[n][k] · x[r][k] (+ bias[n]) for m rows, W packed once at load.
 *
 * Five formats: bf16 weights with bf16 activations (vdpbf16ps: the AVX512-BF16 compute path),
 * bf16 or f16 weights with f32 activations (2-byte storage computed in f32 FMAs: every x86-64 CPU,
 * and f16 weights everywhere), and int8 / int4 weights with int8 activations.
 *
 * ---- the packed layout (a contract between gemv.c and every kernel file) -------------------
 *
 * Outputs are grouped in tiles of DUET_GEMV_TILE = 16 consecutive rows n of W (n_pad = n rounded
 * up to 16; padded rows are zero and never written to y). The input dimension is padded to k_pad
 * (a multiple of the group size for int8/int4, of 32 for bf16) with zero weights; the prepared
 * activations are zero there too. Tile t (rows 16t .. 16t + 15) is tile_bytes long at
 * data + t × tile_bytes; within it, lane j is row 16t + j.
 *
 * bf16: k_pad / 2 chunks of 64 bytes; chunk c holds, for lane j = 0..15, the two bf16 values
 *       W[16t + j][2c] (low 16 bits) and W[16t + j][2c + 1] (high 16 bits) as one 32-bit word:
 *       exactly the operand of vdpbf16ps against a broadcast pair of activations.
 *       tile_bytes = k_pad × 32. bf16_f32 (bf16 weights, f32 activations) is the same layout:
 *       `<< 16` and `& 0xffff0000` of a lane give its two weights as f32.
 *
 * f16:  k_pad / 2 chunks of 64 bytes; chunk c holds the 16 lanes' W[16t + j][2c] (IEEE f16, lane
 *       order, 32 bytes) then the 16 lanes' W[16t + j][2c + 1]: each half is one vcvtph2ps zmm
 *       operand (two ymm ones). tile_bytes = k_pad × 32.
 *
 * int8, int4: k_pad / group groups, each a block of
 *       codes  int8: group / 4 chunks of 64 bytes; chunk c, lane j (bytes 4j .. 4j + 3) holds the
 *                    unsigned codes u[16t + j][g·group + 4c + b], b = 0..3
 *              int4: group / 8 chunks of 64 bytes; chunk c, lane j byte b (b = 0..3) holds
 *                    u[..][g·group + 8c + b] in its low nibble and u[..][g·group + 8c + 4 + b] in
 *                    its high nibble (so `& 0x0f` and `>> 4 & 0x0f` each give vpdpbusd operands)
 *       scale  16 × IEEE f16 (lane j's scale s)
 *       min    16 × IEEE f16 (lane j's offset m), only when the weights are asymmetric
 *       group_bytes = codes + 32 (+ 32); tile_bytes = (k_pad / group) × group_bytes. Blocks are
 *       not padded, so loads of them are unaligned.
 *       A weight is  s · (u − z)  with z = 128 (int8) or 8 (int4) when symmetric, and  s · u + m
 *       when asymmetric, with s and m the stored f16 values.
 *
 * ---- activations ---------------------------------------------------------------------------
 *
 * bf16 weights take bf16 activations: [m][k_pad] uint16, zero past k.
 * bf16_f32 and f16 weights take f32 activations: [m][k_pad] float, zero past k.
 * int8 / int4 weights take int8 activations quantised per row and group (the weights' group):
 * q[r][k] = round(x / sx) in [−127, 127] with sx = max|x over the group| / 127 (0 when the group
 * is all zero), and the group's Σ q kept as an int32, so that a group's contribution is, exactly in
 * integers then in f32:
 *      symmetric   s · sx · (Σ u·q − z · Σ q)
 *      asymmetric  s · sx · Σ u·q + m · sx · Σ q
 * (Σ u·q is vpdpbusd: unsigned codes × signed activations.)
 */
#ifndef DUET_CPU_GEMV_H
#define DUET_CPU_GEMV_H

#include <duet/types.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DUET_GEMV_TILE 16u    /* output rows per tile */
#define DUET_GEMV_ALIGN 64u   /* alignment of packed weights and activation buffers */
#define DUET_GEMV_K_ALIGN 32u /* k_pad of bf16 weights is a multiple of this */

typedef enum duet_gemv_isa {
    DUET_GEMV_GENERIC = 0, /* portable C */
    DUET_GEMV_AVX2 = 1,    /* AVX2 + FMA + F16C */
    DUET_GEMV_AVX512 = 2,  /* AVX-512 F, BW, VL, VNNI and BF16 */
} duet_gemv_isa;

typedef enum duet_gemv_fmt {
    DUET_GEMV_BF16 = 0,     /* bf16 weights × bf16 activations, f32 sums (vdpbf16ps) */
    DUET_GEMV_INT8 = 1,     /* int8 weights × int8 activations */
    DUET_GEMV_INT4 = 2,     /* int4 weights × int8 activations */
    DUET_GEMV_BF16_F32 = 3, /* bf16 weights × f32 activations, f32 FMAs */
    DUET_GEMV_F16 = 4,      /* f16 weights × f32 activations, f32 FMAs */
} duet_gemv_fmt;

#define DUET_GEMV_NUM_FMTS 5

/* True for the formats whose activations are f32 (bf16_f32, f16). */
static inline bool duet__gemv_fmt_f32_act(duet_gemv_fmt fmt)
{
    return fmt == DUET_GEMV_BF16_F32 || fmt == DUET_GEMV_F16;
}

/* True for the 2-byte formats (bf16, bf16_f32, f16): one weight a 16-bit word, no groups. */
static inline bool duet__gemv_fmt_16bit(duet_gemv_fmt fmt)
{
    return fmt == DUET_GEMV_BF16 || fmt == DUET_GEMV_BF16_F32 || fmt == DUET_GEMV_F16;
}

/* One packed weight matrix. */
typedef struct duet_gemv_weight {
    duet_gemv_fmt fmt;
    uint32_t n, k;         /* logical outputs and inputs */
    uint32_t n_pad, k_pad; /* n rounded up to DUET_GEMV_TILE; k as above */
    uint32_t group;        /* int8 / int4: 32, 64 or 128; 2-byte formats: 0 */
    bool asym;             /* int8 / int4 with per-group offsets (min) */
    size_t tile_bytes;     /* bytes per tile of 16 outputs */
    size_t group_bytes;    /* int8 / int4: bytes per group block within a tile */
    void *data;            /* n_pad / 16 tiles, DUET_GEMV_ALIGN-aligned */
    float *bias;           /* [n] or NULL */
    size_t bytes;          /* of data and bias: what one pass over the weights reads */
} duet_gemv_weight;

/* Prepared activations of up to m rows for one weight's format and k_pad (and group). The
 * buffers belong to whoever prepared them (duet__gemv_act_size says how much room). */
typedef struct duet_gemv_act {
    uint32_t m;     /* rows */
    uint32_t k_pad; /* elements per row */
    uint32_t group; /* int8 activations: elements per scale; else 0 */
    uint16_t *bf16; /* bf16 weights: [m][k_pad] */
    float *f32;     /* bf16_f32 and f16 weights: [m][k_pad] */
    int8_t *q;      /* int8 / int4 weights: [m][k_pad] */
    float *scale;   /* [m][k_pad / group] sx */
    int32_t *qsum;  /* [m][k_pad / group] Σ q */
} duet_gemv_act;

/*
 * One ISA's kernels. Each computes tiles t0 .. t1 − 1 of w for all m rows (any m ≥ 1; a kernel
 * blocks the rows itself so that a tile's weights are read from memory once per call and from
 * cache for further row blocks): y[r × y_stride + n] = Σ_k W[n][k] · x[r][k] for the tile's
 * rows n < w->n, without bias. They run on the calling thread only (gemv.c splits tiles between
 * the OpenMP team).
 */
typedef void (*duet_gemv_kernel)(const duet_gemv_weight *w, const duet_gemv_act *a, float *y,
                                 size_t y_stride, uint32_t t0, uint32_t t1);

typedef struct duet_gemv_ops {
    const char *name; /* "generic", "avx2", "avx512" */
    duet_gemv_kernel bf16, int8, int4, bf16_f32, f16;
} duet_gemv_ops;

/* The kernel of ops for fmt; NULL when ops has none (gemv.c then runs the generic one). */
duet_gemv_kernel duet__gemv_ops_kernel(const duet_gemv_ops *ops, duet_gemv_fmt fmt);
const char *duet__gemv_fmt_name(duet_gemv_fmt fmt);

/* Kernel tables; the AVX ones may only be called where duet__gemv_isa_supported says so. */
extern const duet_gemv_ops duet__gemv_generic_ops;
extern const duet_gemv_ops duet__gemv_avx2_ops;
extern const duet_gemv_ops duet__gemv_avx512_ops;

/* True when this CPU (CPUID, and XGETBV for the OS saving the registers) runs isa. */
bool duet__gemv_isa_supported(duet_gemv_isa isa);
/* The best supported ISA, lowered to $DUET_CPU_ISA (generic | avx2 | avx512) when that is set to
 * a supported one. */
duet_gemv_isa duet__gemv_isa_best(void);
const duet_gemv_ops *duet__gemv_ops(duet_gemv_isa isa);
const char *duet__gemv_isa_name(duet_gemv_isa isa);

/*
 * Packs W[n][k] (row-major f32, out × in as Hugging Face stores it) and optional bias[n] into *w
 * (fields and data allocated here; duet__gemv_weight_free releases them). bf16 and bf16_f32 round
 * each weight to the nearest bf16, f16 to the nearest f16 (a finite weight beyond the f16 range
 * is refused). int8 / int4 quantise
 * each group of `group` (32, 64 or 128) inputs of a row: symmetric s = max|w| / 127 (int8) or
 * / 7 (int4); asymmetric s = (max − min) / 255 (or 15), m = min, both rounded to f16, codes
 * round((w − m) / s) clamped. Threaded over tiles. On failure (bad group, sizes, memory) a message
 * naming `name` is written to err.
 */
duet_status duet__gemv_weight_pack(duet_gemv_weight *w, const char *name, const float *W,
                                   const float *bias, uint32_t n, uint32_t k, duet_gemv_fmt fmt,
                                   uint32_t group, bool asym, char *err, size_t err_size);
/*
 * Packs weights quantised elsewhere (a GGUF file's Q8_0 / Q4_0 blocks, duet_tensor_read_codes),
 * exactly: codes[n][k] the unsigned codes (zero point 128 for int8, 8 for int4: symmetric) and
 * scales[n][k / group] their f16 bits, so that each weight is s · (u − z) as stored. k must be
 * a multiple of group (32, 64 or 128); int4 codes must be below 16.
 */
duet_status duet__gemv_weight_pack_codes(duet_gemv_weight *w, const char *name,
                                         const uint8_t *codes, const uint16_t *scales,
                                         const float *bias, uint32_t n, uint32_t k,
                                         duet_gemv_fmt fmt, uint32_t group, char *err,
                                         size_t err_size);
void duet__gemv_weight_free(duet_gemv_weight *w);
/* The weight W'[row][col] the packed matrix represents (dequantised), for tests and checks. */
float duet__gemv_weight_get(const duet_gemv_weight *w, uint32_t row, uint32_t col);

/*
 * The 2-byte formats widened to f32: rows 16·t0 .. 16·t1 − 1 of W' (padded rows zero) into
 * out[(row − 16·t0) × ld + col] for col < k (ld ≥ k). The prefill GEMM of a worker computing in
 * f32 over bf16 / f16 storage runs on such panels. Threaded over tiles.
 */
void duet__gemv_weight_widen(const duet_gemv_weight *w, uint32_t t0, uint32_t t1, float *out,
                             size_t ld);

/* Bytes of one buffer holding prepared activations of m rows for w (all arrays, aligned). */
size_t duet__gemv_act_size(const duet_gemv_weight *w, uint32_t m);
/*
 * Prepares m rows of f32 activations (row r at x + r × x_stride, k elements) for w into buf
 * (duet__gemv_act_size bytes, DUET_GEMV_ALIGN-aligned), filling *a. When norm_w is not NULL each
 * row is first RMS-normalised, x / sqrt(mean(x²) + eps) × norm_w, in the same pass (the fused
 * input of a GEMV after RMSNorm). Threaded over rows when there are many.
 */
void duet__gemv_act_prepare(const duet_gemv_weight *w, const float *x, size_t x_stride, uint32_t m,
                            const float *norm_w, float eps, void *buf, duet_gemv_act *a);

/* y[r × y_stride + n] = Σ_k W[n][k] · x[r][k] + bias[n] for r < a->m, n < w->n, with the kernels
 * of ops, tiles split over the calling thread's OpenMP team. */
void duet__gemv_run(const duet_gemv_ops *ops, const duet_gemv_weight *w, const duet_gemv_act *a,
                    float *y, size_t y_stride);

#endif /* DUET_CPU_GEMV_H */
