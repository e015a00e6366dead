/*
 * fault.h — allocation fault injection for the suites of the block manager, the scheduler and the
 * model reader. They link the part's own archive with malloc, calloc and realloc renamed to the
 * duet_test_ functions below (tests/fault.mk); a test sets duet_test_fail_countdown = N so that
 * the Nth allocation from now fails (-1: none), and reads duet_test_injected to know whether one
 * did.
 */
#ifndef DUET_TEST_FAULT_H
#define DUET_TEST_FAULT_H

#include <stdbool.h>
#include <stddef.h>

extern long duet_test_fail_countdown; /* allocations left before one fails; -1 = never */
extern bool duet_test_injected;       /* a failure was injected since the test cleared it */

/* Counts one allocation: true when it is the one to fail (and sets duet_test_injected). */
bool duet_test_inject(void);

void *duet_test_malloc(size_t size);
void *duet_test_calloc(size_t n, size_t size);
void *duet_test_realloc(void *p, size_t size);

#endif /* DUET_TEST_FAULT_H */
