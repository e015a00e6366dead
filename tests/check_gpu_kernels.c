/*
 * The GPU worker's kernels (gpu_worker/kernels.cu) on the device against plain double-precision
 * references on the host, on seeded random inputs, for the three element types (f32, bf16,
 * f16), with sizes off the kernels' natural tiles. Tolerances, with "scale" the largest |ref| of
 * the row (or head) compared:
 *
 *   gather, convert, select, bias, unshard   exact (the host rounds to nearest even as well)
 *   norms, SiLU                              f32 1e-5 × scale, bf16 1e-2 × scale, f16 1e-3 × scale
 *   RoPE                                     |got − ref| ≤ 1e-5 × (|x0| + |x1|); the cache holds
 *                                            exactly the rounded rotated K and V, nothing else
 * moves attention (decode, prefill)              as the norms + 1e-5 (outputs are convex
 * combinations of V in [−1, 1]); the reference reads the cache's own values, so its element type
 * adds no error there
 *
 * Skips (exit 77) without a CUDA device. Runs without fork: the CUDA runtime cannot be used in a
 * child forked after it was initialised (main counts the devices first). Checks inside loops
 * only call Check on failure.
 */
#include "gpu_worker/gpu_worker-int.h"

#include "check_util.h"
#include "gpu_launch_cases.h"
#include "gpu_nowork_cases.h"
#include "test_rng.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* |got − ref| ≤ tol (NaN fails), else abort naming where: fmt and its arguments. */
#define CHECK_CLOSE(got, ref, tol, fmt, ...)                                                       \
    do {                                                                                           \
        double g_ = (got), r_ = (ref), t_ = (tol);                                                 \
        if (!(fabs(g_ - r_) <= t_))                                                                \
            ck_abort_msg("got %.9g, want %.9g (tolerance %.3g) at " fmt, g_, r_, t_, __VA_ARGS__); \
    } while (0)

#define CUDA_OK(call)                                                                              \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            ck_abort_msg("%s: %s", #call, cudaGetErrorString(e_));                                 \
    } while (0)

static const duet_gpu_dtype dtypes[] = {DUET_GPU_F32, DUET_GPU_BF16, DUET_GPU_F16};
static const char *const dtype_names[] = {"f32", "bf16", "f16"};
#define N_DTYPES 3
static const uint32_t row_counts[] = {1, 3, 17};
#define N_ROW_COUNTS 3

static uint64_t rng;

static void reseed(void)
{
    rng = 0x5eed0006ull;
}

/* ---- random inputs and element types ------------------------------------------------------- */

/* Uniform in [-1, 1). */
static float urand(void)
{
    return (float)((double)(duet_test_rng_next(&rng) >> 11) * 0x1p-52 - 1.0);
}

static uint32_t irand(uint32_t n)
{
    return (uint32_t)(duet_test_rng_next(&rng) % n);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);

    ck_assert_ptr_nonnull(p);
    return p;
}

static float *rand_floats(size_t n, float scale, float offset)
{
    float *a = xmalloc(n * sizeof(float));

    for (size_t i = 0; i < n; i++)
        a[i] = urand() * scale + offset;
    return a;
}

static void shuffle(uint32_t *a, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = irand(i), t = a[i - 1];

        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* bf16: the top half of the f32, rounded to nearest even (no NaN among the inputs). */
static uint16_t f32_to_bf16(float x)
{
    uint32_t u;

    memcpy(&u, &x, sizeof(u));
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;

    memcpy(&x, &u, sizeof(x));
    return x;
}

/* f16: rounded to nearest even, subnormals kept, overflow to infinity (no NaN among the inputs).
 * Written out rather than with _Float16, which not every host compiler has. */
static uint16_t f32_to_f16(float x)
{
    uint32_t u, a, sign, h, rem;
    float mag;

    memcpy(&u, &x, sizeof(u));
    sign = (u >> 16) & 0x8000u;
    a = u & 0x7fffffffu;
    if (a >= 0x477ff000u) /* 65520 and above, infinity: ties to even go up to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: a multiple of 2^-24 (1024 × 2^-24 is the least normal) */
        memcpy(&mag, &a, sizeof(mag));
        return (uint16_t)(sign | (uint32_t)lrintf(mag * 0x1p24f));
    }
    a -= 112u << 23; /* exponent bias 127 to 15 */
    h = a >> 13;
    rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++;
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    float x;

    if (e == 0) {
        x = ldexpf((float)m, -24);
        return h & 0x8000u ? -x : x;
    }
    u = ((uint32_t)(h & 0x8000u) << 16) |
        (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112) << 23) | (m << 13));
    memcpy(&x, &u, sizeof(x));
    return x;
}

/* Element i of buf (of type dt) as f32. */
static float get_elem(const void *buf, size_t i, duet_gpu_dtype dt)
{
    if (dt == DUET_GPU_F32)
        return ((const float *)buf)[i];
    if (dt == DUET_GPU_BF16)
        return bf16_to_f32(((const uint16_t *)buf)[i]);
    return f16_to_f32(((const uint16_t *)buf)[i]);
}

/* Stores x rounded to nearest even into element i of buf. */
static void put_elem(void *buf, size_t i, duet_gpu_dtype dt, float x)
{
    if (dt == DUET_GPU_F32)
        ((float *)buf)[i] = x;
    else if (dt == DUET_GPU_BF16)
        ((uint16_t *)buf)[i] = f32_to_bf16(x);
    else
        ((uint16_t *)buf)[i] = f32_to_f16(x);
}

