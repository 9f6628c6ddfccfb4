/* Process lifecycle: telling a forked child from its parent. */
#ifndef RM_HOOKS_FORK_H
#define RM_HOOKS_FORK_H

#include <stdint.h>

/** Registers the pthread_atfork child handler once per process. */
void rm_fork_hook_install(void);

/**
 * Incremented in the child of every fork(). A context records it at
 * creation; a mismatch means the caller is a child using its parent's
 * context, whose threads do not exist here and whose locks may be held.
 */
uint64_t rm_fork_generation(void);

#endif
