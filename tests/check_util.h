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

#endif /* DUET_CHECK_UTIL_H */