static float round_to(duet_gpu_dtype dt, float x)
{
    unsigned char tmp[4];

    put_elem(tmp, 0, dt, x);
    return get_elem(tmp, 0, dt);
}

/* n random elements of dt in [-scale, scale). */
static void *rand_elems(duet_gpu_dtype dt, size_t n, float scale)
{
    void *a = xmalloc(n * duet__gpu_dtype_size(dt));

    for (size_t i = 0; i < n; i++)
        put_elem(a, i, dt, urand() * scale);
    return a;
}

/* Relative tolerance of an output of dt against its row's scale. */
static double rel_tol(duet_gpu_dtype dt)
{
    return dt == DUET_GPU_F32 ? 1e-5 : dt == DUET_GPU_BF16 ? 1e-2 : 1e-3;
}

static double max_abs(const double *a, size_t n)
{
    double m = 0.0;

    for (size_t i = 0; i < n; i++)
        m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

/* ---- device buffers ------------------------------------------------------------------------ */

static void *to_dev(const void *host, size_t bytes)
{
    void *d = NULL;

    CUDA_OK(cudaMalloc(&d, bytes ? bytes : 1));
    if (bytes)
        CUDA_OK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

/* Waits for the device (a kernel's fault surfaces here) and copies bytes back. */
static void from_dev(void *host, const void *dev, size_t bytes)
{
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(host, dev, bytes, cudaMemcpyDeviceToHost));
}

/* ---- gather, convert, activations, row moves ------------------------------------------------ */

START_TEST(test_gather_rows_stores_and_adds_table_rows)
{
    enum { TABLE_ROWS = 40, OFFSET = 3 };
    static const uint32_t widths[] = {5, 300};

    for (int t = 0; t < N_DTYPES; t++)
        for (int wi = 0; wi < 2; wi++)
            for (int ri = 0; ri < N_ROW_COUNTS; ri++)
                for (int acc = 0; acc < 2; acc++) {
                    duet_gpu_dtype dt = dtypes[t];
                    uint32_t width = widths[wi], rows = row_counts[ri], idx[17];
                    size_t stride = width + 3, n_out = rows * stride;
                    void *table = rand_elems(dt, (size_t)TABLE_ROWS * width, 1.0f);
                    float *out = rand_floats(n_out, 1.0f, 0.0f), *got = xmalloc(n_out * 4);
                    void *d_table =
                        to_dev(table, (size_t)TABLE_ROWS * width * duet__gpu_dtype_size(dt));
                    uint32_t *d_idx;
                    float *d_out = to_dev(out, n_out * sizeof(float));

                    for (uint32_t r = 0; r < rows; r++)
                        idx[r] = irand(TABLE_ROWS - OFFSET);
                    d_idx = to_dev(idx, rows * sizeof(uint32_t));
                    CUDA_OK(duet__gpu_gather_rows(0, dt, d_table, width, d_idx, OFFSET, rows, d_out,
                                                  stride, acc));
                    from_dev(got, d_out, n_out * sizeof(float));
                    for (uint32_t r = 0; r < rows; r++)
                        for (size_t c = 0; c < stride; c++) {
                            float init = out[r * stride + c], want = init;

                            if (c < width) {
                                float v =
                                    get_elem(table, (idx[r] + OFFSET) * (size_t)width + c, dt);

                                want = acc ? init + v : v;
                            }
                            CHECK_CLOSE(got[r * stride + c], want, 0.0,
                                        "%s width %u row %u col %zu acc %d", dtype_names[t], width,
                                        r, c, acc);
                        }
                    cudaFree(d_table), cudaFree(d_idx), cudaFree(d_out);
                    free(table), free(out), free(got);
                }
}
END_TEST

/* One norm run: rows × dim inputs, y of dt (in place on x when inplace). */
static void run_norm(bool layer, duet_gpu_dtype dt, uint32_t rows, uint32_t dim, bool inplace,
                     const char *dt_name)
{
    size_t xs = dim + 5, ys = inplace ? xs : dim + 2, esz = duet__gpu_dtype_size(dt);
    float *x = rand_floats(rows * xs, 2.0f, layer ? 3.0f : 0.0f);
    float *w = rand_floats(dim, 0.5f, 1.0f), *b = rand_floats(dim, 0.1f, 0.0f);
    const float eps = 1e-5f;
    float *d_x = to_dev(x, rows * xs * 4), *d_w = to_dev(w, dim * 4), *d_b = to_dev(b, dim * 4);
    void *got = xmalloc(rows * ys * esz), *d_y = d_x;
    double *ref = xmalloc(dim * sizeof(double));

    if (!inplace)
        CUDA_OK(cudaMalloc(&d_y, rows * ys * esz));
    if (layer)
        CUDA_OK(duet__gpu_layernorm(0, d_x, xs, d_w, d_b, eps, dt, d_y, ys, rows, dim));
    else
        CUDA_OK(duet__gpu_rmsnorm(0, d_x, xs, d_w, eps, dt, d_y, ys, rows, dim));
    from_dev(got, d_y, rows * ys * esz);
    for (uint32_t r = 0; r < rows; r++) {
        const float *xr = x + r * xs;
        double sum = 0.0, ss = 0.0, mean, inv, scale;

        for (uint32_t i = 0; i < dim; i++)
            sum += xr[i];
        mean = layer ? sum / dim : 0.0;
        for (uint32_t i = 0; i < dim; i++)
            ss += (xr[i] - mean) * (xr[i] - mean);
        inv = 1.0 / sqrt(ss / dim + eps);
        for (uint32_t i = 0; i < dim; i++)
            ref[i] = (xr[i] - mean) * inv * w[i] + (layer ? b[i] : 0.0);
        scale = max_abs(ref, dim);
        for (uint32_t i = 0; i < dim; i++)
            CHECK_CLOSE(get_elem(got, r * ys + i, dt), ref[i], rel_tol(dt) * scale,
                        "%s %s dim %u row %u col %u in place %d", layer ? "layernorm" : "rmsnorm",
                        dt_name, dim, r, i, inplace);
    }
    if (!inplace)
        cudaFree(d_y);
    cudaFree(d_x), cudaFree(d_w), cudaFree(d_b);
    free(x), free(w), free(b), free(got), free(ref);
}

static void run_norms(bool layer)
{
    static const uint32_t dims[] = {7, 64, 1000, 4099};

    for (int t = 0; t < N_DTYPES; t++)
        for (int di = 0; di < 4; di++)
            for (int ri = 0; ri < N_ROW_COUNTS; ri++) {
                run_norm(layer, dtypes[t], row_counts[ri], dims[di], false, dtype_names[t]);
                if (dtypes[t] == DUET_GPU_F32)
                    run_norm(layer, dtypes[t], row_counts[ri], dims[di], true, dtype_names[t]);
            }
}

/* Qwen3's q/k norms: each head of q (q_w) and k (k_w) of rows of qkv normalised in place; the
 * v heads and the padding after them untouched. */
static void run_head_norm(uint32_t rows, uint32_t qh, uint32_t kh, uint32_t hd)
{
    size_t stride = (size_t)(qh + 2 * kh) * hd + 3, n = rows * stride;
    float *x = rand_floats(n, 2.0f, 0.5f), *got = xmalloc(n * sizeof(float));
    float *qw = rand_floats(hd, 0.5f, 1.0f), *kw = rand_floats(hd, 0.5f, 1.0f);
    float *d_x = to_dev(x, n * 4), *d_q = to_dev(qw, hd * 4), *d_k = to_dev(kw, hd * 4);
    const float eps = 1e-6f;

    CUDA_OK(duet__gpu_head_rmsnorm(0, d_x, stride, rows, qh, kh, hd, d_q, d_k, eps));
    from_dev(got, d_x, n * 4);
    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t h = 0; h < qh + 2 * kh; h++) {
            const float *xr = x + r * stride + (size_t)h * hd, *w = h < qh ? qw : kw;
            double ss = 0.0, inv;

            for (uint32_t i = 0; i < hd; i++)
                ss += (double)xr[i] * xr[i];
            inv = 1.0 / sqrt(ss / hd + eps);
            for (uint32_t i = 0; i < hd; i++) {
                double want = h < qh + kh ? xr[i] * inv * w[i] : xr[i];

                CHECK_CLOSE(got[r * stride + (size_t)h * hd + i], want, 1e-5 * (1 + fabs(want)),
                            "head rmsnorm rows %u heads %u/%u hd %u: row %u head %u dim %u", rows,
                            qh, kh, hd, r, h, i);
            }
        }
    cudaFree(d_x), cudaFree(d_q), cudaFree(d_k);
    free(x), free(got), free(qw), free(kw);
}

