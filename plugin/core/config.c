/* Runtime configuration: keys, their parsing, defaults and sources.
 *
 * The keys are the rows of config_keys.h; this file gives each of the
 * table's types its parser, its printer and the words for its accepted
 * form, and expands the table into one entry per key. A key is a row
 * there, not code here.
 *
 * Parsers are strict on purpose: a typo in a deployment's config must fail
 * loudly at start-up, naming the key and the accepted form, rather than run
 * with a value nobody asked for. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "host.h"
#include "node_table.h" /* RM_NODE_TABLE_ENTRIES_*, named in the table */

#define CONFIG_LINE_MAX 4096

/* ---- text for messages and documentation -------------------------------- */

/* An appender that never overflows: what does not fit is cut. */
typedef struct text_buffer {
    char *out;
    size_t size;
    size_t used;
} text_buffer;

__attribute__((format(printf, 2, 3))) static void text_add(text_buffer *t,
                                                           const char *format, ...)
{
    if (t->used + 1 >= t->size)
        return;
    va_list args;
    va_start(args, format);
    int n = vsnprintf(t->out + t->used, t->size - t->used, format, args);
    va_end(args);
    if (n > 0)
        t->used += (size_t)n < t->size - t->used ? (size_t)n : t->size - t->used - 1;
}

/* A value a host would type: in backquotes for Markdown; in a message as
 * it is, or quoted when it is a lone punctuation mark ('_'), which would
 * otherwise read as part of the sentence. */
static void text_literal(text_buffer *t, const char *value, bool markdown)
{
    if (markdown)
        text_add(t, "`%s`", value);
    else if (value[0] != '\0' && value[1] == '\0' && !isalnum((unsigned char)value[0]))
        text_add(t, "'%s'", value);
    else
        text_add(t, "%s", value);
}

/* "a, b, c" or, with `last_word`, "a, b <last_word> c". */
static void text_list(text_buffer *t, const char *const *values, size_t count,
                      const char *last_word, bool markdown)
{
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            text_add(t, "%s", last_word != NULL && i + 1 == count ? last_word : ", ");
        text_literal(t, values[i], markdown);
    }
}

/* ---- the table's entries -------------------------------------------------- */

typedef struct config_key config_key;
struct config_key {
    const char *name;
    uint64_t min, max;
    const char *default_value;
    const char *doc;
    /* The row's type applied to the row's member of rm_config. */
    int32_t (*parse)(rm_config *config, const config_key *key, const char *value,
                     const char *origin, const void *owner);
    void (*format)(const rm_config *config, char *out, size_t out_size);
    void (*form)(const config_key *key, bool markdown, text_buffer *out);
};

/* The message of every refused value: where it came from, the value, the
 * key and what the key accepts. */
static int32_t invalid_value(const config_key *key, const char *value, const char *origin,
                             const void *owner)
{
    char accepted[384];
    text_buffer form = {.out = accepted, .size = sizeof accepted};
    accepted[0] = '\0';
    key->form(key, false, &form);
    return rm_error_set(owner, RM_E_CONFIG_INVALID_VALUE,
                        "%s: invalid value '%.64s' for '%s' (expected %s)", origin, value,
                        key->name, accepted);
}

/* Each type below is three functions, TYPE_parse (writes *out only when it
 * accepts the value), TYPE_format (the form config_get prints, which
 * TYPE_parse accepts back unchanged) and TYPE_form (the accepted form, in
 * words). They take the type's storage (config.h), so that a row whose
 * member is not of its type does not compile. */

/* ---- features --------------------------------------------------------- */

static const struct {
    const char *name;
    uint64_t bit;
} feature_names[] = {
    {"model-registry", RM_FEATURE_MODEL_REGISTRY},
    {"shared-memory", RM_FEATURE_SHARED_MEMORY},
    {"cuda-ipc", RM_FEATURE_CUDA_IPC},
};
#define FEATURE_COUNT (sizeof feature_names / sizeof feature_names[0])

