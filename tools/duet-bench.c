/*
 * duet-bench — runs duet's benchmarks and prints their results as JSON (DESIGN §9).
 *
 * Each benchmark repeats its operations for a time budget, split over several repetitions, and
 * reports the median and the best time per operation. Results depend on the machine and its
 * load: compare numbers measured side by side in one run. docs/performance.md records them with
 * the command that produced them.
 */
#include "build_config.h"

#include "cli.h"

#include "bench/bench.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifdef DUET_BENCH_GPU
static int gpu_worker(const struct duet_bench_opts *o, json_t *results)
{
    return duet__bench_gpu_worker(o, results);
}
#else
static int gpu_worker(const struct duet_bench_opts *o, json_t *results)
{
    (void)o;
    (void)results;
    fprintf(stderr, "duet-bench: gpu-worker: built without CUDA (skipped)\n");
    return 77;
}
#endif

static const struct {
    const char *name;
    const char *what;
    int (*run)(const struct duet_bench_opts *, json_t *);
} benches[] = {
    {"block-manager", "paged-KV block manager: allocate, decode-step appends, fork, swap",
     duet__bench_block_manager},
    {"scheduler", "continuous batching: decode steps at 64..4096 sequences, 1000-prompt burst",
     duet__bench_scheduler},
    {"cpu-worker", "worker plugin: prefill and decode tokens/s, memory bandwidth, its limit",
     duet__bench_cpu_worker},
    {"score", "CPU worker: one execute scoring k+1 positions over a decode step, k = 0..8",
     duet__bench_score},
    {"spec", "speculative decoding: tokens/s plain and at several k, acceptance, cost model",
     duet__bench_spec},
    {"overlap", "CPU draft beside a modelled GPU target: tokens/s serial and overlapped, idle time",
     duet__bench_overlap},
    {"gpu-worker", "GPU worker plugin: the same, against a device-to-device copy's bandwidth",
     gpu_worker},
    {"tokenizer", "tokenizer.json: load ms, encode and decode MB/s, streamed ns per token",
     duet__bench_tokenizer},
    {"peak", "CPU compute peak: f32 FMA (ymm, zmm), vdpbf16ps, vpdpbusd, AVX2 int8, GOP/s",
     duet__bench_peak},
#ifdef DUET_BENCH_GEMV
    {"gemv", "CPU worker GEMV kernels: GB/s of packed bf16/int8/int4 weights per ISA and shape",
     duet__bench_gemv},
#endif
};