START_TEST(test_head_rmsnorm_normalises_each_q_and_k_head)
{
    static const uint32_t hds[] = {16, 64, 128, 256};

    for (int ri = 0; ri < N_ROW_COUNTS; ri++)
        for (int hi = 0; hi < 4; hi++) {
            run_head_norm(row_counts[ri], 4, 2, hds[hi]);
            run_head_norm(row_counts[ri], 16, 8, hds[hi]);
        }
}
END_TEST

START_TEST(test_rmsnorm_matches_the_reference)
{
    run_norms(false);
}
END_TEST

START_TEST(test_layernorm_matches_the_reference)
{
    run_norms(true);
}
END_TEST

START_TEST(test_convert_rounds_to_nearest_with_and_without_relu)
{
    static const uint32_t dims[] = {1, 257};

    for (int t = 0; t < N_DTYPES; t++)
        for (int di = 0; di < 2; di++)
            for (int ri = 0; ri < N_ROW_COUNTS; ri++)
                for (int relu = 0; relu < 2; relu++) {
                    duet_gpu_dtype dt = dtypes[t];
                    uint32_t rows = row_counts[ri], dim = dims[di];
                    size_t xs = dim + 1, ys = dim + 4, esz = duet__gpu_dtype_size(dt);
                    float *x = rand_floats(rows * xs, 3.0f, 0.0f), *d_x = to_dev(x, rows * xs * 4);
                    void *got = xmalloc(rows * ys * esz), *d_y = NULL;

                    CUDA_OK(cudaMalloc(&d_y, rows * ys * esz));
                    CUDA_OK(duet__gpu_convert(0, d_x, xs, dt, d_y, ys, rows, dim, relu));
                    from_dev(got, d_y, rows * ys * esz);
                    for (uint32_t r = 0; r < rows; r++)
                        for (uint32_t i = 0; i < dim; i++) {
                            float v = x[r * xs + i];

                            CHECK_CLOSE(get_elem(got, r * ys + i, dt),
                                        round_to(dt, relu && v < 0.0f ? 0.0f : v), 0.0,
                                        "%s dim %u row %u col %u relu %d", dtype_names[t], dim, r,
                                        i, relu);
                        }
                    cudaFree(d_x), cudaFree(d_y);
                    free(x), free(got);
                }
}
END_TEST

