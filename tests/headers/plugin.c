/* duet/plugin.h must compile on its own: it is included first, before anything else. */
#include <duet/plugin.h>

#include "headers.h"

int duet_test_header_plugin(void)
{
    return 1;
}
