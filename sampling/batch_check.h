/*
 * batch_check.h — what every worker checks in a batch before it touches anything (plugin.h:
 * duet_batch, duet_batch_output): pointers, counts, block ids, tokens, positions, sampling values
 * and the output arrays the flags ask for. Shared by the CPU and GPU workers so that both refuse
 * the same batches with the same messages.
 */
#ifndef DUET_BATCH_CHECK_H
#define DUET_BATCH_CHECK_H

#include <duet/plugin.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a worker's batches must fit. */
typedef struct duet_batch_limits {
    const char *who;          /* message prefix: "cpu worker", "gpu worker" */
    uint32_t vocab;           /* tokens must be below */
    uint32_t max_position;    /* positions must be below */
    uint32_t block_size;      /* positions per block */
    uint32_t num_blocks;      /* device (KV) blocks; 0 before init_cache (refused) */
    uint32_t num_swap_blocks; /* swap blocks */
} duet_batch_limits;

/* Checks the batch and the output against lim. On success *rows = output rows of the batch and
 * *fed = fed tokens; else a message naming the sequence / pair / array in err. DUET_BATCH_VERIFY
 * is refused (UNSUPPORTED): neither worker runs the rejection sampler itself. */
duet_status duet__batch_check(const duet_batch_limits *lim, const duet_batch *b,
                              const duet_batch_output *o, uint64_t *rows, uint64_t *fed, char *err,
                              size_t err_size);

#endif /* DUET_BATCH_CHECK_H */
