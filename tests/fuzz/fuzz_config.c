/* Fuzz target: configuration files and pairs.
 *
 * Input: one mode byte, then
 *   mode % 3 == 0: the rest is a configuration file;
 *   mode % 3 == 1: the rest is pairs, "key\0value\0key\0value..." (at most
 *                  32; a key without its value is dropped);
 *   mode % 3 == 2: a file up to the first 0xff byte, pairs after it.
 * The file lives in a memfd and is named by its /proc/self/fd path.
 *
 * Each input is applied twice: to the internals (rm_config_apply_file,
 * rm_config_set) and through context_create() as a host passes it (the
 * file, then the pairs, then "features = none", so that no capability
 * starts: no thread, nothing in /dev/shm). Checked:
 *  - both agree with a reference written from the key table and the file
 *    syntax in abi/rm_plugin.h and the README: the same code, and on
 *    success the same value of every key (config_get, in the accepted
 *    form);
 *  - a refusal is one of the documented codes with a message that says
 *    where the bad pair came from ("<path>:<line>", "config entry <i>")
 *    and what is wrong with it;
 *  - what config_get prints is accepted back and prints the same.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "fuzz_common.h"

static const rm_plugin_v1 *vt;
static uint64_t outcomes[32]; /* by code (index -code; 0: accepted), printed at exit */
static int file_fd = -1;
static char file_path[64];
static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

#define MAX_PAIRS 32
#define VALUE_MAX 260 /* cuda.driver prints up to 255 bytes */
/* The file reader's limit, '\n' included (config.c's CONFIG_LINE_MAX - 1). */
#define LINE_BYTES_MAX 4095

/* ---- the reference ---------------------------------------------------- */

enum {
    K_FEATURES, K_LOG_LEVEL, K_TTL, K_MAX_BYTES, K_MAX_MODELS, K_SHM_NAMESPACE,
    K_POOL_BYTES, K_SESSION_QUOTA, K_MAX_TENSORS, K_SCOPE, K_REGISTRY_NAMESPACE,
    K_TABLE_ENTRIES, K_TABLE, K_CUDA_DRIVER, K_CUDA_POOL_BYTES, K_CUDA_BLOCK_BYTES, KEY_COUNT
};

static const char *const key_names[KEY_COUNT] = {
    "features", "log.level", "registry.ttl_s", "registry.max_bytes", "registry.max_models",
    "shm.namespace", "shm.pool_bytes", "shm.session_quota", "shm.max_tensors",
    "registry.scope", "registry.namespace", "registry.table_entries", "registry.table",
    "cuda.driver", "cuda.pool_bytes", "cuda.block_bytes",
};

/* The features "all" means, in config_get's form. */
#define BUILT_FEATURES_TEXT                                                              \
    (RM_HAVE_MODEL_REGISTRY && RM_HAVE_SHARED_MEMORY && RM_HAVE_CUDA_IPC                 \
         ? "model-registry,shared-memory,cuda-ipc"                                        \
     : RM_HAVE_MODEL_REGISTRY && RM_HAVE_SHARED_MEMORY ? "model-registry,shared-memory"   \
     : RM_HAVE_MODEL_REGISTRY                          ? "model-registry"                 \
     : RM_HAVE_SHARED_MEMORY && RM_HAVE_CUDA_IPC       ? "shared-memory,cuda-ipc"         \
     : RM_HAVE_SHARED_MEMORY                           ? "shared-memory"                  \
                                                       : "none")

/* The value of every key in the form config_get prints it. A TTL whose
 * exact decimal a double cannot keep (2^23 s and more with nanoseconds)
 * is "?": only its round trip is checked. */
typedef struct reference {
    char value[KEY_COUNT][VALUE_MAX];
} reference;

static void reference_defaults(reference *r)
{
    static const char *const defaults[KEY_COUNT] = {
        BUILT_FEATURES_TEXT,
        "warn", "30", "0", "0", "default", "1073741824", "0", "16384", "process", "default",
        "1024", "create", "libcuda.so.1", "4294967296", "67108864",
    };
    for (int k = 0; k < KEY_COUNT; k++)
        snprintf(r->value[k], VALUE_MAX, "%s", defaults[k]);
}

