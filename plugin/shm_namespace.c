/* Listing and reaping the segments of a namespace; see shm_namespace.h.
 *
 * Names are "rm.<namespace>.<pid>.<16 hex>" (data) and the same + ".ctl"
 * (control) in /dev/shm. The owner's identity comes from the control
 * segment's header (pid and start time, so a reused pid does not keep a
 * dead pool alive); a data segment whose control segment is missing (its
 * owner died between creating the two) is judged by the pid in its name. */
#include "shm_namespace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "shm_control.h"
#include "../hooks/process_identity.h"

#define SHM_DIRECTORY "/dev/shm"

typedef struct segment_name {
    long pid;
    uint64_t pool_id;
    bool control;
} segment_name;

/* Parses "rm.<ns>.<pid>.<16 hex>[.ctl]" for namespace `ns`. */
static bool parse_name(const char *entry, const char *ns, segment_name *out)
{
    size_t ns_length = strlen(ns);
    if (strncmp(entry, "rm.", 3) != 0 || strncmp(entry + 3, ns, ns_length) != 0 ||
        entry[3 + ns_length] != '.')
        return false;
    const char *cursor = entry + 4 + ns_length;
    char *end;
    errno = 0;
    long pid = strtol(cursor, &end, 10);
    if (errno != 0 || end == cursor || *end != '.' || pid <= 0 || cursor[0] == '+' ||
        cursor[0] == '-')
        return false;
    cursor = end + 1;
    for (int i = 0; i < 16; i++)
        if (!((cursor[i] >= '0' && cursor[i] <= '9') || (cursor[i] >= 'a' && cursor[i] <= 'f')))
            return false;
    const char *suffix = cursor + 16;
    bool control = strcmp(suffix, RM_CONTROL_SUFFIX) == 0;
    if (!control && *suffix != '\0')
        return false;
    out->pid = pid;
    out->pool_id = strtoull(cursor, NULL, 16);
    out->control = control;
    return true;
}

/* The owner fields of a control segment, read without writing anything.
 * False when it cannot be read or is not a valid control segment of ours. */
static bool read_control_header(const char *control_name, rm_control_header *out)
{
    uint64_t size = 0;
    int fd = rm_segment_open_checked(control_name, false, &size);
    if (fd < 0)
        return false;
    bool ok = false;
    if (size >= RM_CONTROL_HEADER_BYTES) {
        void *page = mmap(NULL, RM_CONTROL_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0);
        if (page != MAP_FAILED) {
            const rm_control_header *header = page;
            ok = header->magic == RM_CONTROL_MAGIC &&
                 header->layout_version == RM_CONTROL_LAYOUT_VERSION;
            if (ok) {
                memset(out, 0, sizeof *out);
                out->pool_id = header->pool_id;
                out->owner_pid = header->owner_pid;
                out->owner_start_time = header->owner_start_time;
                out->pool_bytes = header->pool_bytes;
                out->reservation_bytes = header->reservation_bytes;
                out->committed_bytes = atomic_load(&header->committed_bytes);
                out->live_tensors = atomic_load(&header->live_tensors);
                out->live_bytes = atomic_load(&header->live_bytes);
                uint32_t holders = 0;
                for (uint32_t i = 1; i <= RM_TENSOR_MAX_HOLDERS; i++)
                    holders += atomic_load(&header->holders[i].pid) != 0;
                out->slot_count = holders; /* reused as the holder count */
            }
            munmap(page, RM_CONTROL_HEADER_BYTES);
        }
    }
    close(fd);
    return ok;
}

static DIR *open_directory(const void *error_owner, int32_t *rc)
{
    DIR *directory = opendir(SHM_DIRECTORY);
    if (directory == NULL)
        *rc = rm_error_set(error_owner, RM_E_SYSTEM, "cannot read %s: %s", SHM_DIRECTORY,
                           strerror(errno));
    return directory;
}

/* Unlinks /dev/shm/<entry> if it is ours; adds its size. */
static void unlink_segment(const char *entry, uint64_t *segments, uint64_t *bytes)
{
    char path[512];
    snprintf(path, sizeof path, SHM_DIRECTORY "/%s", entry);
    struct stat info;
    if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid())
        return;
    char name[300];
    snprintf(name, sizeof name, "/%s", entry);
    if (shm_unlink(name) == 0) {
        *segments += 1;
        *bytes += (uint64_t)info.st_blocks * 512u;
    }
}

