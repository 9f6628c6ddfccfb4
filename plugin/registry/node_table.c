/* The node registry's shared table: creating it so that nobody ever sees
 * it half-initialised, checking one found in /dev/shm before trusting it,
 * its robust lock, and the processes attached to it, which decide when it
 * is removed (see node_table.h for the layout and the protocol). */
#include "node_table.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "process_identity.h"
#include "shm_segment.h"

/* Tables found retired between opening and locking them before this call
 * gives up: each one means another process removed a table in that very
 * moment, which does not happen a thousand times in a row. */
#define ATTACH_ATTEMPTS 1000

uint64_t rm_node_key_hash(const char *key)
{
    uint64_t hash = UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++)
        hash = (hash ^ *p) * UINT64_C(0x100000001b3);
    return hash | 1; /* 0 marks an empty slot */
}

void rm_node_futex_wake_all(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void rm_node_futex_wait_ms(uint32_t *word, uint32_t expected, uint64_t ms)
{
    struct timespec timeout = {.tv_sec = (time_t)(ms / 1000),
                               .tv_nsec = (long)((ms % 1000) * 1000000)};
    syscall(SYS_futex, word, FUTEX_WAIT, expected, &timeout, NULL, 0);
}

void rm_node_clear_slot(const rm_node_view *table, uint32_t slot)
{
    rm_node_entry *e = &table->entries[slot];
    table->hashes[slot] = 0;
    e->state = RM_NODE_EMPTY;
    e->key[0] = '\0';
    e->segment_id = 0;
    e->bytes = 0;
    e->loader_pid = 0;
    e->loader_start_time = 0;
    e->holder_count = 0;
    e->memory = 0;
    e->refs = 0;
    e->device_bytes = 0;
    memset(e->device_uuid, 0, sizeof e->device_uuid);
    memset(e->holders, 0, sizeof e->holders);
}

/* ------------------------------------------------------------------------ */
/* The lock, and repair after a holder died in it                           */
/* ------------------------------------------------------------------------ */

/* Recomputes what can be derived from the entries: a process killed in the
 * middle of an update may have left hashes, counts or sums behind the
 * entries they summarise. Lock held (EOWNERDEAD). */
static void repair_table(const rm_node_view *table)
{
    uint64_t models = 0;
    uint64_t bytes = 0;
    uint64_t *hashes = table->hashes;
    for (uint32_t slot = 0; slot < table->capacity; slot++) {
        rm_node_entry *e = &table->entries[slot];
        bool key_ok = memchr(e->key, '\0', sizeof e->key) != NULL && e->key[0] != '\0';
        /* A READY entry without its size was cut short while being
         * published: nobody can map it, so it goes. */
        bool ready_unsized = e->state == RM_NODE_READY && e->bytes == 0;
        if (e->state > RM_NODE_FAILED || (e->state != RM_NODE_EMPTY && !key_ok) ||
            ready_unsized) {
            rm_node_clear_slot(table, slot);
            continue;
        }
        if (e->state == RM_NODE_EMPTY) {
            hashes[slot] = 0;
            continue;
        }
        hashes[slot] = rm_node_key_hash(e->key);
        uint32_t holders = 0;
        uint64_t refs = 0;
        for (uint32_t i = 0; i < RM_NODE_MAX_HOLDER_PROCESSES; i++) {
            if (e->holders[i].pid == 0)
                continue;
            if (e->holders[i].refs == 0 && e->memory != RM_MEMORY_CUDA) {
                e->holders[i] = (rm_node_holder){0};
                continue;
            }
            holders++;
            refs += e->holders[i].refs;
        }
        e->holder_count = holders;
        e->refs = refs;
        if (e->state == RM_NODE_READY) {
            models++;
            bytes += e->bytes;
        }
        /* A waiter may have read `wake` before the dead process bumped it
         * (or not): wake everyone, they re-check. */
        __atomic_add_fetch(&e->wake, 1, __ATOMIC_RELEASE);
        rm_node_futex_wake_all(&e->wake);
    }
    table->header->ready_models = models;
    table->header->ready_bytes = bytes;
    /* A record half written or half cleared counts for nothing. */
    for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
        rm_node_attacher *a = &table->attachers[i];
        if (a->pid <= 0 || a->contexts == 0)
            *a = (rm_node_attacher){0};
    }
}

/* How long a locker waits before it asks whether the lock's owner could be
 * holding it. The lock is held for table updates only (never across a
 * loader, a futex wait or I/O), so a second is far beyond any real holder. */
