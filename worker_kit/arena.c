/*
 * Scratch grown to the largest step seen, never shrunk (worker_kit.h: duet_kit_arena): one
 * allocation a worker carves into the arrays of a step, so that a steady state allocates
 * nothing.
 */
#include "worker_kit.h"

#include <stdlib.h>

void *duet_kit_arena_reserve(duet_kit_arena *a, size_t bytes)
{
    if (bytes <= a->bytes && a->base)
        return a->base;
    duet_kit_arena_fini(a);
    a->base = a->alloc ? a->alloc(bytes) : malloc(bytes);
    a->bytes = a->base ? bytes : 0;
    return a->base;
}

void duet_kit_arena_fini(duet_kit_arena *a)
{
    if (a->base)
        (a->release ? a->release : free)(a->base);
    a->base = NULL;
    a->bytes = 0;
}