START_TEST(test_silu_mul_matches_the_reference)
{
    static const uint32_t inters[] = {1, 300};

    for (int t = 0; t < N_DTYPES; t++)
        for (int ii = 0; ii < 2; ii++)
            for (int ri = 0; ri < N_ROW_COUNTS; ri++) {
                duet_gpu_dtype dt = dtypes[t];
                uint32_t rows = row_counts[ri], inter = inters[ii];
                size_t gs = 2 * (size_t)inter + 3, os = inter + 2, esz = duet__gpu_dtype_size(dt);
                float *gu = rand_floats(rows * gs, 6.0f, 0.0f), *d_gu = to_dev(gu, rows * gs * 4);
                void *got = xmalloc(rows * os * esz), *d_out = NULL;
                double *ref = xmalloc(inter * sizeof(double));

                CUDA_OK(cudaMalloc(&d_out, rows * os * esz));
                CUDA_OK(duet__gpu_silu_mul(0, d_gu, gs, dt, d_out, os, rows, inter));
                from_dev(got, d_out, rows * os * esz);
                for (uint32_t r = 0; r < rows; r++) {
                    double scale;

                    for (uint32_t i = 0; i < inter; i++) {
                        double g = gu[r * gs + i], u = gu[r * gs + inter + i];

                        ref[i] = g / (1.0 + exp(-g)) * u;
                    }
                    scale = max_abs(ref, inter);
                    for (uint32_t i = 0; i < inter; i++)
                        CHECK_CLOSE(get_elem(got, r * os + i, dt), ref[i], rel_tol(dt) * scale,
                                    "%s inter %u row %u col %u", dtype_names[t], inter, r, i);
                }
                cudaFree(d_gu), cudaFree(d_out);
                free(gu), free(got), free(ref);
            }
}
END_TEST

START_TEST(test_add_bias_and_select_rows_move_exact_values)
{
    enum { SRC_ROWS = 20 };

    for (int ri = 0; ri < N_ROW_COUNTS; ri++) {
        uint32_t rows = row_counts[ri], dim = 259, idx[17];
        size_t ys = dim + 3, xs = dim + 1;
        float *y = rand_floats(rows * ys, 1.0f, 0.0f), *b = rand_floats(dim, 1.0f, 0.0f);
        float *x = rand_floats(SRC_ROWS * xs, 1.0f, 0.0f), *got = xmalloc(rows * ys * 4);
        float *d_y = to_dev(y, rows * ys * 4), *d_b = to_dev(b, dim * 4);
        float *d_x = to_dev(x, SRC_ROWS * xs * 4), *d_sel = to_dev(y, rows * ys * 4);
        uint32_t *d_idx;

        for (uint32_t r = 0; r < rows; r++)
            idx[r] = irand(SRC_ROWS);
        d_idx = to_dev(idx, rows * sizeof(uint32_t));
        CUDA_OK(duet__gpu_add_bias(0, d_y, ys, d_b, rows, dim));
        from_dev(got, d_y, rows * ys * 4);
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t i = 0; i < ys; i++)
                CHECK_CLOSE(got[r * ys + i], i < dim ? y[r * ys + i] + b[i] : y[r * ys + i], 0.0,
                            "bias row %u col %u", r, i);
        CUDA_OK(duet__gpu_select_rows(0, d_x, xs, d_idx, rows, d_sel, ys, dim));
        from_dev(got, d_sel, rows * ys * 4);
        for (uint32_t r = 0; r < rows; r++)
            for (uint32_t i = 0; i < ys; i++)
                CHECK_CLOSE(got[r * ys + i], i < dim ? x[idx[r] * xs + i] : y[r * ys + i], 0.0,
                            "select row %u col %u", r, i);
        cudaFree(d_y), cudaFree(d_b), cudaFree(d_x), cudaFree(d_sel), cudaFree(d_idx);
        free(y), free(b), free(x), free(got);
    }
}
END_TEST

START_TEST(test_unshard_logits_reassembles_the_vocabulary)
{
    enum { TP = 3, SHARD = 7, VOCAB = 19 }; /* the last shard is padded */

    for (int ri = 0; ri < N_ROW_COUNTS; ri++) {
        uint32_t n = row_counts[ri];
        size_t gathered_n = (size_t)TP * n * SHARD;
        float *g = rand_floats(gathered_n, 1.0f, 0.0f), *got = xmalloc(n * VOCAB * 4);
        float *d_g = to_dev(g, gathered_n * 4), *d_l = NULL;

        CUDA_OK(cudaMalloc((void **)&d_l, n * VOCAB * 4));
        CUDA_OK(duet__gpu_unshard_logits(0, d_g, n, SHARD, VOCAB, d_l));
        from_dev(got, d_l, n * VOCAB * 4);
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t v = 0; v < VOCAB; v++)
                CHECK_CLOSE(got[i * VOCAB + v],
                            g[((size_t)(v / SHARD) * n + i) * SHARD + v % SHARD], 0.0,
                            "row %u token %u", i, v);
        cudaFree(d_g), cudaFree(d_l);
        free(g), free(got);
    }
}
END_TEST

/* ---- RoPE and the KV-cache write ------------------------------------------------------------ */

static const uint32_t head_dims[] = {64, 80, 128, 256};
#define N_HEAD_DIMS 4
static const uint32_t block_sizes[] = {1, 16};
/* (query heads, kv heads): groups of 1 and 4, and a single kv head. */
static const uint32_t head_cfgs[][2] = {{4, 4}, {8, 2}, {4, 1}};
#define N_HEAD_CFGS 3

static double *rope_freqs(uint32_t hd)
{
    double *f = xmalloc(hd / 2 * sizeof(double));

    for (uint32_t i = 0; i < hd / 2; i++)
        f[i] = pow(10000.0, -2.0 * i / hd);
    return f;
}

