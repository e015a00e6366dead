/*
 * duet-bench — runs duet's benchmarks and prints their results as JSON (DESIGN §9).
 *
 * Each benchmark repeats its operations for a time budget, split over several repetitions, and
 * reports the median and the best time per operation. Results depend on the machine and its
 * load: compare numbers measured side by side in one run. docs/performance.md records them with
 * the command that produced them.
 */
#include "config.h"

#include "bench/bench.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

static const struct {
    const char *name;
    const char *what;
    int (*run)(const struct duet_bench_opts *, json_t *);
} benches[] = {
    {"block-manager", "paged-KV block manager: allocate, decode-step appends, fork, swap",
     duet__bench_block_manager},
    {"scheduler", "continuous batching: decode steps at 64..4096 sequences, 1000-prompt burst",
     duet__bench_scheduler},
};

#define N_BENCHES (sizeof(benches) / sizeof(benches[0]))

static void usage(FILE *f)
{
    fprintf(f, "Usage: duet-bench [options] BENCHMARK...\n"
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
               "Benchmarks:\n");
    for (size_t i = 0; i < N_BENCHES; i++)
        fprintf(f, "  %-15s %s\n", benches[i].name, benches[i].what);
}

static json_t *machine_info(void)
{
    struct utsname u;

    if (uname(&u) != 0)
        return json_object();
    return json_pack("{s:s, s:s, s:I}", "system", u.sysname, "machine", u.machine, "cpus",
                     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN));
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct duet_bench_opts *o)
{
    static const struct option longopts[] = {{"seconds", required_argument, NULL, 't'},
                                             {"repeats", required_argument, NULL, 'r'},
                                             {"quick", no_argument, NULL, 'q'},
                                             {"list", no_argument, NULL, 'l'},
                                             {"help", no_argument, NULL, 'h'},
                                             {"version", no_argument, NULL, 'V'},
                                             {NULL, 0, NULL, 0}};
    char *end;
    int c;

    *o = (struct duet_bench_opts){.seconds = 1.0, .repeats = 5};
    while ((c = getopt_long(argc, argv, "t:r:qlhV", longopts, NULL)) != -1) {
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
        } else if (benches[i].run(&o, results)) {
            rc = 1;
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
