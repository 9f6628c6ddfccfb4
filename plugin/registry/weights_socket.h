/* Handing a descriptor of device memory to another process of the same
 * user: the transport of GPU weights in node scope (REF: gpu-weights).
 *
 * A process that has weights mapped listens on one Unix stream socket in
 * the abstract namespace, "\0rm_plugin.weights.<pid>.<start time>", so a
 * newcomer finds it from a holder record of the node table (pid and start
 * time: a reused pid listens under another name) and nothing is left in
 * the file system when the process dies. Abstract sockets have no
 * permissions, so both ends check the other with SO_PEERCRED: the server
 * answers only a peer of its own effective uid, and the client accepts an
 * answer only from the pid it meant to ask, of its own uid.
 *
 * One exchange per connection: the client sends a request (namespace, key,
 * weights id), the server answers a status and the allocation's size,
 * with the descriptor attached (SCM_RIGHTS) when it has those weights.
 * No pidfd_getfd(): containers refuse it, and it needs ptrace rights. */
#ifndef RM_INTERNAL_WEIGHTS_SOCKET_H
#define RM_INTERNAL_WEIGHTS_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config_keys.h" /* RM_NAMESPACE_MAX */
#include "rm_plugin.h"

/** How long a client waits for one holder (connect, send, answer). */
#define RM_WEIGHTS_FETCH_TIMEOUT_MS 2000u

typedef struct rm_weights_request {
    char namespace_name[RM_NAMESPACE_MAX + 1];
    char key[RM_MODEL_KEY_MAX]; /* the table's key */
    uint64_t id;                /* the entry's weights id */
} rm_weights_request;

/**
 * The server's question to its owner: a new descriptor (the caller
 * closes it after sending) of the weights `request` names, and their
 * allocation size. RM_OK, or RM_E_NOT_FOUND when this process does not
 * have them (any more).
 */
typedef int32_t (*rm_weights_lookup_fn)(const rm_weights_request *request, int *out_fd,
                                        uint64_t *out_bytes);

typedef struct rm_weights_server rm_weights_server;

/**
 * Binds this process's socket and starts the thread that answers on it
 * (all signals blocked). RM_OK, RM_E_BUSY (the name is taken: another
 * server of this process runs), RM_E_NO_MEMORY, RM_E_SYSTEM.
 */
int32_t rm_weights_server_start(rm_weights_lookup_fn lookup, const void *error_owner,
                                rm_weights_server **out);

/** Stops the thread (at most one exchange in progress finishes), closes
 *  the socket. NULL: no-op. Must not be called with a lock `lookup`
 *  takes. */
void rm_weights_server_stop(rm_weights_server *server);

/** In a fork()ed child, where the thread does not exist: closes the
 *  child's copies of the server's descriptors and frees it. NULL: no-op. */
void rm_weights_server_forget(rm_weights_server *server);

/**
 * Asks process `pid` (started at `start_time`) for the weights of
 * `request`. RM_OK and *out_fd (the caller's) and *out_bytes; otherwise
 * RM_E_NOT_FOUND (it does not have them, or nobody listens under its
 * name: it exited, or has no weights mapped) or RM_E_SYSTEM (the peer is
 * not that process of this user, it did not answer within
 * RM_WEIGHTS_FETCH_TIMEOUT_MS, a malformed answer, a failed call); no
 * message is set: `why` says what happened, for the caller's message.
 */
int32_t rm_weights_fetch(pid_t pid, uint64_t start_time, const rm_weights_request *request,
                         int *out_fd, uint64_t *out_bytes, char *why, size_t why_size);

#endif
