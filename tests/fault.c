/* Allocation fault injection shared by the suites (tests/fault.h). */
#include "fault.h"

#include <stdlib.h>

long duet_test_fail_countdown = -1;
bool duet_test_injected;

bool duet_test_inject(void)
{
    if (duet_test_fail_countdown < 0 || duet_test_fail_countdown-- > 0)
        return false;
    duet_test_injected = true;
    return true;
}

void *duet_test_malloc(size_t size)
{
    return duet_test_inject() ? NULL : malloc(size);
}

void *duet_test_calloc(size_t n, size_t size)
{
    return duet_test_inject() ? NULL : calloc(n, size);
}

void *duet_test_realloc(void *p, size_t size)
{
    return duet_test_inject() ? NULL : realloc(p, size);
}