int32_t rm_shm_namespace_reap(const char *ns, const void *error_owner, uint64_t *segments,
                              uint64_t *bytes)
{
    int32_t rc = RM_OK;
    DIR *directory = open_directory(error_owner, &rc);
    if (directory == NULL)
        return rc;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        segment_name parsed;
        if (!parse_name(entry->d_name, ns, &parsed))
            continue;
        char data_name[300];
        int length = snprintf(data_name, sizeof data_name, "/%s", entry->d_name);
        if (parsed.control)
            data_name[length - (int)strlen(RM_CONTROL_SUFFIX)] = '\0';
        char control_name[320];
        snprintf(control_name, sizeof control_name, "%s%s", data_name, RM_CONTROL_SUFFIX);
        rm_control_header header;
        bool alive;
        if (read_control_header(control_name, &header))
            alive = rm_process_alive((pid_t)header.owner_pid, header.owner_start_time);
        else
            alive = rm_process_alive((pid_t)parsed.pid, 0);
        if (alive)
            continue;
        /* Importers that still map the pool unmap it at their last
         * release once they see it retired. */
        if (parsed.control)
            (void)rm_control_retire_by_name(control_name);
        unlink_segment(entry->d_name, segments, bytes);
    }
    closedir(directory);
    return RM_OK;
}

static int compare_rows(const void *a, const void *b)
{
    return strcmp(((const rm_shm_pool_info *)a)->name, ((const rm_shm_pool_info *)b)->name);
}

int32_t rm_shm_namespace_list(const char *ns, const void *error_owner, rm_shm_pool_info *out,
                              uint32_t row_size, uint32_t capacity, uint32_t *count)
{
    int32_t rc = RM_OK;
    DIR *directory = open_directory(error_owner, &rc);
    if (directory == NULL)
        return rc;
    rm_shm_pool_info *rows = NULL;
    size_t used = 0, allocated = 0;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        segment_name parsed;
        if (!parse_name(entry->d_name, ns, &parsed) || parsed.control)
            continue;
        if (used == allocated) {
            size_t grown = allocated == 0 ? 16 : 2 * allocated;
            rm_shm_pool_info *bigger = realloc(rows, grown * sizeof *rows);
            if (bigger == NULL) {
                rc = rm_error_set(error_owner, RM_E_NO_MEMORY, "no memory to list pools");
                break;
            }
            rows = bigger;
            allocated = grown;
        }
        if (strlen(entry->d_name) + 2 > sizeof rows[0].name)
            continue; /* not a name we make */
        rm_shm_pool_info *row = &rows[used++];
        memset(row, 0, sizeof *row);
        row->struct_size = sizeof *row;
        row->abi_version = RM_ABI_VERSION_CURRENT;
        row->name[0] = '/';
        memcpy(row->name + 1, entry->d_name, strlen(entry->d_name) + 1);
        row->pool_id = parsed.pool_id;
        row->owner_pid = (uint32_t)parsed.pid;
        char control_name[320];
        snprintf(control_name, sizeof control_name, "%s%s", row->name, RM_CONTROL_SUFFIX);
        rm_control_header header;
        if (read_control_header(control_name, &header)) {
            row->readable = 1;
            row->owner_start_time = header.owner_start_time;
            row->owner_alive = rm_process_alive((pid_t)header.owner_pid,
                                                header.owner_start_time);
            row->pool_bytes = header.pool_bytes;
            row->committed_bytes = header.committed_bytes;
            row->live_tensors = header.live_tensors;
            row->live_bytes = header.live_bytes;
            row->holders = header.slot_count;
        } else {
            row->owner_alive = rm_process_alive((pid_t)parsed.pid, 0);
        }
    }
    closedir(directory);
    if (rc == RM_OK) {
        if (used > 1)
            qsort(rows, used, sizeof *rows, compare_rows);
        size_t copy = row_size < sizeof *rows ? row_size : sizeof *rows;
        for (size_t i = 0; i < used && i < capacity; i++) {
            rm_shm_pool_info *target = (rm_shm_pool_info *)(void *)((char *)out + i * row_size);
            rows[i].struct_size = (uint32_t)copy;
            memcpy(target, &rows[i], copy);
        }
        *count = (uint32_t)used;
        if (used > capacity)
            rc = rm_error_set(error_owner, RM_E_BUFFER_TOO_SMALL,
                              "%zu pools in the namespace, room for %u", used, capacity);
    }
    free(rows);
    return rc;
}
