// Every public header compiled as C++ (-std=c++11 -Wall -Wextra -pedantic): the extern "C"
// wrappers must hold and the ABI layout must be the same as C's.
#include <duet/block_manager.h>
#include <duet/config.h>
#include <duet/duet.h>
#include <duet/loader.h>
#include <duet/model.h>
#include <duet/plugin.h>
#include <duet/scheduler.h>
#include <duet/tokenizer.h>
#include <duet/types.h>

#include "headers.h"

extern "C" uint64_t duet_test_cxx_fingerprint(void)
{
    return DUET_ABI_FINGERPRINT;
}

extern "C" size_t duet_test_cxx_sizeof(int which)
{
    switch (which) {
    case 0:
        return sizeof(duet_worker_plugin);
    case 1:
        return sizeof(duet_batch);
    case 2:
        return sizeof(duet_seq);
    case 3:
        return sizeof(duet_batch_output);
    case 4:
        return sizeof(duet_host_services);
    default:
        return 0;
    }
}

// Calls a C function through the C++ declaration: links only if extern "C" is right.
extern "C" const char *duet_test_cxx_status_str(int status)
{
    return duet_status_str(static_cast<duet_status>(status));
}

// The block manager's C API through C++: links only if its extern "C" wrapper is right.
extern "C" uint32_t duet_test_cxx_block_size_default(void)
{
    duet_block_manager_params p;

    duet_block_manager_params_init(&p);
    return p.block_size;
}

// The scheduler's C API through C++: links only if its extern "C" wrapper is right.
extern "C" uint32_t duet_test_cxx_max_num_seqs_default(void)
{
    duet_scheduler_params p;

    duet_scheduler_params_init(&p);
    return p.max_num_seqs;
}