/* Digits only, no sign or blank; false on overflow. */
static bool reference_unsigned(const char *text, size_t length, uint64_t *out)
{
    if (length == 0)
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < length; i++) {
        if (!isdigit((unsigned char)text[i]))
            return false;
        unsigned digit = (unsigned)(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *out = value;
    return true;
}

/* An integer with an optional K, M, G, T, KiB, MiB, GiB or TiB. */
static bool reference_size(const char *text, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } suffixes[] = {{"K", 10},   {"M", 20},   {"G", 30},   {"T", 40},
                    {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40}};
    size_t digits = strspn(text, "0123456789");
    unsigned shift = 0;
    if (text[digits] != '\0') {
        bool known = false;
        for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0] && !known; i++)
            if (strcmp(text + digits, suffixes[i].suffix) == 0) {
                known = true;
                shift = suffixes[i].shift;
            }
        if (!known)
            return false;
    }
    uint64_t number;
    if (!reference_unsigned(text, digits, &number) || number > (UINT64_MAX >> shift))
        return false;
    *out = number << shift;
    return true;
}

/* Seconds: digits, optionally '.' and 1 to 9 digits, 0 to 31536000
 * exactly. Writes the printed form (or "?"). */
static bool reference_ttl(const char *text, char *out)
{
    size_t whole_digits = strspn(text, "0123456789");
    const char *fraction = text + whole_digits;
    size_t fraction_digits = 0;
    if (*fraction == '.') {
        fraction++;
        fraction_digits = strspn(fraction, "0123456789");
        if (fraction_digits == 0 || fraction_digits > 9)
            return false;
    }
    if (whole_digits == 0 || fraction[fraction_digits] != '\0')
        return false;
    size_t first = 0;
    while (first + 1 < whole_digits && text[first] == '0')
        first++;
    uint64_t whole;
    if (whole_digits - first > 9 || !reference_unsigned(text + first, whole_digits - first,
                                                        &whole))
        return false;
    while (fraction_digits > 0 && fraction[fraction_digits - 1] == '0')
        fraction_digits--;
    if (whole > 31536000 || (whole == 31536000 && fraction_digits > 0))
        return false;
    if (whole >= ((uint64_t)1 << 23) && fraction_digits > 0)
        snprintf(out, VALUE_MAX, "?");
    else if (fraction_digits > 0)
        snprintf(out, VALUE_MAX, "%llu.%.*s", (unsigned long long)whole, (int)fraction_digits,
                 fraction);
    else
        snprintf(out, VALUE_MAX, "%llu", (unsigned long long)whole);
    return true;
}

static bool reference_namespace(const char *text)
{
    size_t length = strlen(text);
    return length >= 1 && length <= 32 &&
           strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
               length;
}

/* "all", "none", or a comma-separated list of capability names; the
 * plugin allows blanks (spaces, tabs) around each name. */
static bool reference_features(const char *text, char *out)
{
    if (strcmp(text, "all") == 0 || strcmp(text, "none") == 0) {
        if (strcmp(text, "none") == 0)
            snprintf(out, VALUE_MAX, "none");
        else
            snprintf(out, VALUE_MAX, "%s", BUILT_FEATURES_TEXT);
        return true;
    }
    bool registry = false, shared = false, cuda = false;
    const char *item = text;
    for (;;) {
        size_t length = strcspn(item, ",");
        size_t start = 0, end = length;
        while (start < end && (item[start] == ' ' || item[start] == '\t'))
            start++;
        while (end > start && (item[end - 1] == ' ' || item[end - 1] == '\t'))
            end--;
        if (end - start == 14 && strncmp(item + start, "model-registry", 14) == 0)
            registry = true;
        else if (end - start == 13 && strncmp(item + start, "shared-memory", 13) == 0)
            shared = true;
        else if (end - start == 8 && strncmp(item + start, "cuda-ipc", 8) == 0)
            cuda = true;
        else
            return false;
        if (item[length] == '\0')
            break;
        item += length + 1;
    }
    const char *names[3];
    int count = 0;
    if (registry)
        names[count++] = "model-registry";
    if (shared)
        names[count++] = "shared-memory";
    if (cuda)
        names[count++] = "cuda-ipc";
    out[0] = '\0';
    for (int i = 0; i < count; i++)
        snprintf(out + strlen(out), VALUE_MAX - strlen(out), "%s%s", i ? "," : "", names[i]);
    return true;
}

