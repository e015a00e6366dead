/* duet/scheduler.h must compile on its own: it is included first, before anything else. */
#include <duet/scheduler.h>

#include "headers.h"

#include <stddef.h>

/* Also proves libduet exports the scheduler: runs one request's prompt through the library. */
int duet_test_header_scheduler(void)
{
    duet_block_manager_params bp;
    duet_scheduler_params sp;
    duet_sched_request r;
    duet_block_manager *bm = NULL;
    duet_scheduler *s = NULL;
    const duet_sched_output *out = NULL;
    const int32_t prompt[3] = {1, 2, 3};
    int ok;

    duet_block_manager_params_init(&bp);
    bp.num_device_blocks = 4;
    duet_scheduler_params_init(&sp);
    sp.max_model_len = 16;
    duet_sched_request_init(&r);
    r.prompt = prompt;
    r.prompt_len = 3;
    ok = duet_block_manager_create(&bp, &bm, NULL, 0) == DUET_STATUS_OK &&
         duet_scheduler_create(&sp, bm, &s, NULL, 0) == DUET_STATUS_OK &&
         duet_scheduler_add(s, &r) == DUET_STATUS_OK &&
         duet_scheduler_step(s, 1, &out) == DUET_STATUS_OK && out->num_groups == 1 &&
         out->is_prefill && out->num_batched_tokens == 3;
    duet_scheduler_destroy(s);
    duet_block_manager_destroy(bm);
    return ok;
}
