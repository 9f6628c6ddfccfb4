/* The memory backends of this build, one line each (mem_backend.h).
 * tensor.c creates one of each per context, finds the backend of a
 * descriptor by its kind, and allocates from the FIRST backend, then from
 * the FALLBACK one. */
#include "mem_backend.h"

const rm_mem_registration rm_mem_registered[] = {
    {&rm_shm_backend, RM_MEM_ALLOCATE_FIRST},
    {&rm_heap_backend, RM_MEM_ALLOCATE_FALLBACK},
#if RM_HAVE_CUDA_IPC
    {&rm_cuda_backend, RM_MEM_ALLOCATE_DEVICE},
#endif
};

const uint32_t rm_mem_registered_count =
    sizeof rm_mem_registered / sizeof rm_mem_registered[0];

_Static_assert(sizeof rm_mem_registered / sizeof rm_mem_registered[0] <= RM_MEM_BACKENDS_MAX,
               "RM_MEM_BACKENDS_MAX holds every registered backend");
