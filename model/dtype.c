/*
 * Element types: names as safetensors spells them, sizes, and the F16 / BF16 conversions.
 *
 * safetensors stores little-endian values; so does every host duet builds for (checked below),
 * so a tensor's bytes are read in place. Conversions to the 16-bit types round to nearest, ties
 * to even, as PyTorch's .to(torch.bfloat16) and .half() do.
 */
#include "model-int.h"

#include <math.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#error "duet reads safetensors in place and needs a little-endian host"
#endif

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [DUET_DTYPE_F32] = {"F32", 4},   [DUET_DTYPE_F16] = {"F16", 2}, [DUET_DTYPE_BF16] = {"BF16", 2},
    [DUET_DTYPE_F64] = {"F64", 8},   [DUET_DTYPE_I64] = {"I64", 8}, [DUET_DTYPE_I32] = {"I32", 4},
    [DUET_DTYPE_I16] = {"I16", 2},   [DUET_DTYPE_I8] = {"I8", 1},   [DUET_DTYPE_U8] = {"U8", 1},
    [DUET_DTYPE_BOOL] = {"BOOL", 1},
};

#define N_DTYPES (sizeof(dtypes) / sizeof(dtypes[0]))

/* GGUF's block-quantised types (ggml-common.h's block layouts), by duet_dtype − Q8_0. */
static const struct {
    const char *name;
    uint32_t elems; /* per block */
    size_t bytes;   /* per block */
} blocks[] = {
    {"Q8_0", 32, 34}, {"Q4_0", 32, 18}, {"Q4_K", 256, 144}, {"Q5_K", 256, 176}, {"Q6_K", 256, 210},
};

#define N_BLOCKS (sizeof(blocks) / sizeof(blocks[0]))
#define BLOCK_OF(dtype) ((unsigned)(dtype) - (unsigned)DUET_DTYPE_Q8_0)

const char *duet_dtype_name(duet_dtype dtype)
{
    if (BLOCK_OF(dtype) < N_BLOCKS)
        return blocks[BLOCK_OF(dtype)].name;
    return (unsigned)dtype < N_DTYPES ? dtypes[dtype].name : "?";
}

uint32_t duet_dtype_block_elems(duet_dtype dtype)
{
    return BLOCK_OF(dtype) < N_BLOCKS ? blocks[BLOCK_OF(dtype)].elems : 0;
}

size_t duet_dtype_block_bytes(duet_dtype dtype)
{
    return BLOCK_OF(dtype) < N_BLOCKS ? blocks[BLOCK_OF(dtype)].bytes : 0;
}

size_t duet_dtype_size(duet_dtype dtype)
{
    return (unsigned)dtype < N_DTYPES ? dtypes[dtype].size : 0;
}

const char *duet_arch_name(duet_arch arch)
{
    switch (arch) {
    case DUET_ARCH_LLAMA:
        return "llama";
    case DUET_ARCH_OPT:
        return "opt";
    }
    return "?";
}

/* safetensors' names only: a block type in a safetensors header is an unknown dtype. */
bool duet__dtype_parse(const char *name, duet_dtype *out)
{
    for (size_t i = 0; i < N_DTYPES; i++) {
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = (duet_dtype)i;
            return true;
        }
    }
    return false;
}

bool duet__dtype_is_float(duet_dtype dtype)
{
    return dtype == DUET_DTYPE_F32 || dtype == DUET_DTYPE_F16 || dtype == DUET_DTYPE_BF16 ||
           dtype == DUET_DTYPE_F64;
}

static float bits_to_f32(uint32_t bits)
{
    float f;

    memcpy(&f, &bits, sizeof(f));
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t bits;

    memcpy(&bits, &f, sizeof(bits));
    return bits;
}

float duet__bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

uint16_t duet__f32_to_bf16(float f)
{
    uint32_t x = f32_to_bits(f);

    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN, sign kept */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

float duet_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float sub;

    if (exp == 0x1fu)
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    if (exp != 0)
        return bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
    sub = (float)man * 0x1p-24f; /* zero or subnormal: man × 2^-24, exact */
    return sign ? -sub : sub;
}