uint64_t rm_node_table_lock_patience_ns = UINT64_C(1000000000);
#define IN_PROCESS_HOLDERS 64

/* The threads of this process inside a table lock now (their TIDs; 0 =
 * free). A lock word naming a thread of this process that is not here was
 * written by someone else. */
static _Atomic pid_t in_process_holders[IN_PROCESS_HOLDERS];
static _Thread_local pid_t this_tid;

static pid_t current_tid(void)
{
    if (this_tid == 0)
        this_tid = (pid_t)syscall(SYS_gettid);
    return this_tid;
}

static void note_holder(void)
{
    pid_t tid = current_tid();
    for (int i = 0; i < IN_PROCESS_HOLDERS; i++) {
        pid_t free_slot = 0;
        if (atomic_compare_exchange_strong(&in_process_holders[i], &free_slot, tid))
            return;
    }
    /* More threads in table locks than slots: noted_holder() then errs
     * towards waiting. */
}

static void forget_holder(void)
{
    pid_t tid = current_tid();
    for (int i = 0; i < IN_PROCESS_HOLDERS; i++) {
        pid_t mine = tid;
        if (atomic_compare_exchange_strong(&in_process_holders[i], &mine, 0))
            return;
    }
}

static bool noted_holder(pid_t tid)
{
    int free_slots = 0;
    for (int i = 0; i < IN_PROCESS_HOLDERS; i++) {
        pid_t seen = atomic_load(&in_process_holders[i]);
        if (seen == tid)
            return true;
        free_slots += seen == 0;
    }
    return free_slots == 0; /* the set overflowed: assume it may hold */
}

/* The thread group of thread `tid`, 0 when there is no such thread. */
static pid_t thread_group_of(pid_t tid)
{
    char path[48], line[128];
    snprintf(path, sizeof path, "/proc/%d/status", (int)tid);
    FILE *status = fopen(path, "re");
    if (status == NULL)
        return 0;
    pid_t group = 0;
    while (group == 0 && fgets(line, sizeof line, status) != NULL)
        if (strncmp(line, "Tgid:", 5) == 0)
            group = (pid_t)strtol(line + 5, NULL, 10);
    fclose(status);
    return group;
}

/* True when process `pid` maps this table file (device and inode). A
 * process whose maps we cannot read is another user's: it cannot have
 * opened a 0600 table of ours. */
static bool process_maps_table(pid_t pid, const rm_node_view *table)
{
    char path[48], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *maps = fopen(path, "re");
    if (maps == NULL)
        return false;
    bool found = false;
    while (!found && fgets(line, sizeof line, maps) != NULL) {
        unsigned major_number = 0, minor_number = 0;
        unsigned long long inode = 0;
        if (sscanf(line, "%*s %*s %*s %x:%x %llu", &major_number, &minor_number, &inode) == 3)
            found = inode == table->inode &&
                    makedev(major_number, minor_number) == (dev_t)table->device;
    }
    fclose(maps);
    return found;
}

/* Could the thread the lock word names be holding the lock? Only a thread
 * of a process that maps the table can; in this process, only one the
 * plugin noted as inside a table lock. */
static bool owner_may_hold(const rm_node_view *table, unsigned word)
{
    pid_t tid = (pid_t)(word & FUTEX_TID_MASK);
    if (tid == 0)
        return word == 0; /* released meanwhile; flag bits alone are no holder */
    pid_t group = thread_group_of(tid);
    if (group == 0)
        return false;
    if (group == getpid())
        return noted_holder(tid);
    return process_maps_table(group, table);
}

/* The type glibc records in a robust process-shared mutex (what
 * pthread_mutex_init writes for the table's attributes). A lock whose type
 * was overwritten could make glibc abort() inside pthread_mutex_lock (it
 * asserts on priority-protocol types), so it is checked before each use. */
static int robust_shared_kind(void)
{
    static _Atomic int kind = -1;
    int known = atomic_load(&kind);
    if (known != -1)
        return known;
    pthread_mutexattr_t attributes;
    pthread_mutex_t probe;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&probe, &attributes);
    pthread_mutexattr_destroy(&attributes);
    known = probe.__data.__kind;
    pthread_mutex_destroy(&probe);
    atomic_store(&kind, known);
    return known;
}

/* The lock's futex word: glibc's robust mutex keeps the owner's TID in it
 * (FUTEX_TID_MASK), with the waiters and owner-died flags above. */
