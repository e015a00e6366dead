/* check_util.h — what every Check suite's main() does. */
#ifndef DUET_CHECK_UTIL_H
#define DUET_CHECK_UTIL_H

#include <check.h>
#include <stdlib.h>

/* Runs the suite (verbosity from CK_VERBOSITY, forking from CK_FORK), frees it and returns the
 * process exit status. */
static inline int duet_test_run(Suite *suite)
{
    SRunner *sr = srunner_create(suite);
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* One test of a suite: the name of its TCase and the test. */
struct duet_test_case {
    const char *name;
    const TTest *test;
};

/* Adds every case to suite as its own TCase with the fixture setup/teardown (either may be NULL)
 * and a timeout in seconds (0: Check's default). */
static inline void duet_test_add_cases(Suite *suite, const struct duet_test_case *cases, size_t n,
                                       SFun setup, SFun teardown, int timeout)
{
    for (size_t i = 0; i < n; i++) {
        TCase *tc = tcase_create(cases[i].name);

        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_add_test(tc, cases[i].test);
        if (timeout)
            tcase_set_timeout(tc, timeout);
        suite_add_tcase(suite, tc);
    }
}

#endif /* DUET_CHECK_UTIL_H */
