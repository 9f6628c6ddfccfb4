/* Runtime configuration: keys, their parsing, defaults and sources.
 *
 * Parsers are strict on purpose: a typo in a deployment's config must fail
 * loudly at start-up, naming the key and the accepted form, rather than run
 * with a value nobody asked for. */
#include "config.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"

#define TTL_MAX_S 31536000u
#define MAX_MODELS_LIMIT 1048576u
#define CONFIG_LINE_MAX 4096

void rm_config_defaults(rm_config *config)
{
    *config = (rm_config){
        .features = RM_FEATURES_BUILT,
        .log_level = RM_LOG_WARN,
        .registry_ttl_s = 30.0,
        .registry_max_bytes = 0,
        .registry_max_models = 0,
        .shm_namespace = "default",
        .shm_pool_bytes = (uint64_t)1 << 30,
        .shm_session_quota = 0,
        .shm_max_tensors = 16384,
        .registry_scope = RM_REGISTRY_SCOPE_PROCESS,
        .registry_namespace = "default",
        .registry_table_entries = RM_NODE_TABLE_ENTRIES_DEFAULT,
    };
}

/* ---- value parsers ------------------------------------------------------ */

typedef int32_t (*value_parser)(rm_config *config, const char *value,
                                const char *origin, const void *error_owner);
typedef void (*value_formatter)(const rm_config *config, char *out,
                                size_t out_size);

struct config_key {
    const char *name;
    value_parser parse;
    value_formatter format;
};

static const struct {
    const char *name;
    uint64_t bit;
} feature_names[] = {
    {"model-registry", RM_FEATURE_MODEL_REGISTRY},
    {"shared-memory", RM_FEATURE_SHARED_MEMORY},
};

static int32_t invalid_value(const void *owner, const char *origin,
                             const char *key, const char *value,
                             const char *accepted)
{
    return rm_error_set(owner, RM_E_CONFIG_INVALID_VALUE,
                        "%s: invalid value '%.64s' for '%s' (expected %s)",
                        origin, value, key, accepted);
}

static int32_t parse_features(rm_config *config, const char *value,
                              const char *origin, const void *owner)
{
    static const char accepted[] =
        "a comma-separated list of model-registry, shared-memory; or all, none";
    if (strcmp(value, "all") == 0) {
        config->features = RM_FEATURES_BUILT;
        return RM_OK;
    }
    if (strcmp(value, "none") == 0) {
        config->features = 0;
        return RM_OK;
    }
    uint64_t features = 0;
    const char *cursor = value;
    for (;;) {
        while (*cursor == ' ' || *cursor == '\t')
            cursor++;
        size_t length = strcspn(cursor, ",");
        size_t trimmed = length;
        while (trimmed > 0 && (cursor[trimmed - 1] == ' ' || cursor[trimmed - 1] == '\t'))
            trimmed--;
        uint64_t bit = 0;
        for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++) {
            if (strlen(feature_names[i].name) == trimmed &&
                strncmp(cursor, feature_names[i].name, trimmed) == 0)
                bit = feature_names[i].bit;
        }
        if (bit == 0)
            return invalid_value(owner, origin, "features", value, accepted);
        features |= bit;
        if (cursor[length] == '\0')
            break;
        cursor += length + 1;
    }
    /* Only a well-formed list is checked against the build, so a malformed
     * value is reported as malformed in every build. */
    for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++)
        if ((features & feature_names[i].bit) != 0 &&
            (RM_FEATURES_BUILT & feature_names[i].bit) == 0)
            return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                                "%s: feature '%s' was not built into this plugin "
                                "(meson option -D%s=enabled)",
                                origin, feature_names[i].name, feature_names[i].name);
    config->features = features;
    return RM_OK;
}

static void format_features(const rm_config *config, char *out, size_t out_size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof feature_names / sizeof feature_names[0]; i++) {
        if ((config->features & feature_names[i].bit) == 0)
            continue;
        int n = snprintf(out + used, out_size - used, "%s%s", used ? "," : "",
                         feature_names[i].name);
        if (n > 0 && (size_t)n < out_size - used)
            used += (size_t)n;
    }
    if (used == 0)
        snprintf(out, out_size, "none");
}

static int32_t parse_log_level(rm_config *config, const char *value,
                               const char *origin, const void *owner)
{
    for (int32_t level = RM_LOG_ERROR; level <= RM_LOG_DEBUG; level++) {
        if (strcmp(value, rm_log_level_name(level)) == 0) {
            config->log_level = level;
            return RM_OK;
        }
    }
    return invalid_value(owner, origin, "log.level", value,
                         "one of error, warn, info, debug");
}

static void format_log_level(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", rm_log_level_name(config->log_level));
}

