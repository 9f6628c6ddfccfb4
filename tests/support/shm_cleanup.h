/* What a test leaves in /dev/shm, found and removed by name prefix
 * ("rm.<ns>." for tensor pools, "rmreg.<ns>." for the node registry).
 *
 * Nothing here asserts: loaders call these on the plugin's stack, forked
 * children and the TSan stress drivers (no Criterion) call them too, and a
 * suite's fini must clean up even after the test failed. */
#ifndef RM_TEST_SHM_CLEANUP_H
#define RM_TEST_SHM_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Called with "/dev/shm/<name>" and <name> of each match. */
typedef void shm_visit(const char *path, const char *name, void *user);

/* Visits every /dev/shm entry whose name starts with `prefix` (visit may
 * be NULL); the count, or -1 when /dev/shm cannot be read. */
static inline long shm_each_prefix(const char *prefix, shm_visit *visit, void *user)
{
    DIR *dir = opendir("/dev/shm");
    if (dir == NULL)
        return -1;
    size_t length = strlen(prefix);
    long count = 0;
    for (const struct dirent *entry; (entry = readdir(dir)) != NULL;) {
        if (strncmp(entry->d_name, prefix, length) != 0)
            continue;
        count++;
        if (visit != NULL) {
            char path[512];
            snprintf(path, sizeof path, "/dev/shm/%s", entry->d_name);
            visit(path, entry->d_name, user);
        }
    }
    closedir(dir);
    return count;
}

typedef struct shm_name_list {
    char *names;
    size_t size;
    size_t used;
} shm_name_list;

static inline void shm_name_list_add(const char *path, const char *name, void *user)
{
    (void)path;
    shm_name_list *list = user;
    int n = snprintf(list->names + list->used, list->size - list->used, "%s ", name);
    if (n > 0 && (size_t)n < list->size - list->used)
        list->used += (size_t)n;
}

/* The count of matches (-1: /dev/shm unreadable); their names,
 * space-separated and cut at `size`, in `names` (which may be NULL), for
 * a failure message to say what was left. */
static inline long shm_list_prefix(const char *prefix, char *names, size_t size)
{
    if (names == NULL || size == 0)
        return shm_each_prefix(prefix, NULL, NULL);
    names[0] = '\0';
    shm_name_list list = {.names = names, .size = size};
    return shm_each_prefix(prefix, shm_name_list_add, &list);
}

static inline void shm_remove(const char *path, const char *name, void *user)
{
    (void)name;
    (void)user;
    /* Forgery tests plant directories under the prefix, too. */
    if (unlink(path) != 0 && errno == EISDIR)
        rmdir(path);
}

/* Removes every match; how many there were (-1: /dev/shm unreadable). */
static inline long shm_unlink_prefix(const char *prefix)
{
    return shm_each_prefix(prefix, shm_remove, NULL);
}

static inline void shm_remove_unless(const char *path, const char *name, void *user)
{
    if (strcmp(name, (const char *)user) != 0)
        shm_remove(path, name, NULL);
}

/* Removes every match but the one named `keep`. */
static inline long shm_unlink_prefix_except(const char *prefix, const char *keep)
{
    return shm_each_prefix(prefix, shm_remove_unless, (void *)(uintptr_t)keep);
}

#endif