static int32_t features_parse(rm_config_features *out, const config_key *key, const char *value,
                              const char *origin, const void *owner)
{
    if (strcmp(value, "all") == 0) {
        *out = RM_FEATURES_BUILT;
        return RM_OK;
    }
    if (strcmp(value, "none") == 0) {
        *out = 0;
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
        for (size_t i = 0; i < FEATURE_COUNT; i++) {
            if (strlen(feature_names[i].name) == trimmed &&
                strncmp(cursor, feature_names[i].name, trimmed) == 0)
                bit = feature_names[i].bit;
        }
        if (bit == 0)
            return invalid_value(key, value, origin, owner);
        features |= bit;
        if (cursor[length] == '\0')
            break;
        cursor += length + 1;
    }
    /* Only a well-formed list is checked against the build, so a malformed
     * value is reported as malformed in every build. */
    for (size_t i = 0; i < FEATURE_COUNT; i++)
        if ((features & feature_names[i].bit) != 0 &&
            (RM_FEATURES_BUILT & feature_names[i].bit) == 0)
            return rm_error_set(owner, RM_E_FEATURE_UNAVAILABLE,
                                "%s: feature '%s' was not built into this plugin "
                                "(meson option -D%s=enabled)",
                                origin, feature_names[i].name, feature_names[i].name);
    *out = features;
    return RM_OK;
}

static void features_format(const rm_config_features *value, char *out, size_t out_size)
{
    text_buffer t = {.out = out, .size = out_size};
    out[0] = '\0';
    for (size_t i = 0; i < FEATURE_COUNT; i++)
        if ((*value & feature_names[i].bit) != 0)
            text_add(&t, "%s%s", t.used ? "," : "", feature_names[i].name);
    if (t.used == 0)
        snprintf(out, out_size, "none");
}

static void features_form(const config_key *key, bool markdown, text_buffer *t)
{
    (void)key;
    const char *names[FEATURE_COUNT];
    for (size_t i = 0; i < FEATURE_COUNT; i++)
        names[i] = feature_names[i].name;
    text_add(t, "a comma-separated list of ");
    text_list(t, names, FEATURE_COUNT, NULL, markdown);
    text_add(t, "; or ");
    text_literal(t, "all", markdown);
    text_add(t, ", ");
    text_literal(t, "none", markdown);
}

/* ---- log_level: a level name, from min to max ----------------------------- */

static int32_t log_level_parse(rm_config_log_level *out, const config_key *key,
                               const char *value, const char *origin, const void *owner)
{
    for (uint64_t level = key->min; level <= key->max; level++) {
        if (strcmp(value, rm_log_level_name((int32_t)level)) == 0) {
            *out = (int32_t)level;
            return RM_OK;
        }
    }
    return invalid_value(key, value, origin, owner);
}

static void log_level_format(const rm_config_log_level *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", rm_log_level_name(*value));
}

static void log_level_form(const config_key *key, bool markdown, text_buffer *t)
{
    text_add(t, "one of ");
    for (uint64_t level = key->min; level <= key->max; level++) {
        text_add(t, "%s", level > key->min ? ", " : "");
        text_literal(t, rm_log_level_name((int32_t)level), markdown);
    }
}

/* ---- seconds ------------------------------------------------------------ */

/* Seconds as a decimal without sign or exponent: digits, optionally '.'
 * and 1 to 9 digits (nanoseconds: finer values could not be honoured),
 * from min to max (whole seconds, max below 10^9), leading zeros allowed
 * in any number (a 32-byte cap on the text refused 33 zeros; found by
 * tests/fuzz/fuzz_config.c). The range is checked on the digits, not on
 * the double, which strtod() rounds: 31536000.000000001 passed as
 * 31536000. */
static int parse_seconds_text(const char *value, uint64_t min, uint64_t max, double *out)
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
    if (digits == 0 || *p != '\0' || digits > 9 || whole < min || whole > max ||
        (whole == max && fraction_set))
        return 0;
    errno = 0;
    *out = strtod(value, NULL);
    return errno == 0 && isfinite(*out);
}

static int32_t seconds_parse(rm_config_seconds *out, const config_key *key, const char *value,
                             const char *origin, const void *owner)
{
    double seconds;
    if (!parse_seconds_text(value, key->min, key->max, &seconds))
        return invalid_value(key, value, origin, owner);
    *out = seconds;
    return RM_OK;
}

/* Fixed point with trailing zeros trimmed: the form the parser accepts. */
static void seconds_format(const rm_config_seconds *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%.9f", *value);
    char *point = strchr(out, '.');
    if (point == NULL)
        return;
    char *end = point + strlen(point) - 1;
    while (end > point && *end == '0')
        *end-- = '\0';
    if (end == point)
        *point = '\0';
}

