/* The node registry's shared table: creating it so that nobody ever sees
 * it half-initialised, checking one found in /dev/shm before trusting it,
 * and its robust lock (see node_table.h for the layout). */
#include "node_table.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "shm_segment.h"

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
    e->refs = 0;
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
            if (e->holders[i].refs == 0) {
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
}

int32_t rm_node_table_lock(const rm_node_view *table, const char *namespace_name,
                           const void *error_owner, bool *recovered)
{
    *recovered = false;
    int rc = pthread_mutex_lock(&table->header->lock);
    if (rc == 0)
        return RM_OK;
    if (rc == EOWNERDEAD) {
        repair_table(table);
        table->header->lock_recoveries++;
        pthread_mutex_consistent(&table->header->lock);
        *recovered = true;
        return RM_OK;
    }
    return rm_error_set(error_owner, RM_E_CORRUPT_STATE,
                        "node registry '%s': the table lock cannot be taken (%s)",
                        namespace_name, strerror(rc));
}

void rm_node_table_unlock(const rm_node_view *table)
{
    pthread_mutex_unlock(&table->header->lock);
}

typedef struct table_opener {
    const char *namespace_name;
    const void *error_owner;
    uint32_t capacity; /* of a table this process creates */
    rm_node_view view;
} table_opener;

uint64_t rm_node_random_id(void)
{
    uint64_t id = 0;
    while (id == 0) {
        if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
            id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    }
    return id;
}

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
    if (table->magic != RM_NODE_TABLE_MAGIC || table->layout != RM_NODE_TABLE_LAYOUT ||
        table->entry_bytes != sizeof(rm_node_entry) ||
        table->lock_bytes != sizeof(pthread_mutex_t) ||
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
    opener->view = (rm_node_view){
        .header = table,
        .bytes = size,
        .capacity = capacity,
        .hashes = (uint64_t *)((unsigned char *)base + RM_NODE_TABLE_HEADER_BYTES),
        .entries = (rm_node_entry *)((unsigned char *)base + RM_NODE_TABLE_HEADER_BYTES +
                                     rm_node_hash_array_bytes(capacity)),
    };
    return RM_OK;
}

/* Builds a table under a private name and links it into place, so nobody
 * can see a half-initialised one; losing the race to another creator is
 * fine (the caller opens theirs). */
static int32_t create_table(table_opener *opener, const char *name)
{
    char temporary[RM_NODE_NAME_MAX];
    snprintf(temporary, sizeof temporary, "/rmreg.%s.new.%d.%016llx", opener->namespace_name,
             (int)getpid(), (unsigned long long)rm_node_random_id());
    int fd = shm_open(temporary, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
                      S_IRUSR | S_IWUSR);
    if (fd < 0)
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "cannot create node registry table %s: %s", temporary,
                            strerror(errno));
    uint32_t capacity = opener->capacity;
    uint64_t size = rm_node_table_bytes(capacity);
    int err = fchmod(fd, S_IRUSR | S_IWUSR) != 0 ? errno : posix_fallocate(fd, 0, (off_t)size);
    void *base = MAP_FAILED;
    if (err == 0) {
        base = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED)
            err = errno;
    }
    close(fd);
    char temporary_path[RM_NODE_NAME_MAX + 16];
    char final_path[RM_NODE_NAME_MAX + 16];
    snprintf(temporary_path, sizeof temporary_path, "/dev/shm%s", temporary);
    snprintf(final_path, sizeof final_path, "/dev/shm%s", name);
    if (err != 0) {
        shm_unlink(temporary);
        return rm_error_set(opener->error_owner,
                            err == ENOSPC ? RM_E_NO_MEMORY : RM_E_SYSTEM,
                            "cannot commit the %llu-byte node registry table: %s",
                            (unsigned long long)size, strerror(err));
    }
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
    table->magic = RM_NODE_TABLE_MAGIC;
    munmap(base, (size_t)size);
    int linked = link(temporary_path, final_path);
    err = errno;
    shm_unlink(temporary);
    if (linked != 0 && err != EEXIST)
        return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                            "cannot publish node registry table %s: %s", final_path,
                            strerror(err));
    return RM_OK;
}

static int32_t attach_table(table_opener *opener)
{
    char name[RM_NODE_NAME_MAX];
    snprintf(name, sizeof name, RM_NODE_TABLE_NAME_FORMAT, opener->namespace_name);
    for (int attempt = 0; attempt < 3; attempt++) {
        bool missing = false;
        int32_t status = open_table(opener, name, &missing);
        if (status != RM_OK || !missing)
            return status;
        status = create_table(opener, name);
        if (status != RM_OK)
            return status;
    }
    return rm_error_set(opener->error_owner, RM_E_SYSTEM,
                        "node registry table /dev/shm%s keeps disappearing", name);
}

int32_t rm_node_table_attach(const char *namespace_name, uint32_t entries_if_created,
                             const void *error_owner, rm_node_view *out)
{
    table_opener opener = {
        .namespace_name = namespace_name,
        .error_owner = error_owner,
        .capacity = entries_if_created,
    };
    int32_t status = attach_table(&opener);
    if (status == RM_OK)
        *out = opener.view;
    return status;
}
