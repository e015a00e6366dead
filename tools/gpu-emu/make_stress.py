#!/usr/bin/env python3
"""make_stress.py TESTS OUT: the stress test of `make check-gpu-emu` (check-gpu-emu.sh), written
from the worker suites in the source folder TESTS (tests/) into the build folder OUT: copies of
worker_harness.c, check_gpu_worker.c and check_worker_conformance.c with longer contexts than the
stock suites reach (max_position 2048 instead of 256): "greedy as the cpu worker" (check_gpu_worker)
with STRESS_PROMPT + STRESS_GEN tokens (a multi-tile, multi-chunk prefill; decode split in two
partitions and merged), and after "cache too large" (check_worker_conformance) a cudaMalloc that
really fails, then a cache that fits and a step. Every edit asserts that its text is still there:
when those files change, this script fails loudly and must be updated with them."""
import os
import sys

tests, out = sys.argv[1], sys.argv[2]
s = ''
name = ''


def rep(a, b, cnt=1):
    global s
    if s.count(a) != cnt:
        sys.exit('make_stress.py: expected %d of %r in %s, found %d' % (cnt, a, name, s.count(a)))
    s = s.replace(a, b)


def edit(file, edits):
    global s, name
    name = os.path.join(tests, file)
    s = open(name).read()
    edits()
    open(os.path.join(out, file), 'w').write(s)


def harness():
    rep('    d.max_position = 256;\n', '    d.max_position = 2048;\n', 2)


def gpu_worker():
    rep('    uint32_t table[16], nb = blocks_for(n, 16);', '    uint32_t table[128], nb = blocks_for(n, 16);')
    rep('    ck_assert_uint_le(nb, 16);', '    ck_assert_uint_le(nb, 128);')
    rep('    enum { PROMPT = 8, GEN = 128, N = PROMPT + GEN };',
        '    enum { PROMPT = STRESS_PROMPT, GEN = STRESS_GEN, N = PROMPT + GEN };')


def conformance():
    old = '''    assert_refused(&k, wk_init_cache(&k, UINT32_MAX, 0), DUET_STATUS_OUT_OF_MEMORY, UINT64_MAX,
                   "init_cache of 2^32 - 1 blocks");'''
    rep(old, old + '''
    /* STRESS: a cudaMalloc that fails (~12 TiB, within 2^32 slots), then a cache that fits and
     * a step: the failed allocation must not poison the next launches' cudaGetLastError. */
    assert_refused(&k, wk_init_cache(&k, UINT32_MAX / 256, 0), DUET_STATUS_OUT_OF_MEMORY,
                   UINT64_MAX, "init_cache of 2^24 - 1 blocks");
    ck_assert_int_eq(wk_init_cache(&k, 4, 0), DUET_STATUS_OK);
    {
        static const int32_t toks[4] = {3, 4, 5, 6};
        static const uint32_t table[1] = {0};
        duet_seq s = seq_make(7, toks, 4, 0, table, 1, 1, sp_greedy());
        struct outs out;

        exec_ok(&k, &s, 1, 0, NULL, &out);
        outs_free(&out);
    }''')


edit('worker_harness.c', harness)
edit('check_gpu_worker.c', gpu_worker)
edit('check_worker_conformance.c', conformance)
