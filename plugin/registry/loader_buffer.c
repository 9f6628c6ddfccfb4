/* Loader buffers: see loader_buffer.h. */
#include "loader_buffer.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "device_access.h"
#include "error.h"

static int32_t alloc_buffer(rm_loaded_model *self, uint64_t bytes, void **out_buffer)
{
    if (out_buffer != NULL)
        *out_buffer = NULL;
    if (self == NULL || self->plugin_private == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "alloc_buffer needs the rm_loaded_model the loader was given");
    rm_loader_buffer *buffer = self->plugin_private;
    if (out_buffer == NULL)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                                              "alloc_buffer for model key '%s': out_buffer "
                                              "is NULL",
                                              buffer->key);
    if (buffer->base != NULL || buffer->device_pointer != 0)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "alloc_buffer called after a buffer was made while loading model "
                            "key '%s' (one buffer per load)",
                            buffer->key);
    if (bytes == 0 || bytes > RM_LOADER_BUFFER_MAX_BYTES)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "alloc_buffer of %llu bytes for model key '%s': a buffer has "
                            "1 to 2^48 bytes",
                            (unsigned long long)bytes, buffer->key);
    int32_t status = buffer->create(buffer, bytes);
    if (status != RM_OK) {
        buffer->failure = status;
        return status;
    }
    buffer->bytes = bytes;
    *out_buffer = buffer->base;
    return RM_OK;
}

static int32_t alloc_device_buffer(rm_loaded_model *self, uint64_t bytes,
                                   uint64_t *out_device_pointer, void **out_stream)
{
    if (out_device_pointer != NULL)
        *out_device_pointer = 0;
    if (out_stream != NULL)
        *out_stream = NULL;
    if (self == NULL || self->plugin_private == NULL)
        return rm_error_set(NULL, RM_E_INVALID_ARGUMENT,
                            "alloc_device_buffer needs the rm_loaded_model the loader was "
                            "given");
    rm_loader_buffer *buffer = self->plugin_private;
    if (out_device_pointer == NULL)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                                              "alloc_device_buffer for model key '%s': "
                                              "out_device_pointer is NULL",
                                              buffer->key);
    if (buffer->base != NULL || buffer->device_pointer != 0)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "alloc_device_buffer called after a buffer was made while loading "
                            "model key '%s' (one buffer per load)",
                            buffer->key);
    if (bytes == 0 || bytes > RM_LOADER_BUFFER_MAX_BYTES)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "alloc_device_buffer of %llu bytes for model key '%s': a buffer "
                            "has 1 to 2^48 bytes",
                            (unsigned long long)bytes, buffer->key);
    buffer->device_ordinal = rm_device_key_ordinal(buffer->key);
    if (buffer->device_ordinal < 0)
        return buffer->failure = rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "alloc_device_buffer for model key '%s': a device buffer needs a "
                            "key whose device is \"cuda:N\"",
                            buffer->key);
    int32_t status = buffer->create_device(buffer, bytes);
    if (status != RM_OK) {
        buffer->failure = status;
        return status;
    }
    buffer->bytes = bytes;
    *out_device_pointer = buffer->device_pointer;
    if (out_stream != NULL)
        *out_stream = buffer->stream;
    return RM_OK;
}

void rm_loader_buffer_offer(rm_loaded_model *model, rm_loader_buffer *buffer)
{
    model->alloc_buffer = alloc_buffer;
    model->plugin_private = buffer;
    if (buffer->create_device != NULL &&
        model->struct_size >= offsetof(rm_loaded_model, alloc_device_buffer) + sizeof(void *))
        model->alloc_device_buffer = alloc_device_buffer;
    buffer->placement = RM_MODEL_PLACEMENT_OPAQUE;
}

bool rm_loader_buffer_explains(const rm_loader_buffer *buffer, int32_t status)
{
    return status < 0 && buffer->failure == status;
}

int32_t rm_loader_buffer_check(rm_loaded_model *model, const rm_loader_buffer *buffer,
                               bool *used)
{
    *used = buffer->base != NULL || buffer->device_pointer != 0;
    if (!*used)
        return RM_OK;
    void *made = buffer->base != NULL ? buffer->base : (void *)(uintptr_t)buffer->device_pointer;
    if (model->destroy != NULL)
        return rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "loader for model key '%s' used a buffer and also set destroy: "
                            "the plugin owns and frees the buffer, destroy must stay NULL",
                            buffer->key);
    if (model->model != NULL && model->model != made)
        return rm_error_set(buffer->error_owner, RM_E_INVALID_ARGUMENT,
                            "loader for model key '%s' used a buffer but returned another "
                            "model pointer: leave model NULL (or set it to the buffer)",
                            buffer->key);
    model->model = made;
    model->bytes = buffer->bytes;
    return RM_OK;
}

int32_t rm_loader_buffer_create_private(rm_loader_buffer *self, uint64_t bytes)
{
    void *base = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return rm_error_set(self->error_owner, RM_E_NO_MEMORY,
                            "no memory for a %llu-byte buffer for model key '%s': %s",
                            (unsigned long long)bytes, self->key, strerror(errno));
    self->base = base;
    return RM_OK;
}

int32_t rm_loader_buffer_seal_private(rm_loader_buffer *self)
{
    if (mprotect(self->base, (size_t)self->bytes, PROT_READ) != 0)
        return rm_error_set(self->error_owner, RM_E_SYSTEM,
                            "cannot seal the buffer of model key '%s' read-only: %s",
                            self->key, strerror(errno));
    return RM_OK;
}

void rm_loader_buffer_destroy_private(void *base, void *destroy_user)
{
    munmap(base, (size_t)(uintptr_t)destroy_user);
}
