/* duet/loader.h must compile on its own: it is included first, before anything else. */
#include <duet/loader.h>

#include "headers.h"

int duet_test_header_loader(void)
{
    return 1;
}
