/*
 * The GPU worker's ranks (worker.h): with tensor_parallel = 1 every job runs on the calling
 * thread; above it, one thread per GPU, each bound to its device for life, runs the same job on
 * its own shard, and NCCL (one communicator from ncclCommInitAll, in-process) sums the residual
 * stream and gathers the logits. Multi-node groups are not built here: NCCL's own bootstrap
 * (ncclGetUniqueId + ncclCommInitRank across processes) would replace ncclCommInitAll.
 */
#include "build_config.h"

#include "worker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

duet_status duet__gpu_fail(duet_gpu_worker *w, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    duet_kit_vfail(&w->err, st, fmt, ap);
    va_end(ap);
    (void)cudaGetLastError(); /* as duet__gpu_rank_fail: no stale error for the next launch */
    return st;
}

duet_status duet__gpu_rank_fail(duet_gpu_rank *r, duet_status st, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    /* A failed runtime call (cudaMalloc's out of memory, ...) is also the thread's last error:
     * clear it, or the next launch's cudaGetLastError() reports it and fails a later step. */
    (void)cudaGetLastError();
    r->st = st;
    return st;
}

/* Runs the current job on r with r's device current. */
static void run_job(duet_gpu_rank *r)
{
    cudaError_t e = cudaSetDevice(r->device);

    r->err[0] = '\0';
    if (e != cudaSuccess)
        r->st = duet__gpu_rank_fail(r, DUET_STATUS_DEVICE, "gpu worker: cudaSetDevice(%d): %s",
                                    r->device, cudaGetErrorString(e));
    else
        r->st = r->w->job(r, r->w->job_arg);
}