static unsigned lock_word(const pthread_mutex_t *lock)
{
    return (unsigned)((volatile const pthread_mutex_t *)lock)->__data.__lock;
}

/* The kernel hands a robust lock to the next locker (EOWNERDEAD) when its
 * owner dies, but only an owner that registered it: a lock word written
 * by a process that scribbled over the table names a thread that never
 * held it, and a plain lock would wait for it forever. So the lock is
 * taken with a deadline, and a lock still held after it by a thread that
 * cannot be holding it is reported as the corruption it is. */
int32_t rm_node_table_lock(const rm_node_view *table, const char *namespace_name,
                           const void *error_owner, bool *recovered)
{
    *recovered = false;
    for (;;) {
        int kind = ((volatile pthread_mutex_t *)&table->header->lock)->__data.__kind;
        if (kind != robust_shared_kind())
            return rm_error_set(error_owner, RM_E_CORRUPT_STATE,
                                "node registry '%s': the table lock's type was overwritten "
                                "(%d, not %d): the table was overwritten by another process; "
                                "remove /dev/shm/rmreg.%s.table once no process uses it",
                                namespace_name, kind, robust_shared_kind(), namespace_name);
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        uint64_t patience = rm_node_table_lock_patience_ns;
        deadline.tv_sec += (time_t)(patience / 1000000000u);
        deadline.tv_nsec += (long)(patience % 1000000000u);
        if (deadline.tv_nsec >= 1000000000) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000;
        }
        int rc = pthread_mutex_timedlock(&table->header->lock, &deadline);
        if (rc == 0 || rc == EOWNERDEAD)
            note_holder();
        if (rc == 0)
            return RM_OK;
        if (rc == EOWNERDEAD) {
            repair_table(table);
            table->header->lock_recoveries++;
            pthread_mutex_consistent(&table->header->lock);
            *recovered = true;
            return RM_OK;
        }
        if (rc == ETIMEDOUT) {
            unsigned word = lock_word(&table->header->lock);
            pid_t owner = (pid_t)(word & FUTEX_TID_MASK);
            /* A real, live holder: keep waiting. So too when the word
             * changed while it was looked into: the holder released the
             * lock and exited in between (its thread then is gone, yet it
             * held the lock), or another took it. A scribbled word stays. */
            if (owner_may_hold(table, word) || lock_word(&table->header->lock) != word)
                continue;
            return rm_error_set(error_owner, RM_E_CORRUPT_STATE,
                                "node registry '%s': the table lock names thread %d as its "
                                "holder, which cannot hold it (no such thread, or its process "
                                "does not map the table): the table was overwritten by "
                                "another process; remove /dev/shm/rmreg.%s.table once no "
                                "process uses it",
                                namespace_name, (int)owner, namespace_name);
        }
        return rm_error_set(error_owner, RM_E_CORRUPT_STATE,
                            "node registry '%s': the table lock cannot be taken (%s)",
                            namespace_name, strerror(rc));
    }
}

void rm_node_table_unlock(const rm_node_view *table)
{
    forget_holder();
    pthread_mutex_unlock(&table->header->lock);
}

typedef struct table_opener {
    const char *namespace_name;
    const void *error_owner;
    uint32_t capacity; /* of a table this process creates */
    rm_node_self self;
    rm_node_view view;
} table_opener;

/* ------------------------------------------------------------------------ */
/* Opening the table                                                        */
/* ------------------------------------------------------------------------ */

static int32_t corrupt_table(table_opener *opener, const char *name, const char *why)
{
    return rm_error_set(opener->error_owner, RM_E_CORRUPT_STATE,
                        "node registry table /dev/shm%s %s; remove it when no process uses "
                        "namespace '%s'",
                        name, why, opener->namespace_name);
}

static rm_node_view view_of(void *base, uint64_t size, uint32_t capacity, const struct stat *file)
{
    unsigned char *bytes = base;
    return (rm_node_view){
        .header = base,
        .bytes = size,
        .capacity = capacity,
        .attachers = (rm_node_attacher *)(bytes + RM_NODE_TABLE_HEADER_BYTES),
        .hashes = (uint64_t *)(bytes + RM_NODE_TABLE_HEADER_BYTES + RM_NODE_ATTACHER_ARRAY_BYTES),
        .entries = (rm_node_entry *)(bytes + RM_NODE_TABLE_HEADER_BYTES +
                                     RM_NODE_ATTACHER_ARRAY_BYTES +
                                     rm_node_hash_array_bytes(capacity)),
        .device = (uint64_t)file->st_dev,
        .inode = (uint64_t)file->st_ino,
    };
}

