/* duet/tokenizer.h must compile on its own: it is included first, before anything else. */
#include <duet/tokenizer.h>

#include "headers.h"

int duet_test_header_tokenizer(void)
{
    return 1;
}
