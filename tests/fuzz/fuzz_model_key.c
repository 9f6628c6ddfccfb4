/* Fuzz target: model keys ("name@device"), normalised and then used as
 * registry keys.
 *
 * The input, cut at its first NUL, is a key. Checked on every input:
 *  - model_key_normalize agrees with a reference written from the grammar
 *    in abi/rm_plugin.h (accept or refuse, and the normal form), with an
 *    output buffer of exactly the size needed, one byte less
 *    (RM_E_BUFFER_TOO_SMALL, nothing written) and RM_MODEL_KEY_MAX;
 *  - normalising in place gives the same, and a normal form is its own
 *    normal form;
 *  - a refusal is RM_E_INVALID_KEY with a printable message that quotes
 *    the key;
 *  - a process-scope registry agrees: model_get_or_load() of the key runs
 *    the loader once with the normal form, the normal form and an
 *    upper-case spelling of the device are hits on the same model, and
 *    model_evict() of the normal form removes it; a refused key never
 *    reaches a loader.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static const rm_plugin_v1 *vt;
static rm_context *registry;
static uint64_t keys_accepted, keys_refused; /* printed at exit */

/* ---- the reference ---------------------------------------------------- */

#define NAME_MAX_BYTES 200
#define DEVICE_INDEX_MAX 1023

static bool reference_name_byte(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '/' || c == ':' || c == '+' || c == '-';
}

/* RM_OK with the normal form in `normal` (RM_MODEL_KEY_MAX bytes), or
 * RM_E_INVALID_KEY. Written from the header's grammar, not from
 * model_key.c: a plain, slow reading of the same rules. */