static void seconds_form(const config_key *key, bool markdown, text_buffer *t)
{
    (void)markdown;
    text_add(t,
             "seconds as a decimal number from %llu to %llu, at most 9 digits after the "
             "point",
             (unsigned long long)key->min, (unsigned long long)key->max);
}

/* ---- numbers: count and bytes ------------------------------------------- */

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

static int32_t count_parse(rm_config_count *out, const config_key *key, const char *value,
                           const char *origin, const void *owner)
{
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest) || *rest != '\0' || number < key->min ||
        number > key->max)
        return invalid_value(key, value, origin, owner);
    *out = (rm_config_count)number;
    return RM_OK;
}

static void count_format(const rm_config_count *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%u", (unsigned)*value);
}

static void count_form(const config_key *key, bool markdown, text_buffer *t)
{
    (void)markdown;
    text_add(t, "an integer from %llu to %llu", (unsigned long long)key->min,
             (unsigned long long)key->max);
}

static const struct {
    const char *suffix;
    unsigned shift;
} size_suffixes[] = {
    {"", 0},     {"K", 10},   {"M", 20},   {"G", 30},   {"T", 40},
    {"KiB", 10}, {"MiB", 20}, {"GiB", 30}, {"TiB", 40},
};
#define SIZE_SUFFIX_COUNT (sizeof size_suffixes / sizeof size_suffixes[0])

/* A byte count with an optional binary suffix. 1 on success. */
static int parse_size(const char *value, uint64_t *out)
{
    uint64_t number;
    const char *rest;
    if (!parse_unsigned(value, &number, &rest))
        return 0;
    for (size_t i = 0; i < SIZE_SUFFIX_COUNT; i++) {
        if (strcmp(rest, size_suffixes[i].suffix) != 0)
            continue;
        if (number > (UINT64_MAX >> size_suffixes[i].shift))
            return 0;
        *out = number << size_suffixes[i].shift;
        return 1;
    }
    return 0;
}

static int32_t bytes_parse(rm_config_bytes *out, const config_key *key, const char *value,
                           const char *origin, const void *owner)
{
    uint64_t bytes;
    if (!parse_size(value, &bytes) || bytes < key->min || bytes > key->max)
        return invalid_value(key, value, origin, owner);
    *out = bytes;
    return RM_OK;
}

/* In bytes: config_get's answer is exact and needs no parsing of units. */
static void bytes_format(const rm_config_bytes *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%llu", (unsigned long long)*value);
}

/* `bytes` as a host would write it, with the largest one-letter suffix
 * that keeps it exact (4194304: "4M"). */
static void size_short(uint64_t bytes, char *out, size_t out_size)
{
    size_t best = 0;
    for (size_t i = 1; i < SIZE_SUFFIX_COUNT; i++)
        if (strlen(size_suffixes[i].suffix) == 1 && bytes != 0 &&
            bytes % ((uint64_t)1 << size_suffixes[i].shift) == 0)
            best = i;
    snprintf(out, out_size, "%llu%s", (unsigned long long)(bytes >> size_suffixes[best].shift),
             size_suffixes[best].suffix);
}

static void bytes_form(const config_key *key, bool markdown, text_buffer *t)
{
    const char *suffixes[SIZE_SUFFIX_COUNT - 1];
    for (size_t i = 1; i < SIZE_SUFFIX_COUNT; i++)
        suffixes[i - 1] = size_suffixes[i].suffix;
    text_add(t, "a byte count: an integer with an optional ");
    text_list(t, suffixes, SIZE_SUFFIX_COUNT - 1, " or ", markdown);
    text_add(t, " suffix (powers of 1024)");
    if (key->min == 0 && key->max == UINT64_MAX)
        return; /* every count that fits: a range would only restate that */
    char min[32], max[32];
    size_short(key->min, min, sizeof min);
    size_short(key->max, max, sizeof max);
    text_add(t, ", from ");
    text_literal(t, min, markdown);
    text_add(t, " to ");
    text_literal(t, max, markdown);
}

/* ---- namespace_name ----------------------------------------------------- */