/* Maps an existing table and checks that it is one this build can use. */
static int32_t open_table(table_opener *opener, const char *name, bool *missing)
{
    *missing = false;
    uint64_t size = 0;
    int fd = rm_segment_open_owned(name, true, S_IRUSR | S_IWUSR, &size);
    if (fd < 0) {
        if (errno == ENOENT) {
            *missing = true;
            return RM_OK;
        }
        if (errno == EPERM || errno == EINVAL)
            return corrupt_table(opener, name, "is not a 0600 regular file of this user");
        if (errno == ELOOP || errno == EACCES || errno == EISDIR || errno == ENXIO)
            return corrupt_table(opener, name, "is not a file this user can open");
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "opening node registry table %s failed: %s", name, strerror(errno));
    }
    struct stat file;
    if (fstat(fd, &file) != 0) {
        int err = errno;
        close(fd);
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "fstat() of node registry table %s failed: %s", name, strerror(err));
    }
    if (size < RM_NODE_TABLE_HEADER_BYTES ||
        size > rm_node_table_bytes(RM_NODE_TABLE_ENTRIES_MAX)) {
        close(fd);
        return corrupt_table(opener, name, "has an impossible size");
    }
    void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED)
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "mmap() of node registry table %s failed: %s", name, strerror(err));
    rm_node_header *table = base;
    if (table->magic == RM_NODE_TABLE_MAGIC && table->layout != RM_NODE_TABLE_LAYOUT) {
        /* Most likely a plugin of another version uses (or used) the
         * namespace: the two cannot share a table. */
        char why[160];
        snprintf(why, sizeof why,
                 "has layout %u, made by another version of the plugin (this one uses "
                 "layout %u)",
                 table->layout, RM_NODE_TABLE_LAYOUT);
        munmap(base, (size_t)size);
        return corrupt_table(opener, name, why);
    }
    if (table->magic != RM_NODE_TABLE_MAGIC || table->entry_bytes != sizeof(rm_node_entry) ||
        table->lock_bytes != sizeof(pthread_mutex_t) ||
        table->attacher_slots != RM_NODE_TABLE_ATTACHERS ||
        table->capacity < RM_NODE_TABLE_ENTRIES_MIN ||
        table->capacity > RM_NODE_TABLE_ENTRIES_MAX ||
        table->file_bytes != size || rm_node_table_bytes(table->capacity) != size) {
        munmap(base, (size_t)size);
        return corrupt_table(opener, name,
                             "has no valid header (magic, layout, entry size or file size)");
    }
    uint32_t capacity = table->capacity; /* read once, then proven */
    if (rm_node_table_bytes(capacity) != size) {
        munmap(base, (size_t)size);
        return corrupt_table(opener, name, "changed while it was being checked");
    }
    opener->view = view_of(base, size, capacity, &file);
    return RM_OK;
}

static bool same_process(const rm_node_attacher *a, rm_node_self self)
{
    return a->pid == self.pid && a->start_time == self.start_time;
}

/* One more context of `self`; false when every record is taken (dead
 * processes' records are freed first). Lock held. */
static bool add_context(const rm_node_view *table, rm_node_self self)
{
    for (int pass = 0; pass < 2; pass++) {
        rm_node_attacher *free_record = NULL;
        for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
            rm_node_attacher *a = &table->attachers[i];
            if (a->pid != 0 && same_process(a, self)) {
                a->contexts++;
                return true;
            }
            if (a->pid == 0 && free_record == NULL)
                free_record = a;
        }
        if (free_record != NULL) {
            *free_record = (rm_node_attacher){
                .pid = self.pid, .contexts = 1, .start_time = self.start_time};
            return true;
        }
        if (pass == 0 && rm_node_drop_dead_attachers(table, self) == 0)
            break;
    }
    return false;
}

/* Builds a table under a private name, with `self` attached, and links it
 * into place, so nobody can see a half-initialised one nor one that its
 * creator has not started using (which another process could remove as
 * unused). *linked false: another creator won the race (the caller opens
 * theirs). */
