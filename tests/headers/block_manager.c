/* duet/block_manager.h must compile on its own: it is included first, before anything else. */
#include <duet/block_manager.h>

#include "headers.h"

#include <stddef.h>

/* Also proves libduet exports the block manager: creates and destroys one through the library. */
int duet_test_header_block_manager(void)
{
    duet_block_manager_params p;
    duet_block_manager *bm = NULL;
    int ok;

    duet_block_manager_params_init(&p);
    p.num_device_blocks = 4;
    ok = duet_block_manager_create(&p, &bm, NULL, 0) == DUET_STATUS_OK &&
         duet_block_manager_num_free_blocks(bm, DUET_BLOCK_POOL_DEVICE) == 4;
    duet_block_manager_destroy(bm);
    return ok;
}