/* Seconds as a decimal without sign or exponent: digits, optionally '.'
 * and 1 to 9 digits (nanoseconds: finer values could not be honoured),
 * from 0 to TTL_MAX_S, leading zeros allowed in any number (a 32-byte cap
 * on the text refused 33 zeros; found by tests/fuzz/fuzz_config.c). The
 * range is checked on the digits, not on the double, which strtod()
 * rounds: 31536000.000000001 passed as 31536000. */
static int parse_ttl_seconds(const char *value, double *out)
{
    const char *p = value;
    while (*p == '0' && isdigit((unsigned char)p[1]))
        p++;
    uint64_t whole = 0;
    size_t digits = 0;
    for (; isdigit((unsigned char)*p); p++, digits++)
        if (digits < 9)
            whole = whole * 10 + (uint64_t)(*p - '0');
    bool fraction_set = false;
    if (*p == '.') {
        p++;
        size_t fraction = 0;
        for (; isdigit((unsigned char)*p); p++, fraction++)
            fraction_set = fraction_set || *p != '0';
        if (fraction == 0 || fraction > 9)
            return 0;
    }
    if (digits == 0 || *p != '\0' || digits > 9 || whole > TTL_MAX_S ||
        (whole == TTL_MAX_S && fraction_set))
        return 0;
    errno = 0;
    *out = strtod(value, NULL);
    return errno == 0 && isfinite(*out);
}

static int32_t parse_ttl(rm_config *config, const char *value,
                         const char *origin, const void *owner)
{
    double seconds;
    if (!parse_ttl_seconds(value, &seconds))
        return invalid_value(owner, origin, "registry.ttl_s", value,
                             "seconds as a decimal number from 0 to 31536000 with at most "
                             "9 digits after the point; 0 disables TTL");
    config->registry_ttl_s = seconds;
    return RM_OK;
}

/* Fixed point with trailing zeros trimmed: the form the parser accepts. */
static void format_ttl(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%.9f", config->registry_ttl_s);
    char *point = strchr(out, '.');
    if (point == NULL)
        return;
    char *end = point + strlen(point) - 1;
    while (end > point && *end == '0')
        *end-- = '\0';
    if (end == point)
        *point = '\0';
}

/* Unsigned decimal integer, no sign, no blanks; *end gets the rest. */
static int parse_unsigned(const char *value, uint64_t *out, const char **end)
{
    if (!isdigit((unsigned char)value[0]))
        return 0;
    uint64_t result = 0;
    const char *p = value;
    while (isdigit((unsigned char)*p)) {
        unsigned digit = (unsigned)(*p - '0');
        if (result > (UINT64_MAX - digit) / 10)
            return 0;
        result = result * 10 + digit;
        p++;
    }
    *out = result;
    *end = p;
    return 1;
}

/* A byte count with an optional binary suffix. 1 on success. */
static int parse_size(const char *value, uint64_t *out)
{
    static const struct {
        const char *suffix;
        unsigned shift;
    } suffixes[] = {
        {"", 0},     {"K", 10},   {"M", 20},   {"G", 30},   {"T", 40},
        {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
    };
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest))
        return 0;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        if (strcmp(rest, suffixes[i].suffix) != 0)
            continue;
        if (number > (UINT64_MAX >> suffixes[i].shift))
            return 0;
        *out = number << suffixes[i].shift;
        return 1;
    }
    return 0;
}

#define SIZE_FORM "a byte count with an optional K, M, G, T, KiB, MiB, GiB or TiB " \
                  "suffix (powers of 1024)"

static int32_t parse_max_bytes(rm_config *config, const char *value,
                               const char *origin, const void *owner)
{
    if (parse_size(value, &config->registry_max_bytes))
        return RM_OK;
    return invalid_value(owner, origin, "registry.max_bytes", value,
                         SIZE_FORM ", at most 2^64-1 bytes; 0 = unlimited");
}

static void format_max_bytes(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%llu", (unsigned long long)config->registry_max_bytes);
}

/* Namespaces become part of /dev/shm names, so the alphabet is closed. */
static int32_t parse_namespace(char *out, const char *key, const char *value,
                               const char *origin, const void *owner)
{
    size_t length = strlen(value);
    bool ok = length >= 1 && length <= RM_SHM_NAMESPACE_MAX;
    for (size_t i = 0; ok && i < length; i++) {
        char c = value[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    }
    if (!ok)
        return invalid_value(owner, origin, key, value,
                             "1 to 32 characters of A-Z, a-z, 0-9, '_' and '-'");
    memcpy(out, value, length + 1);
    return RM_OK;
}

static int32_t parse_shm_namespace(rm_config *config, const char *value,
                                   const char *origin, const void *owner)
{
    return parse_namespace(config->shm_namespace, "shm.namespace", value, origin, owner);
}

static int32_t parse_registry_namespace(rm_config *config, const char *value,
                                        const char *origin, const void *owner)
{
    return parse_namespace(config->registry_namespace, "registry.namespace", value, origin,
                           owner);
}

static void format_registry_namespace(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", config->registry_namespace);
}

static int32_t parse_registry_scope(rm_config *config, const char *value,
                                    const char *origin, const void *owner)
{
    if (strcmp(value, "process") == 0)
        config->registry_scope = RM_REGISTRY_SCOPE_PROCESS;
    else if (strcmp(value, "node") == 0)
        config->registry_scope = RM_REGISTRY_SCOPE_NODE;
    else
        return invalid_value(owner, origin, "registry.scope", value, "process or node");
    return RM_OK;
}

static void format_registry_scope(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s",
             config->registry_scope == RM_REGISTRY_SCOPE_NODE ? "node" : "process");
}

