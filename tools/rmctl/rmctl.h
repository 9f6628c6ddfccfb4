/* What rmctl's operator commands (rmctl.c) and its demos (demo_*.c) share:
 * the options, contexts made from them, and the formatting of sizes and
 * times. */
#ifndef RMCTL_H
#define RMCTL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "plugin_loader.h"
#include "rm_build_config.h"

#define MAX_CONFIG_ENTRIES 64
#define MAX_COMMAND_ARGUMENTS 4

typedef struct rmctl_options {
    const char *plugin_path;
    const char *config_path;
    rm_config_entry entries[MAX_CONFIG_ENTRIES];
    char *entry_storage[MAX_CONFIG_ENTRIES];
    uint64_t entry_count;
    const char *namespace_name; /* --namespace: shm.namespace and registry.namespace */
    const char *command;
    /* Words after the command: demo's section, or what the demo's GPU
     * consumer (two fds) or weights worker (two fds, a namespace) is
     * handed. */
    const char *command_arguments[MAX_COMMAND_ARGUMENTS];
    int command_argument_count;
} rmctl_options;


/* ---- contexts (rmctl.c) ------------------------------------------------- */

/* Commands that must not open (and so create) a node table whatever the
 * configuration says use this. */
static const rm_config_entry process_scope[] = {{.key = "registry.scope", .value = "process"}};

/* A context of rmctl's configuration: `defaults`, --namespace, the -c
 * pairs, then `overrides` (later ones win; keys the plugin does not know
 * are left out of the last two). 0, or the code after printing why. */
int create_context_with(const rm_loaded_plugin *plugin, const rmctl_options *options,
                        const rm_config_entry *defaults, uint64_t default_count,
                        const rm_config_entry *overrides, uint64_t override_count,
                        rm_context **out);
/* The same with `extra` as the defaults and no overrides. */
int create_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                   const rm_config_entry *extra, uint64_t extra_count, rm_context **out);
/* The node table of `namespace_name`, opened through a context of its own,
 * with registry.table = `table`: "create", or "existing", which makes
 * nothing and returns RM_E_NOT_FOUND, printing nothing, when the
 * namespace has no table (a plugin without the key would create one:
 * check node_table_lookable() first). 0, or the code. */
int create_node_context(const rm_loaded_plugin *plugin, const rmctl_options *options,
                        const char *namespace_name, const char *table, rm_context **out);
/* Whether the plugin can open a node table without creating it (it has
 * the registry.table key). rmctl never looks in /dev/shm itself. */
int node_table_lookable(const rm_loaded_plugin *plugin);
/* Why the plugin cannot do node scope, or NULL. */
const char *node_registry_missing(const rm_loaded_plugin *plugin, char *why, size_t why_size);
int command_info(const rm_loaded_plugin *plugin, const rmctl_options *options);
/* Why device tensors cannot be used now (no 1.3 member, not built, or
 * cuda_info()'s status and message), or NULL when a device is usable;
 * `info` is filled either way (zeroed when cuda_info was not called). */
const char *cuda_unusable(const rm_loaded_plugin *plugin, rm_context *context,
                          rm_cuda_info *info, char *why, size_t why_size);

/* ---- output (rmctl.c) --------------------------------------------------- */

void format_bytes(uint64_t bytes, char *out, size_t out_size);
void format_duration_ns(uint64_t ns, char *out, size_t out_size);
uint64_t monotonic_ns(void);
void report_failure(const rm_plugin_v1 *vt, const rm_context *context, const char *what,
                    int32_t status);

/* The node registry's rows (registry_list) as a table, each line indented. */
int print_node_models(const rm_plugin_v1 *vt, rm_context *context, const char *indent);

/* ---- demos (demo_*.c) --------------------------------------------------- */

/* CLOCK_MONOTONIC in ms (demo_registry.c). */
double now_ms(void);
/* Whole buffers over a pipe, retrying short transfers and EINTR; 0 or -1
 * (demo_tensors.c). */
int write_all(int fd, const void *buffer, size_t size);
int read_all(int fd, void *buffer, size_t size);

int demo_registry(const rm_loaded_plugin *plugin, const rmctl_options *options);
int demo_node_registry(const rm_loaded_plugin *plugin, const rmctl_options *options);
int demo_tensors(const rm_loaded_plugin *plugin, const rmctl_options *options);
/* demo_cuda.c: the GPU section, and the consumer process it execs (rmctl
 * itself, with this hidden command and two pipe fds). */
#define DEMO_CUDA_CONSUMER_COMMAND "__demo-cuda-consumer"
int demo_cuda(const rm_loaded_plugin *plugin, const rmctl_options *options);
int demo_cuda_consumer(const rm_loaded_plugin *plugin, const rmctl_options *options);
/* fork() + exec of rmctl itself with this run's configuration (--plugin,
 * --config, --namespace, -c), then `command` and its arguments; the
 * inherit_fds lose close-on-exec in the child. The child's pid, or -1. */
pid_t spawn_rmctl(const rm_loaded_plugin *plugin, const rmctl_options *options,
                  const char *command, const char *const *arguments, int argument_count,
                  const int *inherit_fds, int inherit_count);
/* demo_gpu_weights.c: the weights part of the GPU section (ABI 1.4), run
 * by demo_cuda() once a device is usable, with its driver binding; and
 * the worker processes it execs (rmctl with this hidden command, two pipe
 * fds and the namespace). */
struct cuda_host; /* cuda_host.h */
#define DEMO_GPU_WEIGHTS_WORKER_COMMAND "__demo-gpu-weights-worker"
int demo_gpu_weights(const rm_loaded_plugin *plugin, const rmctl_options *options,
                     const rm_cuda_info *cuda_info, struct cuda_host *cuda);
int demo_gpu_weights_worker(const rm_loaded_plugin *plugin, const rmctl_options *options);
/* demo_node.c: leaves nothing of a node namespace behind (registry_reclaim,
 * model_evict, the table removed once empty) and says what it did; 0 when
 * nothing is left. */
int demo_node_cleanup(const rm_loaded_plugin *plugin, const rmctl_options *options,
                      const char *namespace_name);
int command_demo(const rm_loaded_plugin *plugin, const rmctl_options *options);

#endif
