/* Process lifecycle: telling a forked child from its parent.
 *
 * Checking getpid() on every call would cost a system call on the hot path;
 * an atfork handler that bumps a counter costs one relaxed load per call. */
#include "fork.h"

#include <pthread.h>
#include <stdatomic.h>

static _Atomic uint64_t fork_generation;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    atomic_fetch_add_explicit(&fork_generation, 1, memory_order_relaxed);
}

static void install(void)
{
    /* The plugin is linked -z nodelete, so the handler never outlives its
     * code; if registration fails (ENOMEM), fork detection is lost but
     * nothing else breaks. */
    (void)pthread_atfork(NULL, NULL, on_fork_child);
}

void rm_fork_hook_install(void)
{
    pthread_once(&install_once, install);
}

uint64_t rm_fork_generation(void)
{
    return atomic_load_explicit(&fork_generation, memory_order_relaxed);
}