static int32_t parse_registry_table_entries(rm_config *config, const char *value,
                                            const char *origin, const void *owner)
{
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest) || *rest != '\0' ||
        number < RM_NODE_TABLE_ENTRIES_MIN || number > RM_NODE_TABLE_ENTRIES_MAX)
        return invalid_value(owner, origin, "registry.table_entries", value,
                             "an integer from 4 to 65536");
    config->registry_table_entries = (uint32_t)number;
    return RM_OK;
}

static void format_registry_table_entries(const rm_config *config, char *out,
                                          size_t out_size)
{
    snprintf(out, out_size, "%u", config->registry_table_entries);
}

static void format_shm_namespace(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", config->shm_namespace);
}

static int32_t parse_shm_pool_bytes(rm_config *config, const char *value,
                                    const char *origin, const void *owner)
{
    uint64_t bytes;
    if (!parse_size(value, &bytes) || bytes < RM_SHM_POOL_BYTES_MIN ||
        bytes > RM_SHM_POOL_BYTES_MAX)
        return invalid_value(owner, origin, "shm.pool_bytes", value,
                             SIZE_FORM ", from 4M to 512G");
    config->shm_pool_bytes = bytes;
    return RM_OK;
}

static void format_shm_pool_bytes(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%llu", (unsigned long long)config->shm_pool_bytes);
}

static int32_t parse_shm_session_quota(rm_config *config, const char *value,
                                       const char *origin, const void *owner)
{
    if (parse_size(value, &config->shm_session_quota))
        return RM_OK;
    return invalid_value(owner, origin, "shm.session_quota", value,
                         SIZE_FORM "; 0 = unlimited");
}

static void format_shm_session_quota(const rm_config *config, char *out,
                                     size_t out_size)
{
    snprintf(out, out_size, "%llu", (unsigned long long)config->shm_session_quota);
}

static int32_t parse_shm_max_tensors(rm_config *config, const char *value,
                                     const char *origin, const void *owner)
{
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest) || *rest != '\0' ||
        number < RM_SHM_MAX_TENSORS_MIN || number > RM_SHM_MAX_TENSORS_MAX)
        return invalid_value(owner, origin, "shm.max_tensors", value,
                             "an integer from 64 to 1048576");
    config->shm_max_tensors = (uint32_t)number;
    return RM_OK;
}

static void format_shm_max_tensors(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%u", config->shm_max_tensors);
}

static int32_t parse_max_models(rm_config *config, const char *value,
                                const char *origin, const void *owner)
{
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest) || *rest != '\0' ||
        number > MAX_MODELS_LIMIT)
        return invalid_value(owner, origin, "registry.max_models", value,
                             "an integer from 0 to 1048576; 0 = unlimited");
    config->registry_max_models = number;
    return RM_OK;
}

static void format_max_models(const rm_config *config, char *out, size_t out_size)
{
    snprintf(out, out_size, "%llu", (unsigned long long)config->registry_max_models);
}

static const struct config_key config_keys[] = {
    {"features", parse_features, format_features},
    {"log.level", parse_log_level, format_log_level},
    {"registry.ttl_s", parse_ttl, format_ttl},
    {"registry.max_bytes", parse_max_bytes, format_max_bytes},
    {"registry.max_models", parse_max_models, format_max_models},
    {"shm.namespace", parse_shm_namespace, format_shm_namespace},
    {"shm.pool_bytes", parse_shm_pool_bytes, format_shm_pool_bytes},
    {"shm.session_quota", parse_shm_session_quota, format_shm_session_quota},
    {"shm.max_tensors", parse_shm_max_tensors, format_shm_max_tensors},
    {"registry.scope", parse_registry_scope, format_registry_scope},
    {"registry.namespace", parse_registry_namespace, format_registry_namespace},
    {"registry.table_entries", parse_registry_table_entries, format_registry_table_entries},
};
#define CONFIG_KEY_COUNT (sizeof config_keys / sizeof config_keys[0])

