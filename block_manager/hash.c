/*
 * Content hashes of full blocks: XXH64 (Yann Collet's xxHash, 64-bit variant, seed 0) over
 *
 *     byte 0      1 for the first block of a sequence, else 0
 *     bytes 1..8  the previous block's hash, little endian (0 for a first block)
 *     then        the block's tokens, each as a 4-byte little-endian int32
 *
 * so a block's hash depends on the whole prefix before it (vLLM's chained hash over
 * (is_first, prev_hash, tokens)). The hash only finds candidates: allocator.c compares the tokens
 * and the previous block of a candidate before reusing it, so a collision costs a miss, never
 * wrong KV.
 *
 * The streaming state below is the reference algorithm: 32-byte stripes into four accumulators,
 * a tail of up to 31 bytes buffered, merged and avalanched at the end. The encoding above is
 * produced in a small stack buffer so the result does not depend on the host's byte order.
 */
#include "block_manager-int.h"

#include <string.h>

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

struct xxh64_state {
    uint64_t v[4];    /* stripe accumulators */
    uint64_t total;   /* bytes consumed */
    uint8_t buf[32];  /* pending bytes of an incomplete stripe */
    uint32_t buf_len; /* bytes in buf */
    uint64_t seed;    /* as given */
};

static uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

static uint64_t read64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static uint64_t xxh_merge(uint64_t acc, uint64_t val)
{
    acc ^= xxh_round(0, val);
    return acc * P1 + P4;
}

static void xxh_init(struct xxh64_state *s, uint64_t seed)
{
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->v[0] = seed + P1 + P2;
    s->v[1] = seed + P2;
    s->v[2] = seed;
    s->v[3] = seed - P1;
}

static void xxh_stripe(struct xxh64_state *s, const uint8_t *p)
{
    for (int i = 0; i < 4; i++)
        s->v[i] = xxh_round(s->v[i], read64(p + 8 * (size_t)i));
}

static void xxh_update(struct xxh64_state *s, const uint8_t *p, size_t len)
{
    s->total += len;
    if (s->buf_len + len < 32) {
        memcpy(s->buf + s->buf_len, p, len);
        s->buf_len += (uint32_t)len;
        return;
    }
    if (s->buf_len) {
        size_t take = 32 - s->buf_len;

        memcpy(s->buf + s->buf_len, p, take);
        xxh_stripe(s, s->buf);
        p += take;
        len -= take;
        s->buf_len = 0;
    }
    for (; len >= 32; p += 32, len -= 32)
        xxh_stripe(s, p);
    memcpy(s->buf, p, len);
    s->buf_len = (uint32_t)len;
}

static uint64_t xxh_digest(const struct xxh64_state *s)
{
    const uint8_t *p = s->buf, *end = s->buf + s->buf_len;
    uint64_t h;

    if (s->total >= 32) {
        h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12) + rotl64(s->v[3], 18);
        for (int i = 0; i < 4; i++)
            h = xxh_merge(h, s->v[i]);
    } else {
        h = s->seed + P5;
    }
    h += s->total;
    for (; p + 8 <= end; p += 8)
        h = rotl64(h ^ xxh_round(0, read64(p)), 27) * P1 + P4;
    if (p + 4 <= end) {
        h = rotl64(h ^ ((uint64_t)read32(p) * P1), 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++)
        h = rotl64(h ^ (*p * P5), 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    return h ^ (h >> 32);
}

uint64_t duet__xxh64(const void *data, size_t len, uint64_t seed)
{
    struct xxh64_state s;

    xxh_init(&s, seed);
    xxh_update(&s, data, len);
    return xxh_digest(&s);
}

uint64_t duet__block_hash(bool is_first, uint64_t prev_hash, const int32_t *tokens, uint32_t n)
{
    struct xxh64_state s;
    uint8_t buf[256];
    size_t len = 0;

    xxh_init(&s, 0);
    buf[len++] = is_first ? 1 : 0;
    for (int i = 0; i < 8; i++)
        buf[len++] = (uint8_t)(is_first ? 0 : prev_hash >> (8 * i));
    for (uint32_t i = 0; i < n; i++) {
        uint32_t t = (uint32_t)tokens[i];

        if (len + 4 > sizeof(buf)) {
            xxh_update(&s, buf, len);
            len = 0;
        }
        for (int k = 0; k < 4; k++)
            buf[len++] = (uint8_t)(t >> (8 * k));
    }
    xxh_update(&s, buf, len);
    return xxh_digest(&s);
}

uint64_t duet__mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}