#define N_BENCHES (sizeof(benches) / sizeof(benches[0]))

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: duet-bench [options] BENCHMARK...\n"
            "\n"
            "Runs benchmarks and prints one JSON object with every result.\n"
            "\n"
            "Options:\n"
            "  -t, --seconds S   time budget of each measurement (default 1.0)\n"
            "  -r, --repeats N   repetitions per measurement; the median is reported\n"
            "                    (default 5, at most 64)\n"
            "  -q, --quick       smaller sizes and 0.05 s budgets (a smoke test)\n"
            "  -l, --list        list the benchmarks\n"
            "  -h, --help        this text\n"
            "  -V, --version     the version\n"
            "\n"
            "cpu-worker, gpu-worker and spec options (lists: comma-separated or the option\n"
            "repeated):\n"
            "  --plugin NAME|PATH  worker plugin (default cpu, gpu for gpu-worker:\n"
            "                      $DUET_PLUGIN_PATH, the build tree, then the install\n"
            "                      directory)\n"
            "  --models DIR        where generated models are kept and reused\n"
            "                      (default bench-models)\n"
            "  --preset NAME,...   model shapes (duet-mkmodel --list, or tiny; default\n"
            "                      llama-68m,tinyllama-1.1b; tiny with --quick)\n"
            "  --dtype f32|bf16|f16|int8|int4,...  precisions: the weights' storage, computed\n"
            "                      in what target.dtype = auto picks on this CPU (default\n"
            "                      bf16,int8,int4); gguf-q8_0, gguf-q4_0: the model\n"
            "                      written as a GGUF file of that type (kept beside it) and\n"
            "                      read with weights auto: its blocks repacked, no rounding\n"
            "  --batch N,...       decode batch sizes (default 1,4)\n"
            "  --threads N         worker and bandwidth-probe threads (default: all CPUs)\n"
            "  --prompt-len N      prefill tokens (default 512; 64 with --quick)\n"
            "  --context N         decode context before the timed steps (default 128;\n"
            "                      32 with --quick)\n"
            "\n"
            "score (the CPU worker's scoring cost curve: one execute feeding k+1 tokens\n"
            "with k+1 output rows and their probabilities, as a speculative step scores, over\n"
            "a 1-token decode step, k = 0..8, after --context tokens; the cpu-worker options,\n"
            "--batch unused; a line per precision on stderr)\n"
            "\n"
            "gpu-worker (built with CUDA; exits 77 without CUDA or without a device): the\n"
            "options above, with the defaults --preset llama-2-7b (tiny with --quick),\n"
            "--dtype bf16 (bf16, f16 or f32 only), --batch 1,8,32; --threads is unused;\n"
            "  --device N          first CUDA device (target.device = cuda:N; default 0)\n"
            "  --tensor-parallel N devices N.. to shard over (default: the plugin's, 1)\n"
            "\n"
            "spec options (also --plugin, --models, --threads; --dtype default bf16,\n"
            "--batch default 1):\n"
            "  --spec-target PRESET  target shapes (default llama-160m; tiny with --quick)\n"
            "  --draft-layers N    layers of the derived draft (default 1)\n"
            "  --draft-noise X     relative noise of the draft's tensors, 0..1 (default 0.02)\n"
            "  --tail-scale S      the target's layers from the draft's last on have their\n"
            "                      output projections scaled by S, a power of two in\n"
            "                      2^-16..1 (default 0.015625)\n"
            "  --k K,...           proposals per step (default 1,2,3,4,6; 2 with --quick)\n"
            "  --max-tokens N      tokens per request (default 128; 16 with --quick)\n"
            "\n"
            "overlap options (also --models; --preset: the draft, default llama-68m (tiny\n"
            "with --quick); --dtype: its weights, default int4; --threads: its threads,\n"
            "default 1; --batch default 1,2,4,8,16,32 (1,2 with --quick); --k default\n"
            "2,3,4,5,6,7,8 (2 with --quick); --max-tokens default 64 (8 with --quick)).\n"
            "The target is bench/duet_modelled_worker.so: the CPU worker on a 64-wide model\n"
            "with the draft's vocabulary, each execute() padded to a + b x positions:\n"
            "  --acceptance synthetic|real|projected  synthetic: speculative.acceptance =\n"
            "                      synthetic at --alpha; real: the draft's model in bf16 as\n"
            "                      the target's; projected: the 64-wide target, verified\n"
            "                      for real (it rarely agrees), and tokens/s projected at\n"
            "                      --alpha from the step times (default synthetic)\n"
            "  --alpha A           acceptance rate of synthetic and of every result's\n"
            "                      projected_tokens_per_s, 0..1 (default 0.8)\n"
            "  --model-a S         seconds per forward pass (default 0.005: a 7B bf16 target\n"
            "                      on an H100)\n"
            "  --model-b S         seconds per fed position (default 2.83e-5)\n"
            "  --modelled PATH     the wrapper plugin (default: the build tree's)\n"
            "\n"
            "gemv options (also --preset llama-68m,tinyllama-1.1b (tiny with --quick), --batch\n"
            "(rows m, default 1,4,8) and --threads; the table goes to stderr):\n"
            "  --isa ISA,...       generic, avx2, avx512 (default: the supported SIMD ones;\n"
            "                      generic too with --quick: it is slow)\n"
            "  --fmt FMT,...       bf16, int8, int4, bf16_f32, f16 (default all; the last two\n"
            "                      are 2-byte weights against f32 activations)\n"
            "  --group N           int8 / int4 group: 32, 64 or 128 (default 32; cpu-worker\n"
            "                      too)\n"
            "  --gemv-prefill M    rows of the int8 prefill call (default 512; 32 with --quick)\n"
            "\n"
            "peak (also --threads): GFLOP/s (GOP/s for int8) of independent FMA chains per\n"
            "instruction kind the CPU has (fma_f32_ymm, fma_f32_zmm, dpbf16_zmm, dpbusd_zmm,\n"
            "maddubs_ymm) on 1 thread and on --threads (default: all CPUs); cpu-worker\n"
            "measures the one its prefill runs on and reports fraction_of_peak\n"
            "\n"
            "tokenizer options (exits 77 without --tokenizer):\n"
            "  --tokenizer DIR     the folder with tokenizer.json\n"
            "  --text FILE         the text to encode (default: 4 MB of generated English\n"
            "                      words, 64 kB with --quick)\n"
            "\n"
            "Benchmarks:\n");
    for (size_t i = 0; i < N_BENCHES; i++)
        fprintf(f, "  %-15s %s\n", benches[i].name, benches[i].what);
}