static int32_t create_table(table_opener *opener, const char *name, bool *linked)
{
    *linked = false;
    uint64_t id = 0;
    int32_t status = rm_segment_random_id(RM_SEGMENT_NODE_TABLE_NEW, opener->namespace_name,
                                          opener->error_owner, &id);
    if (status != RM_OK)
        return status;
    char temporary[RM_SEGMENT_NAME_MAX];
    if (!rm_segment_name_format(temporary, RM_SEGMENT_NODE_TABLE_NEW, opener->namespace_name,
                                getpid(), id))
        return rm_error_set(opener->error_owner, RM_E_INVALID_ARGUMENT,
                            "no segment name for node registry namespace '%s'",
                            opener->namespace_name);
    char final_path[sizeof RM_SEGMENT_DIRECTORY + RM_SEGMENT_NAME_MAX];
    snprintf(final_path, sizeof final_path, RM_SEGMENT_DIRECTORY "%s", name);
    char what[sizeof final_path + 64];
    snprintf(what, sizeof what, "node registry table %s (registry.table_entries sets its size)",
             final_path);
    uint32_t capacity = opener->capacity;
    uint64_t size = rm_node_table_bytes(capacity);
    struct stat file;
    int fd = -1;
    status = rm_segment_create(temporary, size, RM_SEGMENT_COMMITTED, what, opener->error_owner,
                               &fd, &file);
    if (status != RM_OK)
        return status;
    void *base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int err = errno;
    close(fd);
    if (base == MAP_FAILED) {
        (void)rm_segment_unlink(temporary, NULL);
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "mmap() of the %llu-byte %s, segment %s, failed: %s",
                            (unsigned long long)size, what, temporary, strerror(err));
    }
    char temporary_path[sizeof final_path];
    snprintf(temporary_path, sizeof temporary_path, RM_SEGMENT_DIRECTORY "%s", temporary);
    rm_node_header *table = base;
    pthread_mutexattr_t attributes;
    pthread_mutexattr_init(&attributes);
    pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&table->lock, &attributes);
    pthread_mutexattr_destroy(&attributes);
    table->layout = RM_NODE_TABLE_LAYOUT;
    table->capacity = capacity;
    table->file_bytes = size;
    table->entry_bytes = sizeof(rm_node_entry);
    table->lock_bytes = sizeof(pthread_mutex_t);
    table->attacher_slots = RM_NODE_TABLE_ATTACHERS;
    table->magic = RM_NODE_TABLE_MAGIC;
    rm_node_view view = view_of(base, size, capacity, &file);
    view.attachers[0] = (rm_node_attacher){
        .pid = opener->self.pid, .contexts = 1, .start_time = opener->self.start_time};
    int published = link(temporary_path, final_path);
    err = errno;
    (void)rm_segment_unlink(temporary, NULL);
    if (published == 0) {
        opener->view = view;
        *linked = true;
        return RM_OK;
    }
    munmap(base, (size_t)size);
    if (err != EEXIST)
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "cannot publish node registry table %s: %s", final_path,
                            strerror(err));
    return RM_OK;
}

/* Unlinks `name` if it is the file `table` maps; the /dev/shm bytes that
 * freed. Lock of `table` held, so no other process can be removing it. */
static uint64_t unlink_if_named(const rm_node_view *table, const char *name, bool *unlinked)
{
    uint64_t freed = 0;
    *unlinked = rm_segment_unlink_if_file(name, table->device, table->inode, &freed);
    return freed;
}

/* Opens the table under `name`, or creates it, and records this process
 * in it. A table found retired (removed between our open and our lock)
 * is let go: its name is already unlinked, or was about to be by a
 * process killed in between, whose work this one finishes. */
