/*
 * The GPU worker's GEMMs through cuBLAS (worker.h). Hugging Face stores W as [out][in] row-major,
 * which cuBLAS (column-major) reads as Wᵀ [in][out]; with x [m][k] and y [m][n] row-major:
 *
 *     yᵀ (n × m) = op(A) · B,  A = W seen as k × n (lda = k) transposed, B = xᵀ (k × m, ldb =
 *     x_stride), C = yᵀ (ldc = y_stride)
 *
 * Inputs of the worker's dtype (bf16, f16 or f32), output f32, CUBLAS_COMPUTE_32F: f32
 * accumulation, and no TF32 for f32 inputs (the f32 worker is the exact one).
 */
#include "build_config.h"

#include "worker.h"

static cudaDataType_t cuda_type(duet_gpu_dtype dt)
{
    return dt == DUET_GPU_BF16 ? CUDA_R_16BF : dt == DUET_GPU_F16 ? CUDA_R_16F : CUDA_R_32F;
}

duet_status duet__gpu_gemm(duet_gpu_rank *r, const duet_gpu_mat *mat, const void *x,
                           size_t x_stride, uint32_t m, float *y, size_t y_stride, float beta)
{
    cudaDataType_t t = cuda_type(r->w->dt);
    float alpha = 1.0f;
    cublasStatus_t st;

    if (m == 0)
        return DUET_STATUS_OK;
    st = cublasGemmEx(r->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)mat->n, (int)m, (int)mat->k, &alpha,
                      mat->w, t, (int)mat->k, x, t, (int)x_stride, &beta, y, CUDA_R_32F,
                      (int)y_stride, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
        return duet__gpu_rank_fail(r, DUET_STATUS_DEVICE,
                                   "gpu worker: device %d: cublasGemmEx (%u x %u x %u): %s",
                                   r->device, m, mat->n, mat->k, cublasGetStatusString(st));
    return DUET_STATUS_OK;
}