/* The first "model name" of /proc/cpuinfo, or "" where there is none. */
static void cpu_model(char *buf, size_t size)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];

    buf[0] = '\0';
    while (f && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');

        if (strncmp(line, "model name", 10) != 0 || !colon)
            continue;
        colon += strspn(colon + 1, " \t") + 1;
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(buf, size, "%s", colon);
        break;
    }
    if (f)
        fclose(f);
}

static json_t *machine_info(void)
{
    struct utsname u;
    char model[256];

    if (uname(&u) != 0)
        return json_object();
    cpu_model(model, sizeof(model));
    return json_pack("{s:s, s:s, s:s, s:I, s:I}", "system", u.sysname, "machine", u.machine,
                     "cpu_model", model, "cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN),
                     "memory_bytes",
                     (json_int_t)sysconf(_SC_PHYS_PAGES) * (json_int_t)sysconf(_SC_PAGESIZE));
}

enum {
    OPT_PLUGIN = 256,
    OPT_MODELS,
    OPT_PRESET,
    OPT_DTYPE,
    OPT_BATCH,
    OPT_THREADS,
    OPT_PROMPT_LEN,
    OPT_CONTEXT,
    OPT_DEVICE,
    OPT_TENSOR_PARALLEL,
    OPT_SPEC_TARGET,
    OPT_DRAFT_LAYERS,
    OPT_DRAFT_NOISE,
    OPT_TAIL_SCALE,
    OPT_K,
    OPT_MAX_TOKENS,
    OPT_ISA,
    OPT_FMT,
    OPT_GROUP,
    OPT_GEMV_PREFILL,
    OPT_TOKENIZER,
    OPT_TEXT,
    OPT_ACCEPTANCE,
    OPT_ALPHA,
    OPT_MODEL_A,
    OPT_MODEL_B,
    OPT_MODELLED,
};

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    unsigned long long v;

    if (!duet__cli_parse_u64(s, lo, hi, &v))
        return false;
    *out = (uint32_t)v;
    return true;
}

