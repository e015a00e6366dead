/* duet/model.h must compile on its own: it is included first, before anything else. */
#include <duet/model.h>

#include "headers.h"

int duet_test_header_model(void)
{
    return 1;
}