typedef struct rope_case {
    duet_gpu_dtype dt;
    uint32_t hd, bs, nh, kvh;
    bool rotate;
} rope_case;

/* The rotated q and k heads against the reference; v and the padding unchanged. */
static void rope_check_rows(const rope_case *c, const float *qkv, const float *got, size_t stride,
                            uint32_t rows, const uint32_t *pos, const double *freq)
{
    uint32_t half = c->hd / 2, heads = c->nh + c->kvh;

    for (uint32_t r = 0; r < rows; r++)
        for (size_t e = 0; e < stride; e++) {
            size_t at = r * stride + e;
            uint32_t h = (uint32_t)(e / c->hd), i = (uint32_t)(e % c->hd);
            double want = qkv[at], tol = 0.0;

            if (c->rotate && h < heads) {
                uint32_t k = i % half;
                double x0 = qkv[at - i + k], x1 = qkv[at - i + k + half];
                double a = (double)pos[r] * freq[k];

                want = i < half ? x0 * cos(a) - x1 * sin(a) : x1 * cos(a) + x0 * sin(a);
                tol = 1e-5 * (fabs(x0) + fabs(x1));
            }
            CHECK_CLOSE(got[at], want, tol, "rope %s hd %u row %u elem %zu", dtype_names[c->dt],
                        c->hd, r, e);
        }
}

/* Every element of the cache: the row's rotated K or its V at the row's slot of `layer`, the
 * initial contents elsewhere. */
static void rope_check_cache(const rope_case *c, const duet_gpu_kv *kv, const void *init,
                             const void *got, const float *qkv_got, size_t stride, uint32_t rows,
                             const uint32_t *slot, uint32_t layer)
{
    size_t n = (size_t)kv->num_blocks * kv->block_elems;
    int32_t *row_of = xmalloc((size_t)kv->num_blocks * kv->block_size * sizeof(int32_t));

    for (size_t s = 0; s < (size_t)kv->num_blocks * kv->block_size; s++)
        row_of[s] = -1;
    for (uint32_t r = 0; r < rows; r++)
        row_of[slot[r]] = (int32_t)r;
    for (size_t e = 0; e < n; e++) {
        size_t b = e / kv->block_elems, in = e % kv->block_elems;
        uint32_t d = (uint32_t)(in % kv->head_dim),
                 s = (uint32_t)(in / kv->head_dim % kv->block_size);
        uint32_t h = (uint32_t)(in / kv->head_dim / kv->block_size % kv->kv_heads);
        uint32_t kind = (uint32_t)(in / kv->head_dim / kv->block_size / kv->kv_heads % 2);
        uint32_t l = (uint32_t)(in / kv->head_dim / kv->block_size / kv->kv_heads / 2);
        int32_t r = row_of[b * kv->block_size + s];
        float want = get_elem(init, e, c->dt);

        if (l == layer && r >= 0)
            want = round_to(
                c->dt,
                qkv_got[(size_t)r * stride + (size_t)(c->nh + kind * c->kvh + h) * c->hd + d]);
        if (get_elem(got, e, c->dt) != want)
            ck_abort_msg("cache %s hd %u bs %u: block %zu layer %u kind %u head %u slot %u dim "
                         "%u: got %.9g, want %.9g",
                         dtype_names[c->dt], c->hd, c->bs, b, l, kind, h, s, d,
                         (double)get_elem(got, e, c->dt), (double)want);
    }
    free(row_of);
}

static void run_rope(const rope_case *c)
{
    enum { ROWS = 17, LAYERS = 2, LAYER = 1 };
    uint32_t nb = (ROWS + 5) / c->bs + 2, n_slots = nb * c->bs, pos[ROWS], slot[ROWS];
    size_t stride = (size_t)(c->nh + 2 * c->kvh) * c->hd + 3;
    duet_gpu_kv kv = {.block_elems = (size_t)LAYERS * 2 * c->kvh * c->bs * c->hd,
                      .num_blocks = nb,
                      .block_size = c->bs,
                      .num_layers = LAYERS,
                      .kv_heads = c->kvh,
                      .head_dim = c->hd,
                      .dtype = c->dt};
    size_t cache_n = (size_t)nb * kv.block_elems,
           cache_bytes = cache_n * duet__gpu_dtype_size(c->dt);
    uint32_t *slots = xmalloc(n_slots * sizeof(uint32_t));
    float *qkv = rand_floats(ROWS * stride, 1.0f, 0.0f), *qkv_got = xmalloc(ROWS * stride * 4);
    double *freq = rope_freqs(c->hd);
    void *cache = rand_elems(c->dt, cache_n, 1.0f), *cache_got = xmalloc(cache_bytes);
    duet_gpu_rope_args a = {
        .stride = stride, .rows = ROWS, .num_heads = c->nh, .kv = kv, .layer = LAYER};

    for (uint32_t s = 0; s < n_slots; s++)
        slots[s] = s;
    shuffle(slots, n_slots);
    for (uint32_t r = 0; r < ROWS; r++) {
        pos[r] = r == 0 ? 0 : irand(100000);
        slot[r] = slots[r];
    }
    a.qkv = to_dev(qkv, ROWS * stride * 4);
    a.pos = to_dev(pos, sizeof(pos));
    a.slot = to_dev(slot, sizeof(slot));
    a.inv_freq = c->rotate ? to_dev(freq, c->hd / 2 * sizeof(double)) : NULL;
    a.kv.base = to_dev(cache, cache_bytes);
    CUDA_OK(duet__gpu_rope_kv_write(0, &a));
    from_dev(qkv_got, a.qkv, ROWS * stride * 4);
    from_dev(cache_got, a.kv.base, cache_bytes);
    rope_check_rows(c, qkv, qkv_got, stride, ROWS, pos, freq);
    rope_check_cache(c, &kv, cache, cache_got, qkv_got, stride, ROWS, slot, LAYER);
    cudaFree(a.qkv), cudaFree((void *)a.pos), cudaFree((void *)a.slot);
    cudaFree((void *)a.inv_freq), cudaFree(a.kv.base);
    free(slots), free(qkv), free(qkv_got), free(freq), free(cache), free(cache_got);
}

