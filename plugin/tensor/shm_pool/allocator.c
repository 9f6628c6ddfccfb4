/* The bundled jemalloc: private arenas for the shared-memory capability.
 *
 * Every call passes MALLOCX_TCACHE_NONE: the thread cache mixes arenas, and
 * the shared-memory pools that build on these arenas must never receive a
 * block that belongs to another arena. */
#include "allocator.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "jemalloc.h"
#include "rm_plugin.h"

#define SELF_CHECK_BYTES (1u << 20)

static char allocator_version[96];
static pthread_once_t allocator_version_once = PTHREAD_ONCE_INIT;

static void read_allocator_version(void)
{
    const char *text = NULL;
    size_t size = sizeof text;
    if (rmje_mallctl("version", &text, &size, NULL, 0) != 0 || text == NULL)
        text = "unknown";
    snprintf(allocator_version, sizeof allocator_version, "jemalloc %s", text);
}

const char *rm_allocator_version(void)
{
    pthread_once(&allocator_version_once, read_allocator_version);
    return allocator_version;
}

int32_t rm_allocator_arena_create(const void *error_owner, uint32_t *out_arena)
{
    unsigned arena = 0;
    size_t size = sizeof arena;
    int err = rmje_mallctl("arenas.create", &arena, &size, NULL, 0);
    if (err != 0)
        return rm_error_set(error_owner, RM_E_ALLOCATOR,
                            "jemalloc arenas.create failed: %s", strerror(err));

    int flags = MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE;
    unsigned char *block = rmje_mallocx(SELF_CHECK_BYTES, flags);
    if (block == NULL) {
        rm_allocator_arena_destroy(arena);
        return rm_error_set(error_owner, RM_E_ALLOCATOR,
                            "jemalloc arena %u could not allocate %u bytes", arena,
                            SELF_CHECK_BYTES);
    }
    memset(block, 0xa5, SELF_CHECK_BYTES);
    unsigned owner_arena = UINT32_MAX;
    size = sizeof owner_arena;
    const void *lookup = block;
    err = rmje_mallctl("arenas.lookup", &owner_arena, &size, &lookup, sizeof lookup);
    size_t usable = rmje_sallocx(block, flags);
    int intact = block[0] == 0xa5 && block[SELF_CHECK_BYTES - 1] == 0xa5;
    rmje_dallocx(block, flags);
    if (err != 0 || owner_arena != arena || usable < SELF_CHECK_BYTES || !intact) {
        rm_allocator_arena_destroy(arena);
        return rm_error_set(error_owner, RM_E_ALLOCATOR,
                            "jemalloc arena %u failed its check (lookup %d -> %u, "
                            "usable %zu, intact %d)",
                            arena, err, owner_arena, usable, intact);
    }
    *out_arena = arena;
    return RM_OK;
}

void rm_allocator_arena_destroy(uint32_t arena)
{
    char name[64];
    snprintf(name, sizeof name, "arena.%u.destroy", arena);
    (void)rmje_mallctl(name, NULL, NULL, NULL, 0);
}
