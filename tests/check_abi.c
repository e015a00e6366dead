/*
 * The ABI header itself: every public header compiles alone and from C++, both languages agree on
 * the layout, the fingerprint changes when a layout does, and the status names are complete.
 */
#include <duet/plugin.h>
#include <duet/types.h>

#include "headers/headers.h"

#include "check_util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_each_header_compiles_on_its_own)
{
    /* Linking proves each tests/headers/<name>.c compiled with its header first. */
    ck_assert_int_eq(duet_test_header_types() + duet_test_header_plugin() +
                         duet_test_header_config() + duet_test_header_loader() +
                         duet_test_header_block_manager() + duet_test_header_scheduler() +
                         duet_test_header_model() + duet_test_header_duet() +
                         duet_test_header_tokenizer() + duet_test_header_server(),
                     10);
}
END_TEST

START_TEST(test_cxx_sees_the_same_layout_as_c)
{
    const size_t sizes[] = {sizeof(duet_worker_plugin), sizeof(duet_batch), sizeof(duet_seq),
                            sizeof(duet_batch_output), sizeof(duet_host_services)};

    ck_assert_uint_eq(duet_test_cxx_fingerprint(), DUET_ABI_FINGERPRINT);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(duet_test_cxx_sizeof(i), sizes[i]);
    ck_assert_str_eq(duet_test_cxx_status_str(DUET_STATUS_ABI_MISMATCH), "ABI mismatch");
    ck_assert_uint_eq(duet_test_cxx_block_size_default(), 16);
    ck_assert_uint_eq(duet_test_cxx_max_num_seqs_default(), 256);
}
END_TEST

/* The same struct with one field moved: its fingerprint term must differ. */
struct moved {
    uint32_t struct_size;
    uint32_t abi_major;
    uint64_t fingerprint;
    uint32_t abi_minor;
};

START_TEST(test_fingerprint_depends_on_layout)
{
    uint64_t a = DUET__FP_FIELD(duet_worker_plugin, fingerprint, 0x9e3779b97f4a7c15ull, 3);
    uint64_t b = DUET__FP_FIELD(struct moved, fingerprint, 0x9e3779b97f4a7c15ull, 3);

    ck_assert_uint_ne(a, b);
    ck_assert_uint_ne(DUET_ABI_FINGERPRINT, 0);
}
END_TEST

START_TEST(test_has_field_follows_struct_size)
{
    duet_batch b = {.struct_size = offsetof(duet_batch, seqs)};

    ck_assert(DUET_ABI_HAS_FIELD(&b, duet_batch, copy));
    ck_assert(!DUET_ABI_HAS_FIELD(&b, duet_batch, seqs));
    b.struct_size = sizeof(b);
    ck_assert(DUET_ABI_HAS_FIELD(&b, duet_batch, seqs));
}
END_TEST

START_TEST(test_batch_seq_uses_the_hosts_stride)
{
    struct {
        duet_seq seq;
        uint64_t appended_by_a_newer_host;
    } seqs[3];
    duet_batch b = {
        .struct_size = sizeof(b), .n_seqs = 3, .seq_size = sizeof(seqs[0]), .seqs = &seqs[0].seq};

    memset(seqs, 0, sizeof(seqs));
    for (int i = 0; i < 3; i++)
        seqs[i].seq.seq_id = 100u + (unsigned)i;
    for (uint32_t i = 0; i < 3; i++)
        ck_assert_uint_eq(duet_batch_seq(&b, i)->seq_id, 100u + i);
}
END_TEST

START_TEST(test_every_status_has_a_distinct_name)
{
    const char *seen[16];
    int n = 0;

    ck_assert_str_eq(duet_status_str(DUET_STATUS_OK), "ok");
    for (int st = DUET_STATUS_OK; st >= DUET_STATUS_INTERNAL; st--) {
        const char *name = duet_status_str((duet_status)st);

        ck_assert_str_ne(name, "unknown status");
        for (int i = 0; i < n; i++)
            ck_assert_str_ne(seen[i], name);
        seen[n++] = name;
    }
    ck_assert_str_eq(duet_status_str((duet_status)(DUET_STATUS_INTERNAL - 1)), "unknown status");
    ck_assert_str_eq(duet_status_str((duet_status)1), "unknown status");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("abi");
    TCase *tc = tcase_create("headers and layout");

    tcase_add_test(tc, test_each_header_compiles_on_its_own);
    tcase_add_test(tc, test_cxx_sees_the_same_layout_as_c);
    tcase_add_test(tc, test_fingerprint_depends_on_layout);
    tcase_add_test(tc, test_has_field_follows_struct_size);
    tcase_add_test(tc, test_batch_seq_uses_the_hosts_stride);
    tcase_add_test(tc, test_every_status_has_a_distinct_name);
    suite_add_tcase(s, tc);
    return duet_test_run(s);
}