/* Namespaces become part of /dev/shm names, so the alphabet is closed. */
static int32_t namespace_name_parse(rm_config_namespace_name *out, const config_key *key,
                                    const char *value, const char *origin, const void *owner)
{
    size_t length = strlen(value);
    bool ok = length >= key->min && length <= key->max && length < sizeof *out;
    for (size_t i = 0; ok && i < length; i++) {
        char c = value[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '-';
    }
    if (!ok)
        return invalid_value(key, value, origin, owner);
    memcpy(*out, value, length + 1);
    return RM_OK;
}

static void namespace_name_format(const rm_config_namespace_name *value, char *out,
                                  size_t out_size)
{
    snprintf(out, out_size, "%s", *value);
}

static void namespace_name_form(const config_key *key, bool markdown, text_buffer *t)
{
    static const char *const alphabet[] = {"A-Z", "a-z", "0-9", "_", "-"};
    text_add(t, "%llu to %llu characters of ", (unsigned long long)key->min,
             (unsigned long long)key->max);
    text_list(t, alphabet, sizeof alphabet / sizeof alphabet[0], " and ", markdown);
}

/* ---- library ------------------------------------------------------------- */

/* A name for dlopen(): a soname found on the library path, or a path. Only
 * printable characters without blanks, so that config_get prints it back
 * as it was and a configuration file cannot smuggle a second value in. */
static int32_t library_parse(rm_config_library *out, const config_key *key, const char *value,
                             const char *origin, const void *owner)
{
    size_t length = strlen(value);
    bool ok = length >= key->min && length <= key->max && length < sizeof *out;
    for (size_t i = 0; ok && i < length; i++)
        ok = value[i] > ' ' && value[i] < 0x7f;
    if (!ok)
        return invalid_value(key, value, origin, owner);
    memcpy(*out, value, length + 1);
    return RM_OK;
}

static void library_format(const rm_config_library *value, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", *value);
}

static void library_form(const config_key *key, bool markdown, text_buffer *t)
{
    (void)markdown;
    text_add(t, "a soname or a path, %llu to %llu printable characters without blanks",
             (unsigned long long)key->min, (unsigned long long)key->max);
}

/* ---- choices: scope, table_mode ------------------------------------------ */

typedef struct choice {
    const char *name;
    uint32_t value;
} choice;

static int32_t choice_parse(const choice *choices, size_t count, uint32_t *out,
                            const config_key *key, const char *value, const char *origin,
                            const void *owner)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(value, choices[i].name) == 0) {
            *out = choices[i].value;
            return RM_OK;
        }
    }
    return invalid_value(key, value, origin, owner);
}

static void choice_format(const choice *choices, size_t count, uint32_t value, char *out,
                          size_t out_size)
{
    const char *name = "?";
    for (size_t i = 0; i < count; i++)
        if (choices[i].value == value)
            name = choices[i].name;
    snprintf(out, out_size, "%s", name);
}

static void choice_form(const choice *choices, size_t count, bool markdown, text_buffer *t)
{
    text_add(t, "one of ");
    for (size_t i = 0; i < count; i++) {
        text_add(t, "%s", i ? ", " : "");
        text_literal(t, choices[i].name, markdown);
    }
}

/* TYPE_parse, TYPE_format and TYPE_form of a type whose values are the
 * names in `choices`. */
#define CHOICE_TYPE(type, choices)                                                        \
    static int32_t type##_parse(rm_config_##type *out, const config_key *key,             \
                                const char *value, const char *origin, const void *owner) \
    {                                                                                     \
        return choice_parse(choices, sizeof choices / sizeof choices[0], out, key, value, \
                            origin, owner);                                               \
    }                                                                                     \
    static void type##_format(const rm_config_##type *value, char *out, size_t out_size)  \
    {                                                                                     \
        choice_format(choices, sizeof choices / sizeof choices[0], *value, out, out_size); \
    }                                                                                     \
    static void type##_form(const config_key *key, bool markdown, text_buffer *t)        \
    {                                                                                     \
        (void)key;                                                                        \
        choice_form(choices, sizeof choices / sizeof choices[0], markdown, t);            \
    }

static const choice scope_choices[] = {
    {"process", RM_REGISTRY_SCOPE_PROCESS},
    {"node", RM_REGISTRY_SCOPE_NODE},
};
CHOICE_TYPE(scope, scope_choices)

static const choice table_mode_choices[] = {
    {"create", RM_REGISTRY_TABLE_CREATE},
    {"existing", RM_REGISTRY_TABLE_EXISTING},
};
CHOICE_TYPE(table_mode, table_mode_choices)

/* ---- the table, expanded ------------------------------------------------- */

/* The largest `max` each type can honour: a row beyond it does not
 * compile. */