/* RM_OK with the key's printed value updated, or the code the plugin
 * must give. */
static int32_t reference_set(reference *r, const char *key, const char *value)
{
    int k = 0;
    while (k < KEY_COUNT && strcmp(key_names[k], key) != 0)
        k++;
    if (k == KEY_COUNT)
        return RM_E_CONFIG_UNKNOWN_KEY;
    char printed[VALUE_MAX];
    uint64_t number = 0;
    bool ok = false;
    switch (k) {
    case K_FEATURES:
        ok = reference_features(value, printed);
        if (ok && ((!RM_HAVE_MODEL_REGISTRY && strstr(printed, "model-registry") != NULL) ||
                   (!RM_HAVE_SHARED_MEMORY && strstr(printed, "shared-memory") != NULL) ||
                   (!RM_HAVE_CUDA_IPC && strstr(printed, "cuda-ipc") != NULL)))
            return RM_E_FEATURE_UNAVAILABLE;
        break;
    case K_LOG_LEVEL:
        ok = strcmp(value, "error") == 0 || strcmp(value, "warn") == 0 ||
             strcmp(value, "info") == 0 || strcmp(value, "debug") == 0;
        snprintf(printed, sizeof printed, "%s", value);
        break;
    case K_TTL:
        ok = reference_ttl(value, printed);
        break;
    case K_MAX_BYTES:
    case K_SESSION_QUOTA:
        ok = reference_size(value, &number);
        break;
    case K_POOL_BYTES:
        ok = reference_size(value, &number) && number >= ((uint64_t)4 << 20) &&
             number <= ((uint64_t)512 << 30);
        break;
    case K_MAX_MODELS:
        ok = reference_unsigned(value, strlen(value), &number) && number <= 1048576;
        break;
    case K_MAX_TENSORS:
        ok = reference_unsigned(value, strlen(value), &number) && number >= 64 &&
             number <= 1048576;
        break;
    case K_TABLE_ENTRIES:
        ok = reference_unsigned(value, strlen(value), &number) && number >= 4 &&
             number <= 65536;
        break;
    case K_SHM_NAMESPACE:
    case K_REGISTRY_NAMESPACE:
        ok = reference_namespace(value);
        snprintf(printed, sizeof printed, "%s", value);
        break;
    case K_SCOPE:
        ok = strcmp(value, "process") == 0 || strcmp(value, "node") == 0;
        snprintf(printed, sizeof printed, "%s", value);
        break;
    case K_TABLE:
        ok = strcmp(value, "create") == 0 || strcmp(value, "existing") == 0;
        snprintf(printed, sizeof printed, "%s", value);
        break;
    case K_CUDA_DRIVER: {
        size_t length = strlen(value);
        ok = length >= 1 && length <= 255;
        for (size_t i = 0; ok && i < length; i++)
            ok = (unsigned char)value[i] > ' ' && (unsigned char)value[i] < 0x7f;
        snprintf(printed, sizeof printed, "%s", value);
        break;
    }
    case K_CUDA_POOL_BYTES:
    case K_CUDA_BLOCK_BYTES:
        ok = reference_size(value, &number) && number >= ((uint64_t)2 << 20) &&
             number <= ((uint64_t)1 << 40);
        break;
    }
    if (!ok)
        return RM_E_CONFIG_INVALID_VALUE;
    if (k != K_FEATURES && k != K_LOG_LEVEL && k != K_TTL && k != K_SHM_NAMESPACE &&
        k != K_REGISTRY_NAMESPACE && k != K_SCOPE && k != K_TABLE && k != K_CUDA_DRIVER)
        snprintf(printed, sizeof printed, "%llu", (unsigned long long)number);
    snprintf(r->value[k], VALUE_MAX, "%s", printed);
    return RM_OK;
}