/* Appends the comma-separated items of arg (modified in place) to list[*n]. */
static bool parse_list(char *arg, const char **list, int *n)
{
    char *save = NULL;

    for (char *item = strtok_r(arg, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (*n >= DUET_BENCH_MAX_LIST)
            return false;
        list[(*n)++] = item;
    }
    return true;
}

static bool parse_batches(char *arg, struct duet_bench_worker_opts *w)
{
    const char *items[DUET_BENCH_MAX_LIST];
    int n = 0;

    if (!parse_list(arg, items, &n) || w->n_batches + n > DUET_BENCH_MAX_LIST)
        return false;
    for (int i = 0; i < n; i++)
        if (!parse_u32(items[i], 1, 4096, &w->batches[w->n_batches++]))
            return false;
    return true;
}

static bool parse_dtypes(char *arg, struct duet_bench_worker_opts *w)
{
    int first = w->n_dtypes;

    if (!parse_list(arg, w->dtypes, &w->n_dtypes))
        return false;
    for (int i = first; i < w->n_dtypes; i++)
        if (strcmp(w->dtypes[i], "f32") && strcmp(w->dtypes[i], "bf16") &&
            strcmp(w->dtypes[i], "f16") && strcmp(w->dtypes[i], "int8") &&
            strcmp(w->dtypes[i], "int4") && strcmp(w->dtypes[i], "gguf-q8_0") &&
            strcmp(w->dtypes[i], "gguf-q4_0"))
            return false;
    return true;
}

/* The cpu-worker options; false for an invalid value. */
static bool parse_worker_opt(int c, char *arg, struct duet_bench_worker_opts *w)
{
    switch (c) {
    case OPT_PLUGIN:
        w->plugin = arg;
        return *arg != '\0';
    case OPT_MODELS:
        w->models = arg;
        return *arg != '\0';
    case OPT_PRESET:
        return parse_list(arg, w->presets, &w->n_presets);
    case OPT_DTYPE:
        return parse_dtypes(arg, w);
    case OPT_BATCH:
        return parse_batches(arg, w);
    case OPT_THREADS:
        return parse_u32(arg, 1, 1024, &w->threads);
    case OPT_PROMPT_LEN:
        return parse_u32(arg, 1, 1u << 20, &w->prompt_len);
    case OPT_CONTEXT:
        return parse_u32(arg, 1, 1u << 20, &w->context);
    case OPT_DEVICE:
        return parse_u32(arg, 0, 1023, &w->device);
    case OPT_TENSOR_PARALLEL:
        return parse_u32(arg, 1, 64, &w->tensor_parallel);
    }
    return false;
}

static bool parse_ks(char *arg, struct duet_bench_spec_opts *so)
{
    const char *items[DUET_BENCH_MAX_LIST];
    int n = 0;

    if (!parse_list(arg, items, &n) || so->n_ks + n > DUET_BENCH_MAX_LIST)
        return false;
    for (int i = 0; i < n; i++)
        if (!parse_u32(items[i], 1, 32, &so->ks[so->n_ks++]))
            return false;
    return true;
}

/* The spec options; false for an invalid value. */
static bool parse_spec_opt(int c, char *arg, struct duet_bench_spec_opts *so)
{
    int exponent;

    switch (c) {
    case OPT_SPEC_TARGET:
        so->target = arg;
        return *arg != '\0';
    case OPT_DRAFT_LAYERS:
        return parse_u32(arg, 1, 1024, &so->draft_layers);
    case OPT_DRAFT_NOISE:
        return duet__cli_parse_double(arg, 0, 1, &so->draft_noise);
    case OPT_TAIL_SCALE:
        return duet__cli_parse_double(arg, ldexp(1.0, -16), 1, &so->tail_scale) &&
               frexp(so->tail_scale, &exponent) == 0.5;
    case OPT_K:
        return parse_ks(arg, so);
    case OPT_MAX_TOKENS:
        return parse_u32(arg, 1, 1u << 20, &so->max_tokens);
    }
    return false;
}

static bool parse_names(char *arg, const char *const *valid, size_t n_valid, const char **list,
                        int *n)
{
    int first = *n;

    if (!parse_list(arg, list, n))
        return false;
    for (int i = first; i < *n; i++) {
        size_t j = 0;

        while (j < n_valid && strcmp(list[i], valid[j]) != 0)
            j++;
        if (j == n_valid)
            return false;
    }
    return true;
}

/* The gemv options; false for an invalid value. */
static bool parse_gemv_opt(int c, char *arg, struct duet_bench_gemv_opts *g)
{
    static const char *const isas[] = {"generic", "avx2", "avx512"};
    static const char *const fmts[] = {"bf16", "int8", "int4", "bf16_f32", "f16"};

    switch (c) {
    case OPT_ISA:
        return parse_names(arg, isas, 3, g->isas, &g->n_isas);
    case OPT_FMT:
        return parse_names(arg, fmts, 5, g->fmts, &g->n_fmts);
    case OPT_GROUP:
        return parse_u32(arg, 32, 128, &g->group) && (g->group & (g->group - 1)) == 0;
    case OPT_GEMV_PREFILL:
        return parse_u32(arg, 1, 1u << 16, &g->prefill);
    }
    return false;
}

/* The tokenizer options; false for an empty value. */
static bool parse_tokenizer_opt(int c, char *arg, struct duet_bench_tokenizer_opts *t)
{
    if (c == OPT_TOKENIZER)
        t->dir = arg;
    else
        t->text = arg;
    return *arg != '\0';
}

/* The overlap options; false for an invalid value. */
static bool parse_overlap_opt(int c, char *arg, struct duet_bench_overlap_opts *ov)
{
    switch (c) {
    case OPT_ACCEPTANCE:
        ov->acceptance = arg;
        return !strcmp(arg, "synthetic") || !strcmp(arg, "real") || !strcmp(arg, "projected");
    case OPT_ALPHA:
        return duet__cli_parse_double(arg, 0, 1, &ov->alpha);
    case OPT_MODEL_A:
        return duet__cli_parse_double(arg, 0, 10, &ov->a_s);
    case OPT_MODEL_B:
        return duet__cli_parse_double(arg, 0, 10, &ov->b_s);
    case OPT_MODELLED:
        ov->modelled = arg;
        return *arg != '\0';
    }
    return false;
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct duet_bench_opts *o)
{
    static const struct option longopts[] = {
        {"seconds", required_argument, NULL, 't'},
        {"repeats", required_argument, NULL, 'r'},
        {"quick", no_argument, NULL, 'q'},
        {"list", no_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"plugin", required_argument, NULL, OPT_PLUGIN},
        {"models", required_argument, NULL, OPT_MODELS},
        {"preset", required_argument, NULL, OPT_PRESET},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"prompt-len", required_argument, NULL, OPT_PROMPT_LEN},
        {"context", required_argument, NULL, OPT_CONTEXT},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"tensor-parallel", required_argument, NULL, OPT_TENSOR_PARALLEL},
        {"spec-target", required_argument, NULL, OPT_SPEC_TARGET},
        {"draft-layers", required_argument, NULL, OPT_DRAFT_LAYERS},
        {"draft-noise", required_argument, NULL, OPT_DRAFT_NOISE},
        {"tail-scale", required_argument, NULL, OPT_TAIL_SCALE},
        {"k", required_argument, NULL, OPT_K},
        {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
        {"isa", required_argument, NULL, OPT_ISA},
        {"fmt", required_argument, NULL, OPT_FMT},
        {"group", required_argument, NULL, OPT_GROUP},
        {"gemv-prefill", required_argument, NULL, OPT_GEMV_PREFILL},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {"text", required_argument, NULL, OPT_TEXT},
        {"acceptance", required_argument, NULL, OPT_ACCEPTANCE},
        {"alpha", required_argument, NULL, OPT_ALPHA},
        {"model-a", required_argument, NULL, OPT_MODEL_A},
        {"model-b", required_argument, NULL, OPT_MODEL_B},
        {"modelled", required_argument, NULL, OPT_MODELLED},
        {NULL, 0, NULL, 0}};
    char *end;
    int c;

    *o = (struct duet_bench_opts){.seconds = 1.0,
                                  .repeats = 5,
                                  .worker = {.plugin = "cpu", .models = "bench-models"},
                                  .spec = {.draft_noise = -1},
                                  .ov = {.alpha = -1, .a_s = -1, .b_s = -1}};
    while ((c = getopt_long(argc, argv, "t:r:qlhV", longopts, NULL)) != -1) {
        if (c >= OPT_PLUGIN) {
            char shown[256];
            size_t i = 0;

            snprintf(shown, sizeof(shown), "%s", optarg); /* parsing splits optarg */
            if (c < OPT_SPEC_TARGET  ? parse_worker_opt(c, optarg, &o->worker)
                : c < OPT_ISA        ? parse_spec_opt(c, optarg, &o->spec)
                : c < OPT_TOKENIZER  ? parse_gemv_opt(c, optarg, &o->gemv)
                : c < OPT_ACCEPTANCE ? parse_tokenizer_opt(c, optarg, &o->tok)
                                     : parse_overlap_opt(c, optarg, &o->ov))
                continue;
            while (longopts[i].val != c)
                i++;
            fprintf(stderr, "duet-bench: invalid value '%s' for --%s\n", shown, longopts[i].name);
            return 2;
        }
        switch (c) {
        case 't':
            errno = 0;
            o->seconds = strtod(optarg, &end);
            if (errno || *end || !(o->seconds > 0 && o->seconds <= 3600)) {
                fprintf(stderr, "duet-bench: invalid --seconds '%s'\n", optarg);
                return 2;
            }
            break;
        case 'r':
            o->repeats = (int)strtol(optarg, &end, 10);
            if (*end || o->repeats < 1 || o->repeats > 64) {
                fprintf(stderr, "duet-bench: invalid --repeats '%s' (1..64)\n", optarg);
                return 2;
            }
            break;
        case 'q':
            o->quick = true;
            o->seconds = 0.05;
            break;
        case 'l':
            for (size_t i = 0; i < N_BENCHES; i++)
                printf("%s\n", benches[i].name);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("duet-bench %s\n", PACKAGE_VERSION);
            return 0;
        default:
            fprintf(stderr, "Try 'duet-bench --help'.\n");
            return 2;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "duet-bench: name a benchmark (duet-bench --list)\n");
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct duet_bench_opts o;
    json_t *out, *results;
    int rc = parse_args(argc, argv, &o);

    if (rc >= 0)
        return rc;
    results = json_array();
    out = json_pack("{s:s, s:o, s:f, s:i, s:o}", "duet_version", PACKAGE_VERSION, "machine",
                    machine_info(), "seconds", o.seconds, "repeats", o.repeats, "results", results);
    for (int a = optind; a < argc && rc <= 0; a++) {
        size_t i = 0;

        while (i < N_BENCHES && strcmp(benches[i].name, argv[a]) != 0)
            i++;
        if (i == N_BENCHES) {
            fprintf(stderr, "duet-bench: unknown benchmark '%s' (duet-bench --list)\n", argv[a]);
            rc = 2;
        } else if ((rc = benches[i].run(&o, results)) != 0) {
            rc = rc == 77 ? 77 : 1; /* 77: skipped, as automake's tests read it */
        }
    }
    if (rc <= 0) {
        json_dumpf(out, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        rc = 0;
    }
    json_decref(out);
    return rc;
}
