/* Configuration keys: every key valid, invalid and unknown; files. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "temp_file.h"

TestSuite(config, .timeout = 10);

/* Criterion re-executes its workers, so parameters hold their strings
 * inline: a pointer into the parent's data would not survive ASLR. */
struct valid_case {
    char key[32];
    char value[64];
    char effective[64]; /* config_get's answer afterwards */
};

ParameterizedTestParameters(config, valid_values)
{
    static struct valid_case cases[] = {
        {"features", "none", "none"},
        {"features", "shared-memory", "shared-memory"},
        {"features", " shared-memory , shared-memory ", "shared-memory"},
        {"log.level", "error", "error"},
        {"log.level", "debug", "debug"},
        {"registry.ttl_s", "0", "0"},
        {"registry.ttl_s", "0.25", "0.25"},
        {"registry.ttl_s", "31536000", "31536000"},
        {"registry.ttl_s", "0.000000001", "0.000000001"},
        {"registry.ttl_s", "1234.567890120", "1234.56789012"},
        {"registry.max_bytes", "0", "0"},
        {"registry.max_bytes", "1536", "1536"},
        {"registry.max_bytes", "2K", "2048"},
        {"registry.max_bytes", "3MiB", "3145728"},
        {"registry.max_bytes", "1G", "1073741824"},
        {"registry.max_bytes", "4TiB", "4398046511104"},
        {"registry.max_bytes", "18446744073709551615", "18446744073709551615"},
        {"registry.max_models", "0", "0"},
        {"registry.max_models", "1048576", "1048576"},
        {"shm.namespace", "a", "a"},
        {"shm.namespace", "Node-7_x", "Node-7_x"},
        {"shm.namespace", "abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"},
        {"shm.pool_bytes", "4M", "4194304"},
        {"shm.pool_bytes", "2G", "2147483648"},
        {"shm.pool_bytes", "512GiB", "549755813888"},
        {"shm.session_quota", "0", "0"},
        {"shm.session_quota", "64K", "65536"},
        {"shm.max_tensors", "64", "64"},
        {"shm.max_tensors", "1048576", "1048576"},
        {"registry.scope", "process", "process"},
        {"registry.scope", "node", "node"},
        {"registry.namespace", "a", "a"},
        {"registry.namespace", "Node-7_x", "Node-7_x"},
        {"registry.namespace", "abcdefghijklmnopqrstuvwxyz012345",
         "abcdefghijklmnopqrstuvwxyz012345"},
        {"registry.table_entries", "4", "4"},
        {"registry.table_entries", "1024", "1024"},
        {"registry.table_entries", "65536", "65536"},
        {"registry.table_entries", "0016", "16"},
        {"registry.table", "create", "create"},
        {"registry.table", "existing", "existing"},
        {"features", "shared-memory, cuda-ipc", "shared-memory,cuda-ipc"},
        {"cuda.driver", "libcuda.so.1", "libcuda.so.1"},
        {"cuda.driver", "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
         "/usr/lib/x86_64-linux-gnu/libcuda.so.1"},
        {"cuda.pool_bytes", "2M", "2097152"},
        {"cuda.pool_bytes", "1T", "1099511627776"},
        {"cuda.block_bytes", "64M", "67108864"},
    };
    return cr_make_param_array(struct valid_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct valid_case *c, config, valid_values)
{
    if (strstr(c->value, "shared-memory") != NULL &&
        (RM_FEATURES_BUILT & RM_FEATURE_SHARED_MEMORY) == 0)
        cr_skip_test("shared-memory not built");
    if (strstr(c->value, "cuda-ipc") != NULL && (RM_FEATURES_BUILT & RM_FEATURE_CUDA_IPC) == 0)
        cr_skip_test("cuda-ipc not built");
    rm_config config;
    rm_config_defaults(&config);
    cr_assert_eq(rm_config_set(&config, c->key, c->value, "test", NULL), RM_OK,
                 "%s = %s: %s", c->key, c->value, rm_error_last(NULL));
    char text[128];
    size_t needed = 0;
    cr_assert_eq(rm_config_format(&config, c->key, text, sizeof text, &needed, NULL), RM_OK);
    cr_expect_str_eq(text, c->effective);
    cr_expect_eq(needed, strlen(c->effective) + 1);
}

struct invalid_case {
    char key[32];
    char value[48];
    int32_t code;
};

ParameterizedTestParameters(config, invalid_values)
{
    static struct invalid_case cases[] = {
        {"features", "", RM_E_CONFIG_INVALID_VALUE},
        {"features", "model_registry", RM_E_CONFIG_INVALID_VALUE},
        {"features", "shared-memory,", RM_E_CONFIG_INVALID_VALUE},
        {"features", "cuda", RM_E_CONFIG_INVALID_VALUE},
        {"cuda.driver", "", RM_E_CONFIG_INVALID_VALUE},
        {"cuda.driver", "lib cuda.so", RM_E_CONFIG_INVALID_VALUE},
        {"cuda.driver", "libcuda\t.so", RM_E_CONFIG_INVALID_VALUE},
        {"cuda.pool_bytes", "1M", RM_E_CONFIG_INVALID_VALUE},
        {"cuda.block_bytes", "2T", RM_E_CONFIG_INVALID_VALUE},
        {"features", "ALL", RM_E_CONFIG_INVALID_VALUE},
        {"log.level", "verbose", RM_E_CONFIG_INVALID_VALUE},
        {"log.level", "", RM_E_CONFIG_INVALID_VALUE},
        {"log.level", "WARN", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "-1", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "31536000.5", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "1e3", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "nan", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "inf", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "5.", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "0.0000000001", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", ".5", RM_E_CONFIG_INVALID_VALUE},
        {"registry.ttl_s", "30s", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "-5", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "10X", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "1 G", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "16777216T", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "18446744073709551616", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_bytes", "0x10", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_models", "1048577", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_models", "2K", RM_E_CONFIG_INVALID_VALUE},
        {"registry.max_models", "-1", RM_E_CONFIG_INVALID_VALUE},
        {"shm.namespace", "", RM_E_CONFIG_INVALID_VALUE},
        {"shm.namespace", "a.b", RM_E_CONFIG_INVALID_VALUE},
        {"shm.namespace", "a/b", RM_E_CONFIG_INVALID_VALUE},
        {"shm.namespace", "with space", RM_E_CONFIG_INVALID_VALUE},
        {"shm.namespace", "abcdefghijklmnopqrstuvwxyz0123456", RM_E_CONFIG_INVALID_VALUE},
        {"shm.pool_bytes", "4194303", RM_E_CONFIG_INVALID_VALUE},
        {"shm.pool_bytes", "513G", RM_E_CONFIG_INVALID_VALUE},
        {"shm.pool_bytes", "0", RM_E_CONFIG_INVALID_VALUE},
        {"shm.session_quota", "-1", RM_E_CONFIG_INVALID_VALUE},
        {"shm.session_quota", "1X", RM_E_CONFIG_INVALID_VALUE},
        {"shm.max_tensors", "63", RM_E_CONFIG_INVALID_VALUE},
        {"shm.max_tensors", "1048577", RM_E_CONFIG_INVALID_VALUE},
        {"shm.max_tensors", "1K", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "machine", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "Node", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "PROCESS", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "node ", RM_E_CONFIG_INVALID_VALUE},
        {"registry.scope", "node,process", RM_E_CONFIG_INVALID_VALUE},
        {"registry.namespace", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.namespace", "a.b", RM_E_CONFIG_INVALID_VALUE},
        {"registry.namespace", "a/b", RM_E_CONFIG_INVALID_VALUE},
        {"registry.namespace", "with space", RM_E_CONFIG_INVALID_VALUE},
        {"registry.namespace", "abcdefghijklmnopqrstuvwxyz0123456", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "3", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "0", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "65537", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "1K", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "-4", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table_entries", "4294967300", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "exists", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "Existing", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "existing ", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "create,existing", RM_E_CONFIG_INVALID_VALUE},
        {"registry.table", "1", RM_E_CONFIG_INVALID_VALUE},
        {"registry.tables", "existing", RM_E_CONFIG_UNKNOWN_KEY},
        {"registry.table_mode", "existing", RM_E_CONFIG_UNKNOWN_KEY},
        {"node.table", "existing", RM_E_CONFIG_UNKNOWN_KEY},
        {"registry.scopes", "node", RM_E_CONFIG_UNKNOWN_KEY},
        {"registry.ttl", "30", RM_E_CONFIG_UNKNOWN_KEY},
        {"Features", "all", RM_E_CONFIG_UNKNOWN_KEY},
        {"", "x", RM_E_CONFIG_UNKNOWN_KEY},
    };
    return cr_make_param_array(struct invalid_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct invalid_case *c, config, invalid_values)
{
    rm_config config, before;
    rm_config_defaults(&config);
    before = config;
    cr_assert_eq(rm_config_set(&config, c->key, c->value, "entry 3", NULL), c->code,
                 "%s = '%s'", c->key, c->value);
    const char *message = rm_error_last(NULL);
    /* The message names where the pair came from and the key. */
    cr_expect(strstr(message, "entry 3") != NULL, "message: %s", message);
    cr_expect(strstr(message, c->key) != NULL, "message: %s", message);
    if (c->code == RM_E_CONFIG_INVALID_VALUE)
        cr_expect(strstr(message, "expected") != NULL, "message: %s", message);
    else
        cr_expect(strstr(message, "known keys: features") != NULL &&
                      strstr(message, "registry.table, cuda.driver, cuda.pool_bytes, "
                                     "cuda.block_bytes)") != NULL,
                  "every key, the last one too: %s", message);
    /* A rejected value changes nothing. */
    cr_expect(memcmp(&config, &before, sizeof config) == 0);
}

Test(config, a_feature_not_built_is_unavailable)
{
    if (RM_FEATURES_BUILT ==
        (RM_FEATURE_MODEL_REGISTRY | RM_FEATURE_SHARED_MEMORY | RM_FEATURE_CUDA_IPC))
        cr_skip_test("every feature is built");
    const char *missing = (RM_FEATURES_BUILT & RM_FEATURE_MODEL_REGISTRY) == 0 ? "model-registry"
                          : (RM_FEATURES_BUILT & RM_FEATURE_SHARED_MEMORY) == 0
                              ? "shared-memory"
                              : "cuda-ipc";
    rm_config config;
    rm_config_defaults(&config);
    cr_expect_eq(rm_config_set(&config, "features", missing, "entry 0", NULL),
                 RM_E_FEATURE_UNAVAILABLE);
    cr_expect(strstr(rm_error_last(NULL), "was not built") != NULL, "%s", rm_error_last(NULL));
}

Test(config, defaults_are_documented_values)
{
    rm_config config;
    rm_config_defaults(&config);
    cr_expect_eq(config.features, RM_FEATURES_BUILT);
    cr_expect_eq(config.log_level, RM_LOG_WARN);
    cr_expect_float_eq(config.registry_ttl_s, 30.0, 1e-9);
    cr_expect_eq(config.registry_max_bytes, 0);
    cr_expect_eq(config.registry_max_models, 0);
    cr_expect_eq(config.registry_table, RM_REGISTRY_TABLE_CREATE);
    /* 1.2: process scope (1.0 loaders stay valid), namespace "default",
     * 1024 table entries; checked through the formatter too. */
    static const char *const node_defaults[][2] = {
        {"registry.scope", "process"},
        {"registry.namespace", "default"},
        {"registry.table_entries", "1024"},
        {"registry.table", "create"},
    };
    for (size_t i = 0; i < sizeof node_defaults / sizeof node_defaults[0]; i++) {
        char text[64];
        cr_assert_eq(rm_config_format(&config, node_defaults[i][0], text, sizeof text, NULL,
                                      NULL),
                     RM_OK, "%s", node_defaults[i][0]);
        cr_expect_str_eq(text, node_defaults[i][1], "%s", node_defaults[i][0]);
    }
}

/* A value set, formatted and set again gives the same configuration. */
Test(config, node_keys_round_trip_through_format)
{
    static const char *const pairs[][2] = {
        {"registry.scope", "node"},
        {"registry.namespace", "pipeline-7"},
        {"registry.table_entries", "4096"},
    };
    rm_config config;
    rm_config_defaults(&config);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        cr_assert_eq(rm_config_set(&config, pairs[i][0], pairs[i][1], "entry", NULL), RM_OK,
                     "%s: %s", pairs[i][0], rm_error_last(NULL));
    rm_config again;
    rm_config_defaults(&again);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        char text[64];
        cr_assert_eq(rm_config_format(&config, pairs[i][0], text, sizeof text, NULL, NULL),
                     RM_OK);
        cr_expect_str_eq(text, pairs[i][1]);
        cr_assert_eq(rm_config_set(&again, pairs[i][0], text, "again", NULL), RM_OK);
    }
    for (uint32_t index = 0; rm_config_key_at(index) != NULL; index++) {
        const char *key = rm_config_key_at(index);
        char first[128], second[128];
        cr_assert_eq(rm_config_format(&config, key, first, sizeof first, NULL, NULL), RM_OK);
        cr_assert_eq(rm_config_format(&again, key, second, sizeof second, NULL, NULL), RM_OK);
        cr_expect_str_eq(first, second, "%s", key);
    }
    /* The two namespaces are separate keys. */
    char text[64];
    cr_assert_eq(rm_config_format(&config, "shm.namespace", text, sizeof text, NULL, NULL),
                 RM_OK);
    cr_expect_str_eq(text, "default", "registry.namespace changed shm.namespace");
}

Test(config, node_keys_from_a_file)
{
    char *path = write_temp_file("registry.scope = node\nregistry.namespace = asr\n"
                                 "registry.table_entries = 16\nregistry.table = existing\n");
    rm_config config;
    rm_config_defaults(&config);
    cr_assert_eq(rm_config_apply_file(&config, path, NULL), RM_OK, "%s", rm_error_last(NULL));
    const char *expected[][2] = {{"registry.scope", "node"},
                                 {"registry.namespace", "asr"},
                                 {"registry.table_entries", "16"},
                                 {"registry.table", "existing"}};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        char text[64];
        cr_assert_eq(rm_config_format(&config, expected[i][0], text, sizeof text, NULL, NULL),
                     RM_OK);
        cr_expect_str_eq(text, expected[i][1], "%s", expected[i][0]);
    }
    unlink(path);
}

Test(config, key_enumeration_matches_formatter)
{
    rm_config config;
    rm_config_defaults(&config);
    uint32_t count = 0;
    for (const char *key; (key = rm_config_key_at(count)) != NULL; count++) {
        char text[128];
        cr_expect_eq(rm_config_format(&config, key, text, sizeof text, NULL, NULL), RM_OK,
                     "%s", key);
    }
    /* 1.0: 5 keys, 1.1: 4 shm.* keys, 1.2: registry.scope,
     * registry.namespace, registry.table_entries, then registry.table;
     * 1.3: cuda.driver, cuda.pool_bytes, cuda.block_bytes. */
    cr_expect_eq(count, 16);
    cr_expect_str_eq(rm_config_key_at(12), "registry.table");
    cr_expect_str_eq(rm_config_key_at(15), "cuda.block_bytes", "a new key comes last");
    int seen_scope = 0, seen_namespace = 0, seen_entries = 0;
    for (uint32_t i = 0; i < count; i++) {
        seen_scope += strcmp(rm_config_key_at(i), "registry.scope") == 0;
        seen_namespace += strcmp(rm_config_key_at(i), "registry.namespace") == 0;
        seen_entries += strcmp(rm_config_key_at(i), "registry.table_entries") == 0;
    }
    cr_expect(seen_scope == 1 && seen_namespace == 1 && seen_entries == 1,
              "each 1.2 key once: %d %d %d", seen_scope, seen_namespace, seen_entries);
    cr_expect_str_eq(rm_config_key_at(0), "features", "the order of older keys is stable");
}

/* The table's defaults are texts, parsed at every rm_config_defaults():
 * each must be accepted as a host's value and give what the defaults
 * hold. */
Test(config, every_default_is_an_accepted_value)
{
    rm_config defaults;
    rm_config_defaults(&defaults);
    rm_config_key_info info;
    uint32_t index = 0;
    for (; rm_config_key_doc(index, false, &info); index++) {
        cr_expect_str_eq(info.name, rm_config_key_at(index));
        rm_config config;
        memset(&config, 0xa5, sizeof config);
        cr_expect_eq(rm_config_set(&config, info.name, info.default_value, "default", NULL),
                     RM_OK, "%s = %s: %s", info.name, info.default_value, rm_error_last(NULL));
        char from_default[128], from_set[128];
        cr_assert_eq(rm_config_format(&defaults, info.name, from_default, sizeof from_default,
                                      NULL, NULL),
                     RM_OK);
        cr_assert_eq(rm_config_format(&config, info.name, from_set, sizeof from_set, NULL, NULL),
                     RM_OK);
        cr_expect_str_eq(from_default, from_set, "%s", info.name);
        cr_expect(info.doc[0] != '\0' && info.accepted[0] != '\0', "%s is documented",
                  info.name);
    }
    cr_expect_null(rm_config_key_at(index), "rm_config_key_doc covers every key");
}

/* The accepted form that messages give comes from the type and the
 * row's limits, so a changed limit changes the message with it. */
Test(config, accepted_forms_come_from_the_table)
{
    static const char *const expected[][2] = {
        {"registry.table_entries", "an integer from 4 to 65536"},
        {"shm.max_tensors", "an integer from 64 to 1048576"},
        {"shm.pool_bytes", ", from 4M to 512G"},
        {"shm.namespace", "1 to 32 characters of A-Z, a-z, 0-9, '_' and '-'"},
        {"registry.ttl_s", "from 0 to 31536000, at most 9 digits after the point"},
        {"log.level", "one of error, warn, info, debug"},
        {"registry.table", "one of create, existing"},
        {"features", "model-registry, shared-memory, cuda-ipc; or all, none"},
        {"cuda.block_bytes", "from 2M to 1T"},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        rm_config config;
        rm_config_defaults(&config);
        cr_assert_eq(rm_config_set(&config, expected[i][0], "?", "entry 1", NULL),
                     RM_E_CONFIG_INVALID_VALUE);
        cr_expect(strstr(rm_error_last(NULL), expected[i][1]) != NULL, "%s: %s",
                  expected[i][0], rm_error_last(NULL));
    }
    rm_config_key_info info;
    cr_assert(rm_config_key_doc(12, true, &info));
    cr_expect_str_eq(info.accepted, "one of `create`, `existing`");
}

Test(config, format_reports_needed_size_and_leaves_small_buffer_alone)
{
    rm_config config;
    rm_config_defaults(&config);
    char tiny[2] = {'#', '#'};
    size_t needed = 0;
    cr_assert_eq(rm_config_format(&config, "log.level", tiny, sizeof tiny, &needed, NULL),
                 RM_E_BUFFER_TOO_SMALL);
    cr_expect_eq(needed, sizeof "warn");
    cr_expect_eq(tiny[0], '#');
    cr_expect_eq(rm_config_format(&config, "nope", tiny, sizeof tiny, &needed, NULL),
                 RM_E_CONFIG_UNKNOWN_KEY);
}

Test(config, file_with_comments_blanks_and_spaces)
{
    char *path = write_temp_file("# a deployment\n\n  registry.ttl_s = 2.5  \n"
                                 "log.level=debug\n\t# indented comment\n"
                                 "registry.max_bytes = 1G\n");
    rm_config config;
    rm_config_defaults(&config);
    cr_assert_eq(rm_config_apply_file(&config, path, NULL), RM_OK, "%s", rm_error_last(NULL));
    cr_expect_float_eq(config.registry_ttl_s, 2.5, 1e-9);
    cr_expect_eq(config.log_level, RM_LOG_DEBUG);
    cr_expect_eq(config.registry_max_bytes, 1ull << 30);
    unlink(path);
}

struct file_case {
    char content[64];
    int32_t code;
    char message_part[64];
};

ParameterizedTestParameters(config, bad_files)
{
    static struct file_case cases[] = {
        {"registry.ttl_s 5\n", RM_E_CONFIG_FILE, ":1: expected 'key = value'"},
        {"log.level = info\n = 5\n", RM_E_CONFIG_FILE, ":2: missing key"},
        {"\n\nbogus = 1\n", RM_E_CONFIG_UNKNOWN_KEY, ":3: unknown configuration key 'bogus'"},
        {"registry.max_models = many\n", RM_E_CONFIG_INVALID_VALUE, ":1: invalid value 'many'"},
        {"registry.table = maybe\n", RM_E_CONFIG_INVALID_VALUE,
         ":1: invalid value 'maybe' for 'registry.table'"},
    };
    return cr_make_param_array(struct file_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct file_case *c, config, bad_files)
{
    char *path = write_temp_file(c->content);
    rm_config config;
    rm_config_defaults(&config);
    cr_expect_eq(rm_config_apply_file(&config, path, NULL), c->code);
    cr_expect(strstr(rm_error_last(NULL), c->message_part) != NULL, "message: %s",
              rm_error_last(NULL));
    cr_expect(strstr(rm_error_last(NULL), path) != NULL);
    unlink(path);
}

Test(config, missing_file_names_path_and_reason)
{
    rm_config config;
    rm_config_defaults(&config);
    cr_expect_eq(rm_config_apply_file(&config, "/nonexistent/rm.conf", NULL), RM_E_CONFIG_FILE);
    cr_expect(strstr(rm_error_last(NULL), "/nonexistent/rm.conf") != NULL);
    cr_expect(strstr(rm_error_last(NULL), "No such file") != NULL, "%s", rm_error_last(NULL));
}

Test(config, overlong_line_is_rejected)
{
    static char content[6000];
    memset(content, 'a', sizeof content - 2);
    content[sizeof content - 2] = '\n';
    char *path = write_temp_file(content);
    rm_config config;
    rm_config_defaults(&config);
    cr_expect_eq(rm_config_apply_file(&config, path, NULL), RM_E_CONFIG_FILE);
    cr_expect(strstr(rm_error_last(NULL), "line longer than") != NULL);
    unlink(path);
}

Test(config, error_names_and_strings_cover_every_code)
{
#define CHECK_CODE_(code, name, message)                        \
    cr_expect_str_eq(rm_error_name(code), #name);                \
    cr_expect_str_eq(rm_error_string(code), message);
    RM_ERROR_MAP(CHECK_CODE_)
#undef CHECK_CODE_
    cr_expect_str_eq(rm_error_name(-9999), "UNKNOWN");
    cr_expect_str_eq(rm_error_string(42), "unknown error");
}