static int32_t reference_normalize(const char *key, char *normal)
{
    size_t length = strnlen(key, RM_MODEL_KEY_MAX);
    if (length >= RM_MODEL_KEY_MAX)
        return RM_E_INVALID_KEY;
    const char *at = memchr(key, '@', length);
    if (at == NULL || memchr(at + 1, '@', length - (size_t)(at - key) - 1) != NULL)
        return RM_E_INVALID_KEY;
    size_t name_length = (size_t)(at - key);
    if (name_length == 0 || name_length > NAME_MAX_BYTES)
        return RM_E_INVALID_KEY;
    for (size_t i = 0; i < name_length; i++)
        if (!reference_name_byte((unsigned char)key[i]))
            return RM_E_INVALID_KEY;
    char device[RM_MODEL_KEY_MAX];
    size_t device_length = length - name_length - 1;
    for (size_t i = 0; i < device_length; i++) {
        unsigned char c = (unsigned char)at[1 + i];
        device[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    device[device_length] = '\0';
    char normal_device[16];
    if (strcmp(device, "cpu") == 0) {
        strcpy(normal_device, "cpu");
    } else if (strcmp(device, "cuda") == 0) {
        strcpy(normal_device, "cuda:0");
    } else if (strncmp(device, "cuda:", 5) == 0 && device_length > 5) {
        unsigned long index = 0;
        for (size_t i = 5; i < device_length; i++) {
            if (device[i] < '0' || device[i] > '9')
                return RM_E_INVALID_KEY;
            index = index * 10 + (unsigned long)(device[i] - '0');
            if (index > DEVICE_INDEX_MAX)
                return RM_E_INVALID_KEY;
        }
        snprintf(normal_device, sizeof normal_device, "cuda:%lu", index);
    } else {
        return RM_E_INVALID_KEY;
    }
    memcpy(normal, key, name_length + 1);
    strcpy(normal + name_length + 1, normal_device);
    return RM_OK;
}

/* ---- the plugin ------------------------------------------------------- */

static void check_refusal_message(const char *key)
{
    const char *message = vt->context_last_error(NULL);
    FUZZ_CHECK(message[0] != '\0', "RM_E_INVALID_KEY without a message");
    FUZZ_CHECK(strncmp(message, "model key '", 11) == 0,
               "the message does not quote the key: \"%s\"", message);
    for (const char *c = message; *c != '\0'; c++)
        FUZZ_CHECK(*c >= 0x20 && *c < 0x7f, "unprintable byte 0x%02x in message \"%s\"",
                   (unsigned char)*c, message);
    (void)key;
}

/* Normalises into a heap buffer of exactly `out_size` bytes (so that a
 * write past it is caught) and checks the result against `expected`. */
static void normalize_into(const char *key, size_t out_size, int32_t expected,
                           const char *expected_normal)
{
    char *out = malloc(out_size > 0 ? out_size : 1);
    FUZZ_CHECK(out != NULL, "out of memory");
    memset(out, 0x5a, out_size > 0 ? out_size : 1);
    int32_t rc = vt->model_key_normalize(key, out, out_size);
    FUZZ_CHECK(rc == expected, "normalize(\"%s\", size %zu) = %s, the grammar says %s", key,
               out_size, vt->error_name(rc), vt->error_name(expected));
    if (rc == RM_OK)
        FUZZ_CHECK(strcmp(out, expected_normal) == 0,
                   "normalize(\"%s\") = \"%s\", the grammar says \"%s\"", key, out,
                   expected_normal);
    else if (rc == RM_E_BUFFER_TOO_SMALL)
        for (size_t i = 0; i < out_size; i++)
            FUZZ_CHECK(out[i] == 0x5a, "BUFFER_TOO_SMALL wrote into the buffer");
    else
        check_refusal_message(key);
    free(out);
}

typedef struct loader_state {
    const char *expected_key;
    unsigned calls;
} loader_state;

static int marker; /* the "model": its address is all that is compared */

static int32_t fuzz_loader(void *user, const char *key, rm_loaded_model *out)
{
    loader_state *state = user;
    state->calls++;
    FUZZ_CHECK(strcmp(key, state->expected_key) == 0, "the loader got \"%s\", not \"%s\"", key,
               state->expected_key);
    out->model = &marker;
    out->bytes = 1;
    return RM_OK;
}

/* The key with its device in upper case (the device is what follows the
 * one '@'). */
static void upper_device(const char *normal, char *out)
{
    strcpy(out, normal);
    for (char *c = strchr(out, '@'); *c != '\0'; c++)
        *c = (char)toupper((unsigned char)*c);
}

static void check_registry(const char *key, int32_t expected, const char *normal)
{
    loader_state state = {.expected_key = normal};
    rm_model_handle *handle = NULL;
    void *model = NULL;
    int32_t rc = vt->model_get_or_load(registry, key, fuzz_loader, &state, &handle, &model);
    if (expected != RM_OK) {
        FUZZ_CHECK(rc == RM_E_INVALID_KEY && state.calls == 0 && handle == NULL,
                   "model_get_or_load(\"%s\") = %s with %u loader calls for a refused key",
                   key, vt->error_name(rc), state.calls);
        fuzz_check_message(registry, rc, "model_get_or_load");
        rc = vt->model_evict(registry, key);
        FUZZ_CHECK(rc == RM_E_INVALID_KEY, "model_evict of a refused key: %s",
                   vt->error_name(rc));
        return;
    }
    FUZZ_CHECK(rc == RM_OK && model == &marker && state.calls == 1,
               "model_get_or_load(\"%s\") = %s, %u loader calls", key, vt->error_name(rc),
               state.calls);
    char upper[RM_MODEL_KEY_MAX];
    upper_device(normal, upper);
    const char *same[] = {normal, upper};
    rm_model_handle *more[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        void *again = NULL;
        rc = vt->model_get_or_load(registry, same[i], fuzz_loader, &state, &more[i], &again);
        FUZZ_CHECK(rc == RM_OK && again == &marker && state.calls == 1,
                   "\"%s\" is not a hit on \"%s\": %s, %u loader calls", same[i], key,
                   vt->error_name(rc), state.calls);
    }
    FUZZ_CHECK(vt->model_evict(registry, normal) == RM_E_BUSY, "evicted a model in use");
    FUZZ_CHECK(vt->model_release(registry, handle) == RM_OK, "model_release");
    for (int i = 0; i < 2; i++)
        FUZZ_CHECK(vt->model_release(registry, more[i]) == RM_OK, "model_release");
    rc = vt->model_evict(registry, key);
    FUZZ_CHECK(rc == RM_OK, "model_evict(\"%s\") after release: %s", key, vt->error_name(rc));
    rc = vt->model_evict(registry, normal);
    FUZZ_CHECK(rc == RM_E_NOT_FOUND, "\"%s\" still there after its eviction: %s", normal,
               vt->error_name(rc));
    rm_registry_metrics metrics = RM_STRUCT_INIT(rm_registry_metrics);
    FUZZ_CHECK(vt->registry_metrics(registry, &metrics) == RM_OK && metrics.models == 0,
               "%llu models left in the registry", (unsigned long long)metrics.models);
}

/* ---- seeds ------------------------------------------------------------ */

static const char *const seeds[] = {
    "whisper-tiny@cpu", "whisper-tiny@CPU", "lfm2-audio@cuda:0", "silero-vad@cpu",
    "m@cuda", "m@cuda:00", "m@CUDA:1023", "m@cuda:1024", "org/model.v2+q8_0:latest@cuda:7",
    "no-at-sign", "a@b@cpu", "@cpu", "name@", "name@gpu", "bad name@cpu", "n\x01@cpu",
    "m@cuda:0000000000000000000001", "m@cuda:", "m@cuda:-1", "\xc3\xa9@cpu",
};

static void write_seeds(const char *dir)
{
    char name[32];
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        snprintf(name, sizeof name, "key-%02zu", i);
        fuzz_write_seed(dir, name, seeds[i], strlen(seeds[i]));
    }
    /* The name at its longest (200 bytes), and one byte over. */
    char key[RM_MODEL_KEY_MAX];
    for (size_t extra = 0; extra < 2; extra++) {
        memset(key, 'n', NAME_MAX_BYTES + extra);
        strcpy(key + NAME_MAX_BYTES + extra, "@cuda:12");
        snprintf(name, sizeof name, "key-name-%zu", NAME_MAX_BYTES + extra);
        fuzz_write_seed(dir, name, key, strlen(key));
    }
}

/* ---- libFuzzer -------------------------------------------------------- */

static void destroy_registry(void)
{
    vt->context_destroy(registry);
    registry = NULL;
    fprintf(stderr, "fuzz_model_key: keys accepted %llu, refused %llu\n",
            (unsigned long long)keys_accepted, (unsigned long long)keys_refused);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    if (fuzz_seed_directory() != NULL) {
        write_seeds(fuzz_seed_directory());
        exit(0);
    }
    /* Process scope, no TTL: nothing evicts behind the target's back. */
    static const rm_config_entry entries[] = {
        {"features", "model-registry"},
        {"registry.ttl_s", "0"},
        {"log.level", "error"},
    };
    registry = fuzz_context(entries, sizeof entries / sizeof entries[0]);
    atexit(destroy_registry);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *key = fuzz_string_copy(data, size);
    char normal[RM_MODEL_KEY_MAX];
    int32_t expected = reference_normalize(key, normal);
    if (expected == RM_OK)
        keys_accepted++;
    else
        keys_refused++;
    size_t needed = expected == RM_OK ? strlen(normal) + 1 : 0;
    normalize_into(key, RM_MODEL_KEY_MAX, expected, normal);
    if (expected == RM_OK) {
        normalize_into(key, needed, RM_OK, normal);
        normalize_into(key, needed - 1, RM_E_BUFFER_TOO_SMALL, normal);
        normalize_into(normal, needed, RM_OK, normal);
        /* In place: the key's own buffer, as long as the key or longer. */
        size_t own = strlen(key) + 1 > needed ? strlen(key) + 1 : needed;
        char *in_place = malloc(own);
        FUZZ_CHECK(in_place != NULL, "out of memory");
        strcpy(in_place, key);
        int32_t rc = vt->model_key_normalize(in_place, in_place, own);
        FUZZ_CHECK(rc == RM_OK && strcmp(in_place, normal) == 0,
                   "in place: %s \"%s\", expected \"%s\"", vt->error_name(rc), in_place, normal);
        free(in_place);
    }
    check_registry(key, expected, normal);
    free(key);
    return 0;
}