uint16_t duet_f32_to_f16(float f)
{
    uint32_t x = f32_to_bits(f), ax = x & 0x7fffffffu;
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t r, rem;

    if (ax > 0x7f800000u)
        return sign | 0x7e00u; /* NaN */
    if (ax >= 0x477ff000u)
        return sign | 0x7c00u; /* >= 65520 rounds to infinity */
    if (ax < 0x38800000u)      /* below 2^-14: subnormal, in units of 2^-24 (1024 = 2^-14) */
        return sign | (uint16_t)rintf(fabsf(f) * 0x1p24f);
    r = ((ax >> 23) - 112u) << 10 | ((ax & 0x7fffffu) >> 13);
    rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++; /* a carry into the exponent is the right result */
    return sign | (uint16_t)r;
}

void duet__store(duet_dtype dtype, const float *in, size_t n, void *out)
{
    uint16_t *h = out;

    switch (dtype) {
    case DUET_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            h[i] = duet_f32_to_f16(in[i]);
        break;
    case DUET_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            h[i] = duet__f32_to_bf16(in[i]);
        break;
    default:
        memcpy(out, in, n * sizeof(float));
    }
}

/* Converts n 16-bit values at p (maybe unaligned) to float. */
static void read_16(const unsigned char *p, uint64_t n, bool bf16, float *out)
{
    for (uint64_t i = 0; i < n; i++) {
        uint16_t h;

        memcpy(&h, p + 2 * i, sizeof(h));
        out[i] = bf16 ? duet__bf16_to_f32(h) : duet_f16_to_f32(h);
    }
}

bool duet__dtype_is_block(duet_dtype dtype)
{
    return BLOCK_OF(dtype) < N_BLOCKS;
}

/* ---- block types (ggml-common.h's layouts; the arithmetic is dequantize_row_*'s) ---------- */

static float f16_at(const unsigned char *p)
{
    uint16_t h;

    memcpy(&h, p, sizeof(h));
    return duet_f16_to_f32(h);
}

static void dequant_q8_0(const unsigned char *b, float *y)
{
    float d = f16_at(b);

    for (int i = 0; i < 32; i++)
        y[i] = d * (float)(int8_t)b[2 + i];
}

static void dequant_q4_0(const unsigned char *b, float *y)
{
    float d = f16_at(b);

    for (int i = 0; i < 16; i++) {
        y[i] = d * (float)((b[2 + i] & 0x0f) - 8);
        y[i + 16] = d * (float)((b[2 + i] >> 4) - 8);
    }
}

/* Scale and min j (0..7) of a Q4_K / Q5_K super-block: 6 bits each, packed into 12 bytes. */
static void k4_scale_min(int j, const unsigned char *q, float *sc, float *m)
{
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* Q4_K: d, dmin (f16), scales[12], qs[128]; Q5_K adds qh[32] before qs: a fifth bit. */
static void dequant_q45_k(const unsigned char *b, bool five, float *y)
{
    float d = f16_at(b), dmin = f16_at(b + 2), sc, m;
    const unsigned char *scales = b + 4, *qh = b + 16, *ql = b + (five ? 48 : 16);

    for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32) {
        for (int half = 0; half < 2; half++) {
            int bit = 2 * (j / 64) + half;

            k4_scale_min(is + half, scales, &sc, &m);
            for (int l = 0; l < 32; l++) {
                int u = half ? ql[l] >> 4 : ql[l] & 0x0f;

                if (five && (qh[l] >> bit & 1))
                    u += 16;
                y[j + 32 * half + l] = d * sc * (float)u - dmin * m;
            }
        }
    }
}

/* Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), int8 scales[16], f16 d; codes − 32. */
static void dequant_q6_k(const unsigned char *b, float *y)
{
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);

    for (int n = 0; n < 256; n += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0 & 3) << 4)) - 32;
            int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2 & 3) << 4)) - 32;
            int q3 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
            int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;

            y[n + l] = d * (float)sc[is] * (float)q1;
            y[n + l + 32] = d * (float)sc[is + 2] * (float)q2;
            y[n + l + 64] = d * (float)sc[is + 4] * (float)q3;
            y[n + l + 96] = d * (float)sc[is + 6] * (float)q4;
        }
}

static void dequant_block(duet_dtype dtype, const unsigned char *b, float *y)
{
    switch (dtype) {
    case DUET_DTYPE_Q8_0:
        dequant_q8_0(b, y);
        break;
    case DUET_DTYPE_Q4_0:
        dequant_q4_0(b, y);
        break;
    case DUET_DTYPE_Q6_K:
        dequant_q6_k(b, y);
        break;
    default:
        dequant_q45_k(b, dtype == DUET_DTYPE_Q5_K, y);
    }
}

/* Elements first .. first + count - 1 of a block tensor (rows are whole blocks, so the tensor
 * is one run of blocks in row-major order). */
static void read_blocks(const duet_tensor *t, uint64_t first, uint64_t count, float *out)
{
    uint32_t be = duet_dtype_block_elems(t->dtype);
    size_t bb = duet_dtype_block_bytes(t->dtype);
    float y[256];

    while (count) {
        uint64_t blk = first / be, in = first % be, n = be - in < count ? be - in : count;

        dequant_block(t->dtype, (const unsigned char *)t->data + blk * bb, y);
        memcpy(out, y + in, n * sizeof(float));
        out += n;
        first += n;
        count -= n;
    }
}

duet_status duet_tensor_read_codes(const duet_tensor *t, uint64_t row, uint64_t rows,
                                   uint8_t *codes, uint16_t *scales)
{
    uint64_t k, groups;
    size_t bb;

    if ((t->dtype != DUET_DTYPE_Q8_0 && t->dtype != DUET_DTYPE_Q4_0) || t->rank != 2 ||
        row > t->shape[0] || rows > t->shape[0] - row)
        return DUET_STATUS_INVALID_ARGUMENT;
    k = t->shape[1];
    groups = k / 32;
    bb = duet_dtype_block_bytes(t->dtype);
    for (uint64_t g = 0; g < rows * groups; g++) {
        const unsigned char *b = (const unsigned char *)t->data + (row * groups + g) * bb;
        uint8_t *c = codes + g * 32;

        memcpy(&scales[g], b, sizeof(uint16_t));
        for (int i = 0; i < 32 && t->dtype == DUET_DTYPE_Q8_0; i++)
            c[i] = (uint8_t)(b[2 + i] ^ 0x80u); /* two's complement q + 128 */
        for (int i = 0; i < 16 && t->dtype == DUET_DTYPE_Q4_0; i++) {
            c[i] = b[2 + i] & 0x0f;
            c[i + 16] = b[2 + i] >> 4;
        }
    }
    return DUET_STATUS_OK;
}

duet_status duet_tensor_read_f32(const duet_tensor *t, uint64_t first, uint64_t count, float *out)
{
    const unsigned char *p;

    if (first > t->numel || count > t->numel - first)
        return DUET_STATUS_INVALID_ARGUMENT;
    if (duet__dtype_is_block(t->dtype)) {
        read_blocks(t, first, count, out);
        return DUET_STATUS_OK;
    }
    if (!duet__dtype_is_float(t->dtype))
        return DUET_STATUS_INVALID_ARGUMENT;
    p = (const unsigned char *)t->data + first * duet_dtype_size(t->dtype);
    switch (t->dtype) {
    case DUET_DTYPE_F32:
        memcpy(out, p, count * sizeof(float));
        break;
    case DUET_DTYPE_F64:
        for (uint64_t i = 0; i < count; i++) {
            double d;

            memcpy(&d, p + 8 * i, sizeof(d));
            out[i] = (float)d;
        }
        break;
    default:
        read_16(p, count, t->dtype == DUET_DTYPE_BF16, out);
    }
    return DUET_STATUS_OK;
}