/* ---- the input -------------------------------------------------------- */

typedef struct pair {
    const char *key;
    const char *value;
} pair;

typedef struct parsed_input {
    const char *file;   /* NULL: no file */
    size_t file_size;
    pair pairs[MAX_PAIRS];
    size_t pair_count;
} parsed_input;

/* Splits "k\0v\0k\0v" (a copy with a NUL after it) into pairs. */
static size_t split_pairs(char *text, size_t size, pair *pairs)
{
    size_t count = 0;
    size_t at = 0;
    while (at < size && count < MAX_PAIRS) {
        const char *key = text + at;
        at += strlen(key) + 1;
        if (at > size)
            break;
        const char *value = text + at;
        at += strlen(value) + 1;
        pairs[count++] = (pair){.key = key, .value = value};
    }
    return count;
}

/* The trim() of config.c: blanks (space, tab) before, any isspace() after. */
static char *file_trim(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t length = strlen(text);
    while (length > 0 && isspace((unsigned char)text[length - 1]))
        text[--length] = '\0';
    return text;
}

/* What a refusal of the value must say. */
static const char *reference_reason(int32_t rc)
{
    return rc == RM_E_CONFIG_UNKNOWN_KEY  ? "unknown configuration key"
           : rc == RM_E_FEATURE_UNAVAILABLE ? "was not built"
                                            : "invalid value";
}

/* The file syntax: the code it must give and, on an error, the line that
 * must be named and what the message must say about it. */
static int32_t reference_file(reference *r, const char *content, size_t size,
                              unsigned *bad_line, const char **reason)
{
    *bad_line = 0;
    *reason = "";
    unsigned line_number = 0;
    size_t at = 0;
    while (at < size) {
        line_number++;
        const char *newline = memchr(content + at, '\n', size - at);
        size_t length = newline != NULL ? (size_t)(newline - (content + at)) + 1 : size - at;
        *bad_line = line_number;
        if (length > LINE_BYTES_MAX) {
            *reason = "line longer than";
            return RM_E_CONFIG_FILE;
        }
        if (memchr(content + at, '\0', length) != NULL) {
            *reason = "NUL byte";
            return RM_E_CONFIG_FILE;
        }
        char line[LINE_BYTES_MAX + 1];
        memcpy(line, content + at, length);
        line[length] = '\0';
        at += length;
        char *text = file_trim(line);
        if (text[0] == '\0' || text[0] == '#')
            continue;
        char *equals = strchr(text, '=');
        if (equals == NULL) {
            *reason = "expected 'key = value'";
            return RM_E_CONFIG_FILE;
        }
        *equals = '\0';
        char *key = file_trim(text);
        char *value = file_trim(equals + 1);
        if (key[0] == '\0') {
            *reason = "missing key";
            return RM_E_CONFIG_FILE;
        }
        int32_t rc = reference_set(r, key, value);
        if (rc != RM_OK) {
            *reason = reference_reason(rc);
            return rc;
        }
    }
    *bad_line = 0;
    return RM_OK;
}

/* ---- the checks ------------------------------------------------------- */

static bool documented_code(int32_t rc)
{
    return rc == RM_OK || rc == RM_E_CONFIG_FILE || rc == RM_E_CONFIG_UNKNOWN_KEY ||
           rc == RM_E_CONFIG_INVALID_VALUE || rc == RM_E_FEATURE_UNAVAILABLE;
}

/* The printed value of every key agrees with the reference (features
 * excepted when `skip_features`), and is accepted back as it is printed. */
