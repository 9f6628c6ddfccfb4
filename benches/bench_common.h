/* What the benchmark programs share, so that every figure is summarised,
 * labelled and timed the same way and a fix to one is a fix to all:
 * command-line options, the clock, fatal errors, sample statistics, the
 * labels of the tables and the clean-up of /dev/shm. Built once
 * (bench_common.c) and linked into each program. */
#ifndef RM_BENCH_COMMON_H
#define RM_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "plugin_loader.h"
#include "rm_plugin.h"

#define KIB ((uint64_t)1 << 10)
#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)

/* The program's name, which starts each of its messages on stderr; every
 * program that links bench_common defines it. */
extern const char bench_program[];

/* ---- options ------------------------------------------------------------ */

#define BENCH_MAX_POSITIONAL 2

typedef struct bench_options {
    bool json;  /* --json: one JSON object per figure per line */
    bool quick; /* --quick: the short plan of the CI smoke test */
    /* The first positional argument, or $RM_PLUGIN_PATH without one. */
    const char *plugin_path;
    const char *positional[BENCH_MAX_POSITIONAL];
    int positional_count;
} bench_options;

/* Parses [--json] [--quick] [--help|-h] and at most max_positional other
 * arguments (max_positional <= BENCH_MAX_POSITIONAL). Returns -1 to go on,
 * or the status to exit with after calling usage(): 0 for --help, 2 for an
 * unknown option, one positional argument too many or no plugin path. */
int parse_options(int argc, char **argv, int max_positional,
                  void (*usage)(void), bench_options *out);

/* Loads and negotiates the plugin (ABI min_abi up to the current one), or
 * dies with the loader's message. */
const rm_plugin_v1 *load_plugin(const char *path, uint32_t min_abi,
                                rm_loaded_plugin *out);

/* ---- time and failure --------------------------------------------------- */

/* CLOCK_MONOTONIC in ns. */
uint64_t now_ns(void);

_Noreturn void die(const char *what);
/* `what`, then strerror(errno). */
_Noreturn void die_errno(const char *what);
/* A plugin call returned `status`: its name and the context's last error. */
_Noreturn void die_status(const rm_plugin_v1 *vt, rm_context *context,
                          const char *what, int32_t status);

/* The CUDA benchmarks (bench_cuda, bench_gpu_weights): */
/* Says why benchmark `bench` cannot run here: "<program>: skipped:
 * <prefix><why>" on stderr and, with `json`, one object {"bench",
 * "skipped": true, "reason", "driver_library"}; exits 77 (meson: skipped). */
_Noreturn void skip_cuda_bench(bool json, const char *bench, const char *prefix,
                               const char *why, const char *driver_library);
/* cuda.driver as $RM_PLUGIN_CONFIG names it, into `out`: a context that
 * reads the configuration and nothing else (it touches no driver). */
void cuda_driver_from_configuration(const rm_plugin_v1 *vt, char *out, size_t out_size);

/* malloc() and calloc() that die on failure: a benchmark without its
 * sample arrays has nothing to report. */
void *checked_malloc(size_t bytes);
void *checked_calloc(size_t count, size_t size);

/* The pipes between a benchmark's processes. write_full writes all of
 * `bytes` or dies (the other process died); read_full reads exactly
 * `bytes`, false on end of file before the first byte, dying on one in
 * the middle of a message. Both retry on EINTR. */
void write_full(int fd, const void *buffer, size_t bytes);
bool read_full(int fd, void *buffer, size_t bytes);

/* ---- statistics --------------------------------------------------------- */

typedef struct latency_figure {
    double median_ns;
    double p10_ns;
    double p90_ns;
    double min_ns;
    double max_ns;
    int samples;
} latency_figure;

/* Median, p10, p90 (nearest rank), min and max of `count` samples; all
 * zero when count <= 0. Sorts `samples` in place. */
latency_figure summarise(double *samples, int count);

/* ---- labels for the tables ---------------------------------------------- */

/* "16 MiB", "4 KiB", "100 B": exact sizes only. */
const char *size_label(uint64_t bytes, char *out, size_t out_size);
/* "812.3 ns", "12.41 us", "331.2 ms", "1.204 s". */
const char *time_label(double ns, char *out, size_t out_size);
/* A target: "met" or "missed". */
const char *met_label(bool met);

/* ---- the host's configuration ----------------------------------------- */

/* Starts one more host thread that stays alive, parked, until
 * host_companion_stop(). A real host has several threads; with only one,
 * glibc takes single-threaded shortcuts (malloc skips its arena lock) and
 * a figure would flatter code that calls into libc. Dies on failure. */
void host_companion_start(void);
void host_companion_stop(void);

/* ---- /dev/shm hygiene --------------------------------------------------- */

/* Counts the names in /dev/shm that start with `prefix` or equal `exact`
 * (NULL: none), and unlinks them or prints each on stderr after
 * "<program>: <listing>: ". A run's names are its own (it chose their
 * namespace), so what a failed run left behind can be removed blindly. */
int shm_leftovers(const char *prefix, const char *exact, bool unlink_them,
                  const char *listing);

#endif
