/* Functions defined by the per-header translation units and the C++ one (tests/headers/). */
#ifndef DUET_TEST_HEADERS_H
#define DUET_TEST_HEADERS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int duet_test_header_types(void);
int duet_test_header_plugin(void);
int duet_test_header_config(void);
int duet_test_header_loader(void);
int duet_test_header_block_manager(void);
int duet_test_header_scheduler(void);
int duet_test_header_model(void);
int duet_test_header_duet(void);
int duet_test_header_tokenizer(void);
int duet_test_header_server(void);

/* From C++: the fingerprint and struct sizes as g++ sees them. */
uint64_t duet_test_cxx_fingerprint(void);
size_t duet_test_cxx_sizeof(int which);
const char *duet_test_cxx_status_str(int status);
uint32_t duet_test_cxx_block_size_default(void);
uint32_t duet_test_cxx_max_num_seqs_default(void);

#ifdef __cplusplus
}
#endif

#endif
