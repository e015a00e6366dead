# GPU worker (CUDA). Built only when configure finds CUDA; for now the toolchain probe kernels
# that the GPU worker's sources will join.
EXTRA_DIST += gpu_worker/probe.cu gpu_worker/gpu_worker-int.h
if HAVE_CUDA
noinst_LTLIBRARIES += gpu_worker/libduet_gpu_kernels.la
gpu_worker_libduet_gpu_kernels_la_SOURCES = gpu_worker/probe.cu gpu_worker/gpu_worker-int.h
# Link as C: libtool needs a tag; nvcc output needs libcudart and the C++ runtime.
nodist_EXTRA_gpu_worker_libduet_gpu_kernels_la_SOURCES = dummy.c
gpu_worker_libduet_gpu_kernels_la_LIBADD = $(CUDA_LDFLAGS) $(CUDA_LIBS) -lstdc++
endif
