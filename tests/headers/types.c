/* duet/types.h must compile on its own: it is included first, before anything else. */
#include <duet/types.h>

#include "headers.h"

int duet_test_header_types(void)
{
    return 1;
}
