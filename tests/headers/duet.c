/* duet/duet.h must compile on its own: it is included first, before anything else. */
#include <duet/duet.h>

#include "headers.h"

#include <string.h>

/* Also proves libduet exports the engine API: defaults and names, no model needed. */
int duet_test_header_duet(void)
{
    duet_request_params p;

    duet_request_params_init(&p);
    return p.max_tokens == 16 && p.sampling.top_p == 1.0f && p.sampling.temperature == 0.0f &&
           strcmp(duet_finish_reason_str(DUET_FINISH_LENGTH), "length") == 0;
}