START_TEST(test_rope_rotates_q_and_k_and_writes_the_cache_slots)
{
    for (int t = 0; t < N_DTYPES; t++)
        for (int hi = 0; hi < N_HEAD_DIMS; hi++)
            for (int bi = 0; bi < 2; bi++)
                for (int ci = 0; ci < N_HEAD_CFGS; ci++)
                    for (int rot = 0; rot < 2; rot++) {
                        rope_case c = {dtypes[t],        head_dims[hi],    block_sizes[bi],
                                       head_cfgs[ci][0], head_cfgs[ci][1], rot};

                        run_rope(&c);
                    }
}
END_TEST

/* ---- paged attention ------------------------------------------------------------------------- */

#define MAX_SEGS 8

static uint32_t attn_window; /* the sliding window world_init gives its worlds (0: none) */

/* One layer's cache filled at random, sequences with shuffled block tables, queries, and the
 * device copies of all of it. */
typedef struct attn_world {
    duet_gpu_attn_args a; /* device pointers */
    void *cache;          /* host copy of the cache */
    uint32_t n_segs, n_rows;
    duet_gpu_seg segs[MAX_SEGS];
    uint32_t *bt; /* host block tables */
    float *q;     /* host queries */
    size_t out_bytes;
} attn_world;

static void world_init(attn_world *w, duet_gpu_dtype dt, uint32_t hd, uint32_t bs, uint32_t nh,
                       uint32_t kvh, const uint32_t *n, const uint32_t *pos, uint32_t n_segs)
{
    enum { LAYERS = 2, LAYER = 1, SPARE = 3 };
    uint32_t n_bt = 0, *perm;
    size_t cache_n, esz = duet__gpu_dtype_size(dt);

    memset(w, 0, sizeof(*w));
    w->n_segs = n_segs;
    for (uint32_t g = 0; g < n_segs; g++) {
        w->segs[g] = (duet_gpu_seg){w->n_rows, n[g], pos[g], n_bt};
        w->n_rows += n[g];
        n_bt += (pos[g] + n[g] + bs - 1) / bs;
    }
    perm = xmalloc((n_bt + SPARE) * sizeof(uint32_t));
    for (uint32_t i = 0; i < n_bt + SPARE; i++)
        perm[i] = i;
    shuffle(perm, n_bt + SPARE);
    w->bt = perm; /* the first n_bt entries: every table's blocks, back to back */
    w->a.kv = (duet_gpu_kv){.block_elems = (size_t)LAYERS * 2 * kvh * bs * hd,
                            .num_blocks = n_bt + SPARE,
                            .block_size = bs,
                            .num_layers = LAYERS,
                            .kv_heads = kvh,
                            .head_dim = hd,
                            .dtype = dt};
    cache_n = (size_t)w->a.kv.num_blocks * w->a.kv.block_elems;
    w->cache = rand_elems(dt, cache_n, 1.0f);
    w->a.kv.base = to_dev(w->cache, cache_n * esz);
    w->a.layer = LAYER;
    w->a.num_heads = nh;
    w->a.scale = 2.0f / sqrtf((float)hd);
    w->a.q_stride = (size_t)nh * hd + 5;
    w->q = rand_floats(w->n_rows * w->a.q_stride, 1.0f, 0.0f);
    w->a.q = to_dev(w->q, w->n_rows * w->a.q_stride * 4);
    w->a.out_stride = (size_t)nh * hd + 3;
    w->out_bytes = w->n_rows * w->a.out_stride * esz;
    CUDA_OK(cudaMalloc(&w->a.out, w->out_bytes));
    CUDA_OK(cudaMemset(w->a.out, 0, w->out_bytes));
    w->a.segs = to_dev(w->segs, n_segs * sizeof(duet_gpu_seg));
    w->a.block_tables = to_dev(w->bt, n_bt * sizeof(uint32_t));
    w->a.window = attn_window;
}

static void world_fini(attn_world *w)
{
    cudaFree(w->a.kv.base), cudaFree((void *)w->a.q), cudaFree(w->a.out);
    cudaFree((void *)w->a.segs), cudaFree((void *)w->a.block_tables);
    free(w->cache), free(w->bt), free(w->q);
}

