/* Everything the plugin names in /dev/shm: the names of its segments (one
 * table of formats), the random ids that make them unguessable, creating a
 * segment, opening one without trusting its name, and finding, reaping and
 * unlinking the segments of a namespace. Tensor pools, their control
 * segments, the node registry's table and its models all go through here,
 * so that a name is written in one place and checked in one place.
 *
 * Names are as for shm_open() (a leading '/'); the file is /dev/shm + name.
 * They must stay byte for byte what they are: running peers of the same
 * plugin version find each other's segments by name, and rmctl and the
 * tests read them. Processes of other plugin versions are refused by the
 * layouts' magic and version, never by the name. */
#ifndef RM_INTERNAL_SHM_SEGMENT_H
#define RM_INTERNAL_SHM_SEGMENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "config_keys.h" /* RM_NAMESPACE_MAX */

#define RM_SEGMENT_DIRECTORY "/dev/shm"

/** A buffer for any name of the table, NUL included (the longest, a node
 *  table under construction with a 32-character namespace and a 10-digit
 *  pid, takes 72). */
#define RM_SEGMENT_NAME_MAX 80

/**
 * The kinds of segment and their names, in one table:
 *   X(kind, family, word, pid, id, suffix, description)
 * A name is "/<family>.<namespace>", then ".<word>" if there is one,
 * ".<pid>" (decimal, the creator's) if `pid`, ".<16 lowercase hex digits>"
 * (a random, non-zero 64-bit id) if `id`, then `suffix`. <namespace> is 1
 * to RM_NAMESPACE_MAX characters of [A-Za-z0-9_-] (shm.namespace for
 * pools, registry.namespace for the node registry), never a '.', so every
 * name parses one way only.
 */
#define RM_SEGMENT_KINDS(X)                                                                  \
    /* /rm.<ns>.<pid>.<hex>: a context's tensor pool (data); <hex> is the pool id */        \
    X(RM_SEGMENT_POOL_DATA, "rm", NULL, true, true, "", "tensor pool")                       \
    /* /rm.<ns>.<pid>.<hex>.ctl: that pool's control segment */                              \
    X(RM_SEGMENT_POOL_CONTROL, "rm", NULL, true, true, ".ctl", "tensor pool control segment") \
    /* /rmreg.<ns>.table: the namespace's node table */                                      \
    X(RM_SEGMENT_NODE_TABLE, "rmreg", "table", false, false, "", "node registry table")      \
    /* /rmreg.<ns>.new.<pid>.<hex>: a node table being built, then link()ed to the above */  \
    X(RM_SEGMENT_NODE_TABLE_NEW, "rmreg", "new", true, true, "",                             \
      "node registry table under construction")                                              \
    /* /rmreg.<ns>.m.<hex>: one model's loader buffer; <hex> is the entry's segment_id */   \
    X(RM_SEGMENT_NODE_MODEL, "rmreg", "m", false, true, "", "model segment")               \
    /* /rmcu.<ns>.<pid>.<hex>: a context's device table (CUDA IPC handles, events) */        \
    X(RM_SEGMENT_CUDA_TABLE, "rmcu", NULL, true, true, "", "device tensor table")            \
    /* /rmcu.<ns>.<pid>.<hex>.ctl: its control segment (the tensors' holds) */               \
    X(RM_SEGMENT_CUDA_CONTROL, "rmcu", NULL, true, true, ".ctl",                             \
      "device tensor control segment")

typedef enum rm_segment_kind {
#define RM_SEGMENT_KIND_ENUM(kind, family, word, pid, id, suffix, description) kind,
    RM_SEGMENT_KINDS(RM_SEGMENT_KIND_ENUM)
#undef RM_SEGMENT_KIND_ENUM
    RM_SEGMENT_KIND_COUNT
} rm_segment_kind;

/** Sets of kinds, for parsing and listing. */
#define RM_SEGMENT_KIND_BIT(kind) (1u << (unsigned)(kind))
#define RM_SEGMENT_ALL_KINDS ((1u << (unsigned)RM_SEGMENT_KIND_COUNT) - 1u)

/** A name taken apart. */
typedef struct rm_segment_name {
    rm_segment_kind kind;
    char namespace_name[RM_NAMESPACE_MAX + 1];
    pid_t pid;   /* kinds with a pid; else 0 */
    uint64_t id; /* kinds with an id; else 0 */
} rm_segment_name;

/* ---- Names -------------------------------------------------------------- */

/** True when `namespace_name` can be part of a name: 1 to RM_NAMESPACE_MAX
 *  characters of [A-Za-z0-9_-]. */
bool rm_segment_namespace_valid(const char *namespace_name);

/** What a kind is, in words, for messages ("tensor pool"). */
const char *rm_segment_kind_description(rm_segment_kind kind);

/**
 * Writes the name of `kind` into `out`: `pid` (> 0) and `id` (non-zero) are
 * used by the kinds whose names carry them and ignored by the others.
 * False (and "" in `out`) for an invalid namespace, pid or id: callers pass
 * what the configuration already checked, so that is a bug, not an input.
 */
bool rm_segment_name_format(char out[RM_SEGMENT_NAME_MAX], rm_segment_kind kind,
                            const char *namespace_name, pid_t pid, uint64_t id);

/**
 * Takes `name` (with its leading '/') apart if it is exactly the name of a
 * kind in `kinds` that rm_segment_name_format() could have written: in
 * namespace `namespace_name`, or in any valid one if NULL. Strict: no
 * other family or word, a pid of 1 to 10 digits without leading zeros that
 * fits a pid_t, exactly 16 lowercase hex digits, non-zero, and nothing
 * after the suffix. False otherwise (`out` is then unspecified).
 */