static void check_values(const char *where, const reference *r, bool skip_features,
                         int32_t (*get)(void *user, const char *key, char *out, size_t size),
                         void *user)
{
    for (int k = 0; k < KEY_COUNT; k++) {
        char printed[256];
        int32_t rc = get(user, key_names[k], printed, sizeof printed);
        FUZZ_CHECK(rc == RM_OK, "%s: %s cannot be read back: %s", where, key_names[k],
                   vt->error_name(rc));
        if (!(skip_features && k == K_FEATURES) && strcmp(r->value[k], "?") != 0)
            FUZZ_CHECK(strcmp(printed, r->value[k]) == 0, "%s: %s is \"%s\", expected \"%s\"",
                       where, key_names[k], printed, r->value[k]);
        rm_config again;
        rm_config_defaults(&again);
        rc = rm_config_set(&again, key_names[k], printed, "round trip", OWNER);
        FUZZ_CHECK(rc == RM_OK, "%s: %s = \"%s\" as printed is refused: %s", where,
                   key_names[k], printed, rm_error_last(OWNER));
        char reprinted[256];
        rc = rm_config_format(&again, key_names[k], reprinted, sizeof reprinted, NULL, OWNER);
        FUZZ_CHECK(rc == RM_OK && strcmp(reprinted, printed) == 0,
                   "%s: %s = \"%s\" prints back as \"%s\"", where, key_names[k], printed,
                   reprinted);
    }
}

static int32_t get_internal(void *user, const char *key, char *out, size_t size)
{
    return rm_config_format(user, key, out, size, NULL, OWNER);
}

static int32_t get_context(void *user, const char *key, char *out, size_t size)
{
    uint64_t needed = 0;
    return vt->config_get(user, key, out, size, &needed);
}

/* A refusal says where the bad pair came from ("<path>:<line>" for the
 * file, "config entry <i>" or the caller's origin for pairs) and what is
 * wrong with it. */
static void check_message(const char *message, const char *expected_origin,
                          const char *expected_reason)
{
    FUZZ_CHECK(strstr(message, expected_origin) != NULL,
               "the message does not say \"%s\": \"%s\"", expected_origin, message);
    FUZZ_CHECK(strstr(message, expected_reason) != NULL,
               "the message does not say \"%s\": \"%s\"", expected_reason, message);
}

static void write_file(const char *content, size_t size)
{
    FUZZ_CHECK(ftruncate(file_fd, 0) == 0, "ftruncate of the memfd");
    if (size > 0)
        FUZZ_CHECK(pwrite(file_fd, content, size, 0) == (ssize_t)size, "pwrite of the memfd");
}

/* ---- seeds ------------------------------------------------------------ */

static void write_seed(const char *dir, const char *name, int mode, const char *content,
                       size_t size)
{
    char *bytes = malloc(size + 1);
    FUZZ_CHECK(bytes != NULL, "out of memory");
    bytes[0] = (char)mode;
    memcpy(bytes + 1, content, size);
    fuzz_write_seed(dir, name, bytes, size + 1);
    free(bytes);
}

#define SEED_FILE(dir, name, text) write_seed(dir, name, 0, text, sizeof text - 1)
#define SEED_PAIRS(dir, name, text) write_seed(dir, name, 1, text, sizeof text - 1)