static int32_t attach_table(table_opener *opener, bool create, bool *recovered)
{
    char name[RM_SEGMENT_NAME_MAX];
    if (!rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, opener->namespace_name, 0, 0))
        return rm_error_set(opener->error_owner, RM_E_INVALID_ARGUMENT,
                            "no segment name for node registry namespace '%s'",
                            opener->namespace_name);
    for (int attempt = 0; attempt < ATTACH_ATTEMPTS; attempt++) {
        bool missing = false;
        int32_t status = open_table(opener, name, &missing);
        if (status != RM_OK)
            return status;
        if (missing) {
            if (!create)
                return RM_E_NOT_FOUND;
            bool linked = false;
            status = create_table(opener, name, &linked);
            if (status != RM_OK || linked)
                return status;
            continue;
        }
        bool found_recovered = false;
        status = rm_node_table_lock(&opener->view, opener->namespace_name,
                                    opener->error_owner, &found_recovered);
        *recovered = *recovered || found_recovered;
        if (status != RM_OK) {
            rm_node_table_unmap(&opener->view);
            return status;
        }
        if (opener->view.header->retired) {
            bool unlinked = false;
            (void)unlink_if_named(&opener->view, name, &unlinked);
            rm_node_table_unlock(&opener->view);
            rm_node_table_unmap(&opener->view);
            if (attempt >= 8)
                sched_yield();
            continue;
        }
        bool added = add_context(&opener->view, opener->self);
        rm_node_table_unlock(&opener->view);
        if (added)
            return RM_OK;
        rm_node_table_unmap(&opener->view);
        return rm_error_set(opener->error_owner, RM_E_QUOTA_EXCEEDED,
                            "node registry '%s': %u live processes already use its table, "
                            "the most it records",
                            opener->namespace_name, RM_NODE_TABLE_ATTACHERS);
    }
    return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                        "node registry table /dev/shm%s was removed %d times in a row while "
                        "this process opened it",
                        name, ATTACH_ATTEMPTS);
}

int32_t rm_node_table_attach(const char *namespace_name, uint32_t entries_if_created,
                             bool create, rm_node_self self, const void *error_owner,
                             rm_node_view *out, bool *recovered)
{
    *recovered = false;
    table_opener opener = {
        .namespace_name = namespace_name,
        .error_owner = error_owner,
        .capacity = entries_if_created,
        .self = self,
    };
    int32_t status = attach_table(&opener, create, recovered);
    if (status == RM_OK)
        *out = opener.view;
    return status;
}

void rm_node_table_unmap(rm_node_view *table)
{
    if (table->header != NULL)
        munmap(table->header, (size_t)table->bytes);
    *table = (rm_node_view){0};
}

/* ------------------------------------------------------------------------ */
/* Attachers and removal                                                    */
/* ------------------------------------------------------------------------ */

uint32_t rm_node_attached_contexts(const rm_node_view *table, rm_node_self self)
{
    for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
        const rm_node_attacher *a = &table->attachers[i];
        if (a->pid != 0 && same_process(a, self))
            return a->contexts;
    }
    return 0;
}

void rm_node_detach_context(const rm_node_view *table, rm_node_self self)
{
    for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
        rm_node_attacher *a = &table->attachers[i];
        if (a->pid == 0 || !same_process(a, self))
            continue;
        if (a->contexts <= 1)
            *a = (rm_node_attacher){0};
        else
            a->contexts--;
        return;
    }
}

uint32_t rm_node_drop_dead_attachers(const rm_node_view *table, rm_node_self self)
{
    uint32_t dropped = 0;
    for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
        rm_node_attacher *a = &table->attachers[i];
        if (a->pid == 0 || same_process(a, self) || rm_process_alive(a->pid, a->start_time))
            continue;
        *a = (rm_node_attacher){0};
        dropped++;
    }
    return dropped;
}

bool rm_node_others_attached(const rm_node_view *table, rm_node_self self)
{
    /* Stops at the first live one: a context's destroy asks this, and
     * should not read /proc for every process of the namespace. */
    for (uint32_t i = 0; i < RM_NODE_TABLE_ATTACHERS; i++) {
        rm_node_attacher *a = &table->attachers[i];
        if (a->pid == 0 || same_process(a, self))
            continue;
        if (rm_process_alive(a->pid, a->start_time))
            return true;
        *a = (rm_node_attacher){0};
    }
    return false;
}

bool rm_node_table_unused(const rm_node_view *table)
{
    for (uint32_t slot = 0; slot < table->capacity; slot++) {
        uint32_t state = table->entries[slot].state;
        if (state == RM_NODE_READY || state == RM_NODE_LOADING)
            return false;
    }
    return true;
}

bool rm_node_table_retire(const rm_node_view *table, const char *namespace_name,
                          uint64_t *freed_bytes)
{
    /* Retired first: were this process killed before the unlink, the next
     * process to open the table finds it retired and unlinks the name. */
    table->header->retired = 1;
    char name[RM_SEGMENT_NAME_MAX];
    bool unlinked = false;
    if (!rm_segment_name_format(name, RM_SEGMENT_NODE_TABLE, namespace_name, 0, 0))
        return false;
    *freed_bytes = unlink_if_named(table, name, &unlinked);
    return unlinked;
}