/* Head h of the row at position p of sequence g, in double from the cache's own values. */
static void attn_reference(const attn_world *w, uint32_t g, uint32_t row, uint32_t p, uint32_t h,
                           double *out, double *score)
{
    const duet_gpu_kv *kv = &w->a.kv;
    const uint32_t hd = kv->head_dim, kvh = h / (w->a.num_heads / kv->kv_heads);
    const uint32_t *bt = w->bt + w->segs[g].bt;
    const float *q = w->q + row * w->a.q_stride + (size_t)h * hd;
    const uint32_t win = w->a.window, first = win && p + 1 > win ? p + 1 - win : 0;
    double mx = -INFINITY, sum = 0.0;

    for (uint32_t j = first; j <= p; j++) {
        size_t k = duet__gpu_kv_pos_offset(kv, bt, w->a.layer, 0, kvh, j);
        double dot = 0.0;

        for (uint32_t d = 0; d < hd; d++)
            dot += (double)q[d] * get_elem(w->cache, k + d, kv->dtype);
        score[j] = (double)w->a.scale * dot;
        mx = score[j] > mx ? score[j] : mx;
    }
    for (uint32_t d = 0; d < hd; d++)
        out[d] = 0.0;
    for (uint32_t j = first; j <= p; j++) {
        size_t v = duet__gpu_kv_pos_offset(kv, bt, w->a.layer, 1, kvh, j);
        double e = exp(score[j] - mx);

        sum += e;
        for (uint32_t d = 0; d < hd; d++)
            out[d] += e * get_elem(w->cache, v + d, kv->dtype);
    }
    for (uint32_t d = 0; d < hd; d++)
        out[d] /= sum;
}

/* Every row of sequence g, every head, against the reference. */
static void world_check_seg(const attn_world *w, const void *got, uint32_t g, const char *what)
{
    const duet_gpu_seg *s = &w->segs[g];
    const uint32_t hd = w->a.kv.head_dim;
    double *ref = xmalloc(hd * sizeof(double)), *score = xmalloc((s->pos + s->n) * sizeof(double));

    for (uint32_t i = 0; i < s->n; i++)
        for (uint32_t h = 0; h < w->a.num_heads; h++) {
            size_t at = (s->row0 + i) * w->a.out_stride + (size_t)h * hd;
            double tol;

            attn_reference(w, g, s->row0 + i, s->pos + i, h, ref, score);
            tol = rel_tol(w->a.kv.dtype) * max_abs(ref, hd) + 1e-5;
            for (uint32_t d = 0; d < hd; d++)
                CHECK_CLOSE(get_elem(got, at + d, w->a.kv.dtype), ref[d], tol,
                            "%s %s hd %u bs %u heads %u/%u: seq %u (pos %u, n %u) row %u head "
                            "%u dim %u",
                            what, dtype_names[w->a.kv.dtype], hd, w->a.kv.block_size,
                            w->a.num_heads, w->a.kv.kv_heads, g, s->pos, s->n, i, h, d);
        }
    free(ref), free(score);
}

typedef struct attn_case {
    duet_gpu_dtype dt;
    uint32_t hd, bs, nh, kvh;
} attn_case;

/* Decode sequences with contexts lens[] (n = 1, pos = len − 1) and, second in the segment list,
 * a three-row sequence the decode list skips. */
static void run_decode(const attn_case *c, const uint32_t *lens, uint32_t n_lens)
{
    uint32_t n[MAX_SEGS], pos[MAX_SEGS], dec[MAX_SEGS], n_segs = 0, n_dec = 0, max_parts = 0;
    attn_world w;
    void *got;
    float *part_out, *part_ml;
    uint32_t *d_dec;

    for (uint32_t i = 0; i < n_lens; i++) {
        uint32_t parts = duet__gpu_decode_parts(lens[i]);

        if (n_segs == 1) {
            n[n_segs] = 3, pos[n_segs] = 4;
            n_segs++;
        }
        n[n_segs] = 1, pos[n_segs] = lens[i] - 1;
        dec[n_dec++] = n_segs++;
        max_parts = parts > max_parts ? parts : max_parts;
    }
    world_init(&w, c->dt, c->hd, c->bs, c->nh, c->kvh, n, pos, n_segs);
    d_dec = to_dev(dec, n_dec * sizeof(uint32_t));
    CUDA_OK(
        cudaMalloc((void **)&part_out, (size_t)n_dec * c->nh * max_parts * c->hd * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&part_ml, (size_t)n_dec * c->nh * max_parts * 2 * sizeof(float)));
    CUDA_OK(duet__gpu_attn_decode(0, &w.a, d_dec, n_dec, max_parts, part_out, part_ml));
    got = xmalloc(w.out_bytes);
    from_dev(got, w.a.out, w.out_bytes);
    for (uint32_t i = 0; i < n_dec; i++)
        world_check_seg(&w, got, dec[i], max_parts > 1 ? "decode (merged)" : "decode");
    cudaFree(d_dec), cudaFree(part_out), cudaFree(part_ml);
    free(got);
    world_fini(&w);
}

START_TEST(test_decode_attention_matches_the_reference)
{
    static const uint32_t long_lens[] = {1, 7, 511, 512, 513, 1500}, short_lens[] = {7, 1, 512};

    for (int t = 0; t < N_DTYPES; t++)
        for (int hi = 0; hi < N_HEAD_DIMS; hi++)
            for (int bi = 0; bi < 2; bi++)
                for (int ci = 0; ci < N_HEAD_CFGS; ci++) {
                    attn_case c = {dtypes[t], head_dims[hi], block_sizes[bi], head_cfgs[ci][0],
                                   head_cfgs[ci][1]};

                    run_decode(&c, long_lens, 6);
                    run_decode(&c, short_lens, 3);
                }
}
END_TEST

/* Prefill tiles of cfg over sequences of 17 rows from 0, 5 rows at 700 (scoring), 70 rows at 30
 * (partial tiles) and a single row at 9. */