static const struct config_key *find_key(const char *name)
{
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

static int32_t unknown_key(const void *owner, const char *origin, const char *key)
{
    char known[256];
    size_t used = 0;
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++) {
        int n = snprintf(known + used, sizeof known - used, "%s%s",
                         i ? ", " : "", config_keys[i].name);
        if (n > 0 && (size_t)n < sizeof known - used)
            used += (size_t)n;
    }
    return rm_error_set(owner, RM_E_CONFIG_UNKNOWN_KEY,
                        "%s: unknown configuration key '%.64s' (known keys: %s)",
                        origin, key, known);
}

int32_t rm_config_set(rm_config *config, const char *key, const char *value,
                      const char *origin, const void *error_owner)
{
    const struct config_key *entry = find_key(key);
    if (entry == NULL)
        return unknown_key(error_owner, origin, key);
    return entry->parse(config, value, origin, error_owner);
}

/* Reads one line, its '\n' included, into `line` and NUL-terminates it.
 * Returns its length in bytes, NUL bytes counted (fgets() could not tell
 * them from the end of the line, so a NUL was reported as an overlong
 * line; found by tests/fuzz/fuzz_config.c), or -1 at the end of the file.
 * A line that does not fit sets *too_long. */
static long read_line(FILE *file, char *line, size_t size, bool *too_long)
{
    size_t used = 0;
    int c = EOF;
    *too_long = false;
    flockfile(file);
    while ((c = getc_unlocked(file)) != EOF) {
        if (used + 1 >= size) {
            *too_long = true;
            break;
        }
        line[used++] = (char)c;
        if (c == '\n')
            break;
    }
    funlockfile(file);
    line[used] = '\0';
    return used == 0 && c == EOF ? -1 : (long)used;
}

static char *trim(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t length = strlen(text);
    while (length > 0 && isspace((unsigned char)text[length - 1]))
        text[--length] = '\0';
    return text;
}

int32_t rm_config_apply_file(rm_config *config, const char *path,
                             const void *error_owner)
{
    FILE *file = fopen(path, "re");
    if (file == NULL)
        return rm_error_set(error_owner, RM_E_CONFIG_FILE,
                            "cannot open configuration file '%s': %s", path,
                            strerror(errno));
    char line[CONFIG_LINE_MAX];
    unsigned line_number = 0;
    int32_t status = RM_OK;
    long length;
    bool too_long = false;
    while (status == RM_OK && (length = read_line(file, line, sizeof line, &too_long)) >= 0) {
        line_number++;
        char origin[512];
        snprintf(origin, sizeof origin, "%s:%u", path, line_number);
        if (too_long) {
            status = rm_error_set(error_owner, RM_E_CONFIG_FILE,
                                  "%s: line longer than %d bytes", origin,
                                  CONFIG_LINE_MAX - 2);
            break;
        }
        if (memchr(line, '\0', (size_t)length) != NULL) {
            status = rm_error_set(error_owner, RM_E_CONFIG_FILE,
                                  "%s: NUL byte in the line (not a text file; UTF-16?)",
                                  origin);
            break;
        }
        char *content = trim(line);
        if (content[0] == '\0' || content[0] == '#')
            continue;
        char *equals = strchr(content, '=');
        if (equals == NULL) {
            status = rm_error_set(error_owner, RM_E_CONFIG_FILE,
                                  "%s: expected 'key = value', got '%.64s'",
                                  origin, content);
            break;
        }
        *equals = '\0';
        char *key = trim(content);
        char *value = trim(equals + 1);
        if (key[0] == '\0') {
            status = rm_error_set(error_owner, RM_E_CONFIG_FILE,
                                  "%s: missing key before '='", origin);
            break;
        }
        status = rm_config_set(config, key, value, origin, error_owner);
    }
    if (status == RM_OK && ferror(file))
        status = rm_error_set(error_owner, RM_E_CONFIG_FILE,
                              "error reading configuration file '%s'", path);
    fclose(file);
    return status;
}

int32_t rm_config_format(const rm_config *config, const char *key,
                         char *buffer, size_t buffer_size, size_t *needed,
                         const void *error_owner)
{
    const struct config_key *entry = find_key(key);
    if (entry == NULL)
        return unknown_key(error_owner, "config_get", key);
    char text[256];
    entry->format(config, text, sizeof text);
    size_t size = strlen(text) + 1;
    if (needed != NULL)
        *needed = size;
    if (buffer == NULL || buffer_size < size)
        return rm_error_set(error_owner, RM_E_BUFFER_TOO_SMALL,
                            "value of '%s' needs %zu bytes, buffer has %zu", key,
                            size, buffer == NULL ? (size_t)0 : buffer_size);
    memcpy(buffer, text, size);
    return RM_OK;
}

const char *rm_config_key_at(uint32_t index)
{
    if (index >= CONFIG_KEY_COUNT)
        return NULL;
    return config_keys[index].name;
}
