/* duet/config.h must compile on its own: it is included first, before anything else. */
#include <duet/config.h>

#include "headers.h"

int duet_test_header_config(void)
{
    return 1;
}