static void run_prefill(const attn_case *c, const duet_gpu_prefill_cfg *cfg)
{
    static const uint32_t n[] = {17, 5, 70, 1}, pos[] = {0, 700, 30, 9};
    duet_gpu_tile tiles[64];
    uint32_t n_tiles = 0;
    attn_world w;
    duet_gpu_tile *d_tiles;
    void *got;

    world_init(&w, c->dt, c->hd, c->bs, c->nh, c->kvh, n, pos, 4);
    for (uint32_t g = 0; g < 4; g++)
        for (uint32_t q0 = 0; q0 < n[g]; q0 += cfg->q_rows)
            tiles[n_tiles++] = (duet_gpu_tile){g, q0};
    for (uint32_t i = n_tiles; i > 1; i--) { /* any order */
        uint32_t j = irand(i);
        duet_gpu_tile t = tiles[i - 1];

        tiles[i - 1] = tiles[j];
        tiles[j] = t;
    }
    d_tiles = to_dev(tiles, n_tiles * sizeof(duet_gpu_tile));
    CUDA_OK(duet__gpu_attn_prefill(0, &w.a, d_tiles, n_tiles, cfg));
    got = xmalloc(w.out_bytes);
    from_dev(got, w.a.out, w.out_bytes);
    for (uint32_t g = 0; g < 4; g++)
        world_check_seg(&w, got, g, cfg->q_rows >= 16 ? "prefill" : "prefill (small tiles)");
    cudaFree(d_tiles);
    free(got);
    world_fini(&w);
}

START_TEST(test_prefill_attention_matches_the_reference)
{
    int optin = 0;

    CUDA_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    for (int t = 0; t < N_DTYPES; t++)
        for (int hi = 0; hi < N_HEAD_DIMS; hi++)
            for (int bi = 0; bi < 2; bi++)
                for (int ci = 0; ci < N_HEAD_CFGS; ci++) {
                    attn_case c = {dtypes[t], head_dims[hi], block_sizes[bi], head_cfgs[ci][0],
                                   head_cfgs[ci][1]};
                    duet_gpu_prefill_cfg cfg[3];

                    ck_assert_int_eq(duet__gpu_prefill_config(c.hd, (size_t)optin, &cfg[0]),
                                     DUET_STATUS_OK);
                    ck_assert_int_eq(duet__gpu_prefill_config(c.hd, 48 * 1024, &cfg[1]),
                                     DUET_STATUS_OK);
                    /* A small tile with three warps: partial chunks and tiles everywhere. */
                    cfg[2] =
                        (duet_gpu_prefill_cfg){8, 16, 96, duet__gpu_prefill_shared(8, 16, c.hd)};
                    CUDA_OK(duet__gpu_attn_prefill_setup(cfg[0].shared_bytes));
                    for (int k = 0; k < 3; k++)
                        run_prefill(&c, &cfg[k]);
                }
}
END_TEST

/* A sliding window: decode partitions from each row's window start (a window of 600 over 1500
 * positions spans two partitions), and prefill tiles whose rows start their windows at different
 * chunks (window 13 and 40, 70 rows from position 30). The cache before each window holds random
 * values: reading them would show. */
START_TEST(test_windowed_attention_reads_only_the_window)
{
    static const uint32_t lens[] = {1, 7, 599, 600, 601, 1500};
    static const uint32_t windows[] = {13, 40, 600};
    attn_case c = {DUET_GPU_F32, 64, 16, 8, 2};
    int optin = 0;
    duet_gpu_prefill_cfg cfg[2];

    CUDA_OK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
    ck_assert_int_eq(duet__gpu_prefill_config(c.hd, (size_t)optin, &cfg[0]), DUET_STATUS_OK);
    cfg[1] = (duet_gpu_prefill_cfg){8, 16, 96, duet__gpu_prefill_shared(8, 16, c.hd)};
    CUDA_OK(duet__gpu_attn_prefill_setup(cfg[0].shared_bytes));
    for (int t = 0; t < N_DTYPES; t++)
        for (int wi = 0; wi < 3; wi++) {
            c.dt = dtypes[t];
            attn_window = windows[wi];
            run_decode(&c, lens, 6);
            run_prefill(&c, &cfg[0]);
            run_prefill(&c, &cfg[1]);
        }
    attn_window = 0;
}
END_TEST

int main(void)
{
    /* The device tests, each its own TCase with the launch arithmetic's beside them. */
    const struct duet_test_case device_cases[] = {
        {"gather", test_gather_rows_stores_and_adds_table_rows},
        {"rmsnorm", test_rmsnorm_matches_the_reference},
        {"layernorm", test_layernorm_matches_the_reference},
        {"convert", test_convert_rounds_to_nearest_with_and_without_relu},
        {"silu", test_silu_mul_matches_the_reference},
        {"rows", test_add_bias_and_select_rows_move_exact_values},
        {"unshard", test_unshard_logits_reassembles_the_vocabulary},
        {"rope", test_rope_rotates_q_and_k_and_writes_the_cache_slots},
        {"decode", test_decode_attention_matches_the_reference},
        {"prefill", test_prefill_attention_matches_the_reference},
        {"head rmsnorm", test_head_rmsnorm_normalises_each_q_and_k_head},
        {"windowed attention", test_windowed_attention_reads_only_the_window},
    };
    Suite *s;
    SRunner *sr;
    int failed;

    if (duet__gpu_device_count() == 0) {
        printf("check_gpu_kernels: SKIP: no CUDA device\n");
        return 77;
    }
    s = suite_create("gpu_kernels");
    duet_test_add_cases(s, device_cases, sizeof(device_cases) / sizeof(device_cases[0]), reseed,
                        NULL, 0);
    add_gpu_launch_cases(s);
    add_gpu_nowork_cases(s);
    sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* CUDA is initialised in this process already */
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