#define LIMIT_features 0
#define LIMIT_log_level RM_LOG_DEBUG
#define LIMIT_seconds 999999999u /* the parser keeps 9 digits of whole seconds */
#define LIMIT_bytes UINT64_MAX
#define LIMIT_count UINT32_MAX
#define LIMIT_namespace_name RM_NAMESPACE_MAX
#define LIMIT_scope 0
#define LIMIT_table_mode 0
#define LIMIT_library RM_LIBRARY_NAME_MAX

#define KEY_CHECK_(name, field, type, min, max, default_value, doc)                   \
    _Static_assert((uint64_t)(min) <= (uint64_t)(max) &&                             \
                       (uint64_t)(max) <= (uint64_t)LIMIT_##type,                    \
                   "config key " name ": min and max must fit its type " #type);
/* A row's min is often 0, which GCC's -Wtype-limits reports as a
 * comparison that is always true; here that is the point. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtype-limits"
RM_CONFIG_KEYS(KEY_CHECK_)
#pragma GCC diagnostic pop
#undef KEY_CHECK_

/* Per key, its type's functions applied to its member of rm_config. */
#define KEY_FUNCTIONS_(name, field, type, min, max, default_value, doc)                  \
    static int32_t key_parse_##field(rm_config *config, const config_key *key,            \
                                     const char *value, const char *origin,               \
                                     const void *owner)                                   \
    {                                                                                     \
        return type##_parse(&config->field, key, value, origin, owner);                   \
    }                                                                                     \
    static void key_format_##field(const rm_config *config, char *out, size_t out_size)   \
    {                                                                                     \
        type##_format(&config->field, out, out_size);                                     \
    }
RM_CONFIG_KEYS(KEY_FUNCTIONS_)
#undef KEY_FUNCTIONS_

#define KEY_ENTRY_(key_name, field, type, key_min, key_max, key_default, key_doc)         \
    {                                                                                     \
        .name = key_name,                                                                 \
        .min = (uint64_t)(key_min),                                                       \
        .max = (uint64_t)(key_max),                                                       \
        .default_value = key_default,                                                     \
        .doc = key_doc,                                                                   \
        .parse = key_parse_##field,                                                       \
        .format = key_format_##field,                                                     \
        .form = type##_form,                                                              \
    },
static const config_key config_keys[] = {RM_CONFIG_KEYS(KEY_ENTRY_)};
#undef KEY_ENTRY_
#define CONFIG_KEY_COUNT (sizeof config_keys / sizeof config_keys[0])

/* ---- lookups and the defaults --------------------------------------------- */

static const config_key *find_key(const char *name)
{
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

static int32_t unknown_key(const void *owner, const char *origin, const char *key)
{
    char known[384];
    text_buffer list = {.out = known, .size = sizeof known};
    known[0] = '\0';
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++)
        text_add(&list, "%s%s", i ? ", " : "", config_keys[i].name);
    return rm_error_set(owner, RM_E_CONFIG_UNKNOWN_KEY,
                        "%s: unknown configuration key '%.64s' (known keys: %s)",
                        origin, key, known);
}

/* Every default is a row's text, parsed like a host's value; the unit
 * tests check that each one is accepted, so nothing here can fail. */
void rm_config_defaults(rm_config *config)
{
    *config = (rm_config){0};
    for (size_t i = 0; i < CONFIG_KEY_COUNT; i++)
        config_keys[i].parse(config, &config_keys[i], config_keys[i].default_value,
                             "default", NULL);
}

int32_t rm_config_set(rm_config *config, const char *key, const char *value,
                      const char *origin, const void *error_owner)
{
    const config_key *entry = find_key(key);
    if (entry == NULL)
        return unknown_key(error_owner, origin, key);
    return entry->parse(config, entry, value, origin, error_owner);
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
    const config_key *entry = find_key(key);
    if (entry == NULL)
        return unknown_key(error_owner, "config_get", key);
    char text[RM_LIBRARY_NAME_MAX + 1]; /* the longest value any type prints */
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

bool rm_config_key_doc(uint32_t index, bool markdown, rm_config_key_info *out)
{
    if (index >= CONFIG_KEY_COUNT)
        return false;
    const config_key *key = &config_keys[index];
    *out = (rm_config_key_info){
        .name = key->name,
        .default_value = key->default_value,
        .doc = key->doc,
    };
    text_buffer form = {.out = out->accepted, .size = sizeof out->accepted};
    key->form(key, markdown, &form);
    return true;
}
