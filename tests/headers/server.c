/* duet/server.h must compile on its own: it is included first, before anything else. */
#include <duet/server.h>

#include "headers.h"

int duet_test_header_server(void)
{
    return 1;
}