static void write_seeds(const char *dir)
{
    SEED_FILE(dir, "file-readme", "# a deployment\n\n  registry.ttl_s = 2.5  \n"
                                  "log.level=debug\n\t# indented comment\n"
                                  "registry.max_bytes = 1G\n");
    SEED_FILE(dir, "file-every-key",
              "features = model-registry, shared-memory\nlog.level = info\n"
              "registry.ttl_s = 0.000000001\nregistry.max_bytes = 512MiB\n"
              "registry.max_models = 1048576\nshm.namespace = pipeline_1\n"
              "shm.pool_bytes = 4M\nshm.session_quota = 16T\nshm.max_tensors = 64\n"
              "registry.scope = node\nregistry.namespace = whisper-node\n"
              "registry.table_entries = 65536\nregistry.table = existing\n");
    SEED_FILE(dir, "file-crlf", "features = all\r\nregistry.ttl_s = 31536000\r\n# done\r\n");
    SEED_FILE(dir, "file-no-equals", "registry.ttl_s 5\n");
    SEED_FILE(dir, "file-missing-key", "log.level = info\n = 5\n");
    SEED_FILE(dir, "file-unknown-key", "\n\nbogus = 1\n");
    SEED_FILE(dir, "file-bad-value", "registry.max_models = many\n");
    SEED_FILE(dir, "file-nul", "log.level = info\nlog.level = de\0bug\n");
    SEED_FILE(dir, "file-utf16", "l\0o\0g\0.\0l\0e\0v\0e\0l\0=\0i\0n\0f\0o\0\n\0");
    SEED_PAIRS(dir, "pairs-pool", "shm.pool_bytes\0" "64M\0shm.max_tensors\0" "1024\0"
                                  "shm.namespace\0t1\0");
    SEED_PAIRS(dir, "pairs-node", "registry.scope\0node\0registry.namespace\0default\0"
                                  "registry.table_entries\0" "4\0registry.ttl_s\0" "1.5\0"
                                  "registry.table\0existing\0registry.table\0create\0");
    SEED_PAIRS(dir, "pairs-features", "features\0model-registry\0features\0none\0"
                                      "features\0 shared-memory ,model-registry\0");
    SEED_PAIRS(dir, "pairs-ttl-1ns-over-max", "registry.ttl_s\0" "31536000.000000001\0");
    SEED_PAIRS(dir, "pairs-sizes", "registry.max_bytes\0" "18446744073709551615\0"
                                   "shm.session_quota\0" "16777215TiB\0");
    static const char both[] = "log.level = debug\nshm.max_tensors = 100\n\xff"
                               "log.level\0error\0";
    write_seed(dir, "both", 2, both, sizeof both - 1);
}

/* ---- libFuzzer -------------------------------------------------------- */