static void *rank_main(void *arg)
{
    duet_gpu_rank *r = arg;
    duet_gpu_worker *w = r->w;
    uint64_t seen = 0;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (w->generation == seen && !w->quit)
            pthread_cond_wait(&w->go, &w->mu);
        if (w->quit)
            break;
        seen = w->generation;
        pthread_mutex_unlock(&w->mu);
        run_job(r);
        pthread_mutex_lock(&w->mu);
        if (++w->finished == w->tp)
            pthread_cond_signal(&w->done);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

duet_status duet__gpu_ranks_start(duet_gpu_worker *w)
{
    if (w->tp == 1)
        return DUET_STATUS_OK;
#ifndef DUET_HAVE_NCCL
    return duet__gpu_fail(w, DUET_STATUS_UNSUPPORTED,
                          "gpu worker: %s.tensor_parallel = %u needs NCCL, which this build lacks "
                          "(configure --with-nccl)",
                          w->section, w->tp);
#else
    {
        ncclComm_t *comms = calloc(w->tp, sizeof(*comms));
        int *devs = calloc(w->tp, sizeof(*devs));
        ncclResult_t nr;

        if (!comms || !devs) {
            free(comms);
            free(devs);
            return duet__gpu_fail(w, DUET_STATUS_OUT_OF_MEMORY, "gpu worker: out of memory");
        }
        for (uint32_t i = 0; i < w->tp; i++)
            devs[i] = w->ranks[i].device;
        nr = ncclCommInitAll(comms, (int)w->tp, devs);
        for (uint32_t i = 0; nr == ncclSuccess && i < w->tp; i++)
            w->ranks[i].comm = comms[i];
        free(comms);
        free(devs);
        if (nr != ncclSuccess)
            return duet__gpu_fail(w, DUET_STATUS_DEVICE,
                                  "gpu worker: ncclCommInitAll (%u GPUs): %s", w->tp,
                                  ncclGetErrorString(nr));
    }
    if (pthread_mutex_init(&w->mu, NULL) || pthread_cond_init(&w->go, NULL) ||
        pthread_cond_init(&w->done, NULL))
        return duet__gpu_fail(w, DUET_STATUS_INTERNAL, "gpu worker: pthread init failed");
    w->pool = true;
    for (uint32_t i = 0; i < w->tp; i++) {
        if (pthread_create(&w->ranks[i].thread, NULL, rank_main, &w->ranks[i]))
            return duet__gpu_fail(w, DUET_STATUS_INTERNAL,
                                  "gpu worker: cannot start the thread of rank %u", i);
        w->ranks[i].thread_started = true;
    }
    return DUET_STATUS_OK;
#endif
}

void duet__gpu_ranks_stop(duet_gpu_worker *w)
{
    if (w->pool) {
        pthread_mutex_lock(&w->mu);
        w->quit = true;
        pthread_cond_broadcast(&w->go);
        pthread_mutex_unlock(&w->mu);
        for (uint32_t i = 0; i < w->tp; i++)
            if (w->ranks[i].thread_started)
                pthread_join(w->ranks[i].thread, NULL);
        pthread_cond_destroy(&w->go);
        pthread_cond_destroy(&w->done);
        pthread_mutex_destroy(&w->mu);
        w->pool = false;
    }
#ifdef DUET_HAVE_NCCL
    for (uint32_t i = 0; w->ranks && i < w->tp; i++) {
        if (w->ranks[i].comm) {
            cudaSetDevice(w->ranks[i].device);
            ncclCommDestroy(w->ranks[i].comm);
            w->ranks[i].comm = NULL;
        }
    }
#endif
}

duet_status duet__gpu_ranks_run(duet_gpu_worker *w, duet_status (*job)(duet_gpu_rank *, void *),
                                void *arg)
{
    w->job = job;
    w->job_arg = arg;
    if (!w->pool) { /* tp = 1, or the pool never started: ranks in turn on this thread */
        for (uint32_t i = 0; i < w->tp; i++) {
            run_job(&w->ranks[i]);
            if (w->ranks[i].st) {
                snprintf(w->err.msg, sizeof(w->err.msg), "%s", w->ranks[i].err);
                return w->ranks[i].st;
            }
        }
        return DUET_STATUS_OK;
    }
    pthread_mutex_lock(&w->mu);
    w->finished = 0;
    w->generation++;
    pthread_cond_broadcast(&w->go);
    while (w->finished < w->tp)
        pthread_cond_wait(&w->done, &w->mu);
    pthread_mutex_unlock(&w->mu);
    for (uint32_t i = 0; i < w->tp; i++) {
        if (w->ranks[i].st) {
            snprintf(w->err.msg, sizeof(w->err.msg), "%s", w->ranks[i].err);
            return w->ranks[i].st;
        }
    }
    return DUET_STATUS_OK;
}

duet_status duet__gpu_allreduce(duet_gpu_rank *r, float *x, size_t count)
{
#ifdef DUET_HAVE_NCCL
    ncclResult_t nr;

    if (r->w->tp == 1)
        return DUET_STATUS_OK;
    nr = ncclAllReduce(x, x, count, ncclFloat, ncclSum, r->comm, r->stream);
    if (nr != ncclSuccess)
        return duet__gpu_rank_fail(r, DUET_STATUS_DEVICE,
                                   "gpu worker: device %d: ncclAllReduce (%zu floats): %s",
                                   r->device, count, ncclGetErrorString(nr));
#else
    (void)r;
    (void)x;
    (void)count;
#endif
    return DUET_STATUS_OK;
}

duet_status duet__gpu_allgather(duet_gpu_rank *r, const float *send, float *recv, size_t count)
{
#ifdef DUET_HAVE_NCCL
    ncclResult_t nr;

    if (r->w->tp == 1)
        return DUET_STATUS_OK;
    nr = ncclAllGather(send, recv, count, ncclFloat, r->comm, r->stream);
    if (nr != ncclSuccess)
        return duet__gpu_rank_fail(r, DUET_STATUS_DEVICE,
                                   "gpu worker: device %d: ncclAllGather (%zu floats): %s",
                                   r->device, count, ncclGetErrorString(nr));
#else
    (void)r;
    (void)send;
    (void)recv;
    (void)count;
#endif
    return DUET_STATUS_OK;
}
