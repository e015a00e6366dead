// duet/model.h compiled as C++ (-std=c++11 -Wall -Wextra -pedantic): its extern "C" wrapper must
// hold. Linked into check_model, which calls this function.
#include <duet/model.h>

extern "C" const char *duet_test_cxx_model_dtype_name(int dtype);

extern "C" const char *duet_test_cxx_model_dtype_name(int dtype)
{
    return duet_dtype_name(static_cast<duet_dtype>(dtype));
}