static void print_outcomes(void)
{
    fprintf(stderr, "fuzz_config: configurations accepted %llu", (unsigned long long)outcomes[0]);
    for (int code = 1; code < 32; code++)
        if (outcomes[code] != 0)
            fprintf(stderr, ", %s %llu", vt->error_name(-code), (unsigned long long)outcomes[code]);
    fputc('\n', stderr);
    close(file_fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    vt = fuzz_vtable();
    /* The reference must know every key the plugin has, in its order. */
    for (uint32_t k = 0; k < KEY_COUNT; k++)
        FUZZ_CHECK(rm_config_key_at(k) != NULL && strcmp(rm_config_key_at(k), key_names[k]) == 0,
                   "config key %u is %s, the reference says %s: update fuzz_config.c", k,
                   rm_config_key_at(k) ? rm_config_key_at(k) : "(none)", key_names[k]);
    FUZZ_CHECK(rm_config_key_at(KEY_COUNT) == NULL,
               "the plugin has a key the reference lacks: update fuzz_config.c");
    if (fuzz_seed_directory() != NULL) {
        write_seeds(fuzz_seed_directory());
        exit(0);
    }
    file_fd = memfd_create("rm-fuzz-config", MFD_CLOEXEC);
    FUZZ_CHECK(file_fd >= 0, "memfd_create failed");
    snprintf(file_path, sizeof file_path, "/proc/self/fd/%d", file_fd);
    atexit(print_outcomes);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int mode = data[0] % 3;
    char *text = fuzz_string_copy(data + 1, size - 1);
    size_t text_size = size - 1;
    parsed_input input = {0};
    if (mode == 0) {
        input.file = text;
        input.file_size = text_size;
    } else if (mode == 1) {
        input.pair_count = split_pairs(text, text_size, input.pairs);
    } else {
        char *cut = memchr(text, 0xff, text_size);
        size_t file_size = cut != NULL ? (size_t)(cut - text) : text_size;
        input.file = text;
        input.file_size = file_size;
        if (cut != NULL)
            input.pair_count = split_pairs(cut + 1, text_size - file_size - 1, input.pairs);
    }

    /* What the reference expects, and where a refusal must point. */
    reference expected;
    reference_defaults(&expected);
    int32_t expected_rc = RM_OK;
    char origin[96] = "";
    const char *reason = "";
    if (input.file != NULL) {
        write_file(input.file, input.file_size);
        unsigned bad_line = 0;
        expected_rc = reference_file(&expected, input.file, input.file_size, &bad_line, &reason);
        /* "<path>:<line>:", so that line 1 does not match line 12. */
        snprintf(origin, sizeof origin, "%s:%u:", file_path, bad_line);
    }
    for (size_t i = 0; i < input.pair_count && expected_rc == RM_OK; i++) {
        expected_rc = reference_set(&expected, input.pairs[i].key, input.pairs[i].value);
        if (expected_rc != RM_OK) {
            snprintf(origin, sizeof origin, "pair %zu:", i);
            reason = reference_reason(expected_rc);
        }
    }

    /* The internals. */
    rm_config config;
    rm_config_defaults(&config);
    rm_error_clear();
    int32_t rc = RM_OK;
    if (input.file != NULL)
        rc = rm_config_apply_file(&config, file_path, OWNER);
    for (size_t i = 0; i < input.pair_count && rc == RM_OK; i++) {
        char pair_origin[32];
        snprintf(pair_origin, sizeof pair_origin, "pair %zu", i);
        rc = rm_config_set(&config, input.pairs[i].key, input.pairs[i].value, pair_origin,
                           OWNER);
    }
    FUZZ_CHECK(documented_code(rc), "rm_config: undocumented code %s", vt->error_name(rc));
    outcomes[-rc]++;
    FUZZ_CHECK(rc == expected_rc, "rm_config: %s, the reference says %s (%s)",
               vt->error_name(rc), vt->error_name(expected_rc), rm_error_last(OWNER));
    if (rc != RM_OK)
        check_message(rm_error_last(OWNER), origin, reason);
    else
        check_values("rm_config", &expected, false, get_internal, &config);
    int32_t internal_rc = rc;

    /* Through context_create(), as a host passes it. */
    rm_config_entry entries[MAX_PAIRS + 1];
    for (size_t i = 0; i < input.pair_count; i++)
        entries[i] = (rm_config_entry){input.pairs[i].key, input.pairs[i].value};
    entries[input.pair_count] = (rm_config_entry){"features", "none"};
    rm_context_options options = RM_STRUCT_INIT(rm_context_options);
    options.entries = entries;
    options.entry_count = input.pair_count + 1;
    options.config_path = input.file != NULL ? file_path : NULL;
    options.flags = RM_CONTEXT_IGNORE_ENV;
    rm_context *context = NULL;
    rc = vt->context_create(&options, &context);
    FUZZ_CHECK(rc == internal_rc, "context_create: %s, rm_config: %s (%s)", vt->error_name(rc),
               vt->error_name(internal_rc), vt->context_last_error(NULL));
    if (rc != RM_OK) {
        FUZZ_CHECK(context == NULL, "context_create failed but returned a context");
        char context_origin[sizeof origin + 16];
        if (strncmp(origin, "pair ", 5) == 0)
            snprintf(context_origin, sizeof context_origin, "config entry %s", origin + 5);
        else
            snprintf(context_origin, sizeof context_origin, "%s", origin);
        check_message(vt->context_last_error(NULL), context_origin, reason);
    } else {
        check_values("context", &expected, true, get_context, context);
        char features[32];
        uint64_t needed = 0;
        FUZZ_CHECK(vt->config_get(context, "features", features, sizeof features, &needed) ==
                           RM_OK &&
                       strcmp(features, "none") == 0,
                   "the last entry, features = none, did not win");
        vt->context_destroy(context);
    }
    free(text);
    return 0;
}