bool rm_segment_name_parse(const char *name, const char *namespace_name, unsigned kinds,
                           rm_segment_name *out);

/**
 * The name of kind `kind` with the namespace, pid and id of `name` (a pool's
 * data segment <-> its control segment). False if `name` is not a name of
 * the table or `kind` needs a part that `name` lacks.
 */
bool rm_segment_name_sibling(const char *name, rm_segment_kind kind,
                             char out[RM_SEGMENT_NAME_MAX]);

/* ---- Random ids --------------------------------------------------------- */

/**
 * A random, non-zero id for a name of `kind` in `namespace_name` (both
 * only for the message), from getrandom(): unguessable, so nobody can
 * create the segment first or open it without being told its name.
 * Retries on EINTR; anything else is RM_E_SYSTEM with a message for
 * `error_owner`, never a guessable id. Returns RM_OK or RM_E_SYSTEM.
 */
int32_t rm_segment_random_id(rm_segment_kind kind, const char *namespace_name,
                             const void *error_owner, uint64_t *out);

/** Where rm_segment_random_id() reads its bytes: getrandom(). A test seam:
 *  only unit tests set it (to make getrandom fail), and they put it back. */
extern ssize_t (*rm_segment_random_source)(void *buffer, size_t length, unsigned flags);

/* ---- Creating and opening ----------------------------------------------- */

typedef enum rm_segment_commit {
    /** ftruncate(): no page of /dev/shm used until written (or fallocate()d
     *  by its user, as the pool's extent hooks do). */
    RM_SEGMENT_SPARSE,
    /** posix_fallocate(): every page taken now, so a full /dev/shm is an
     *  error here and never a SIGBUS when someone touches a page later. */
    RM_SEGMENT_COMMITTED,
} rm_segment_commit;

/**
 * Creates segment `name` of `bytes` bytes with shm_open(O_CREAT | O_EXCL |
 * O_NOFOLLOW | O_CLOEXEC), makes it 0600 whatever the umask, proves it is
 * a new, empty, regular file of the effective user with that mode, and
 * sizes it as `commit` says. `what` says what the segment is for ("buffer
 * of model key 'x'"), for messages. Returns RM_OK with *out_fd open
 * read-write (the caller closes it) and, if `out_file` is not NULL, the
 * file's fstat() before sizing (its device and inode); or RM_E_NO_MEMORY
 * (/dev/shm full: ENOSPC or ENOMEM), RM_E_SYSTEM (anything else, EEXIST
 * included), with a message for `error_owner`. On failure nothing is left:
 * a segment this call created is unlinked.
 */
int32_t rm_segment_create(const char *name, uint64_t bytes, rm_segment_commit commit,
                          const char *what, const void *error_owner, int *out_fd,
                          struct stat *out_file);

/**
 * Opens segment `name` for reading or writing, with O_NOFOLLOW and
 * O_NONBLOCK (a FIFO planted under the name must not block the open), and
 * proves it is a regular file of the effective user whose permission bits
 * are exactly `mode`. Returns the fd and its size, or -1 with errno
 * (ENOENT: gone; EPERM: not ours or another mode; EINVAL: not a regular
 * file; or what shm_open/fstat said).
 */
int rm_segment_open_owned(const char *name, bool writable, mode_t mode, uint64_t *out_size);

/* ---- Finding, reaping and unlinking ------------------------------------- */

/**
 * Calls `visit` for every entry of /dev/shm that is a name of a kind in
 * `kinds` in namespace `namespace_name`, with the name taken apart and as
 * for shm_open(); in directory order. `visit` returns RM_OK to go on; any
 * other code stops the walk and is returned. Returns RM_OK, what `visit`
 * returned, or RM_E_SYSTEM (/dev/shm unreadable; message for
 * `error_owner`).
 */
typedef int32_t (*rm_segment_visit_fn)(const rm_segment_name *segment, const char *name,
                                       void *user);
int32_t rm_segment_list(const char *namespace_name, unsigned kinds, rm_segment_visit_fn visit,
                        void *user, const void *error_owner);

/**
 * Unlinks the segments of kinds `kinds` in `namespace_name` whose owner is
 * gone, as `owner_gone` judges, and adds to *segments and *bytes what that
 * freed (see rm_segment_unlink). `owner_gone` is called just before the
 * unlink, so it may also mark the segment as given up; NULL judges by the
 * pid in the name (rm_process_alive(pid, 0)) and never reaps kinds that
 * carry none. Returns RM_OK or RM_E_SYSTEM (/dev/shm unreadable).
 */
typedef bool (*rm_segment_owner_gone_fn)(const rm_segment_name *segment, const char *name,
                                         void *user);
int32_t rm_segment_reap(const char *namespace_name, unsigned kinds,
                        rm_segment_owner_gone_fn owner_gone, void *user,
                        const void *error_owner, uint64_t *segments, uint64_t *bytes);

/**
 * Unlinks segment `name` if it is a regular file of the effective user.
 * True when it did; then *freed_bytes (if not NULL) gets the /dev/shm
 * bytes it held (st_blocks: what goes back once the last mapping goes).
 */
bool rm_segment_unlink(const char *name, uint64_t *freed_bytes);

/** The same, only if the name is still the file `device` and `inode` (a
 *  table removed by hand and made anew is left alone). */
bool rm_segment_unlink_if_file(const char *name, uint64_t device, uint64_t inode,
                               uint64_t *freed_bytes);

#endif
