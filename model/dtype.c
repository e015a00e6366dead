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

const char *duet_dtype_name(duet_dtype dtype)
{
    return (unsigned)dtype < N_DTYPES ? dtypes[dtype].name : "?";
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

duet_status duet_tensor_read_f32(const duet_tensor *t, uint64_t first, uint64_t count, float *out)
{
    const unsigned char *p;

    if (!duet__dtype_is_float(t->dtype) || first > t->numel || count > t->numel - first)
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
