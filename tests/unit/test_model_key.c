/* The `name@device` key grammar: every accepted form and its normalisation,
 * every class of rejection and its message. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "error.h"
#include "model_key.h"

TestSuite(model_key, .timeout = 10);

/* Messages are recorded per owner; any stable address will do. */
static const int error_owner_token;
#define OWNER ((const void *)&error_owner_token)

/* Fixed-size arrays rather than pointers: Criterion hands parameters to its
 * worker processes by copying them. */
typedef struct valid_case {
    char input[64];
    char normalised[64];
} valid_case;

ParameterizedTestParameters(model_key, accepts_and_normalises)
{
    static valid_case cases[] = {
        {"resnet50@cpu", "resnet50@cpu"},
        {"resnet50@CPU", "resnet50@cpu"},
        {"m@Cpu", "m@cpu"},
        {"m@cuda", "m@cuda:0"},
        {"m@CUDA", "m@cuda:0"},
        {"m@Cuda", "m@cuda:0"},
        {"m@cuda:0", "m@cuda:0"},
        {"m@cuda:1", "m@cuda:1"},
        {"m@CUDA:1", "m@cuda:1"},
        {"m@cuda:007", "m@cuda:7"},
        {"m@cuda:0000", "m@cuda:0"},
        {"m@cuda:10", "m@cuda:10"},
        {"m@cuda:1023", "m@cuda:1023"},
        {"m@cuda:01023", "m@cuda:1023"},
        {"x@cuda:0000000000000000000000000000042", "x@cuda:42"},
        /* The name keeps its case and may hold every allowed punctuation
         * byte, ':' included (the split is at the one '@'). */
        {"Org/Model-v1.2_final+x:tag@cpu", "Org/Model-v1.2_final+x:tag@cpu"},
        {"a:b@cuda:3", "a:b@cuda:3"},
        {"cuda:1@cpu", "cuda:1@cpu"},
        {"ABCxyz019._/:+-@cuda:2", "ABCxyz019._/:+-@cuda:2"},
        {"-@cpu", "-@cpu"},
    };
    return cr_make_param_array(valid_case, cases,
                               sizeof cases / sizeof cases[0]);
}

ParameterizedTest(valid_case *c, model_key, accepts_and_normalises)
{
    char out[RM_MODEL_KEY_MAX];
    memset(out, 'X', sizeof out);
    int32_t status = rm_model_key_normalize(c->input, out, sizeof out, OWNER);
    cr_assert_eq(status, RM_OK, "'%s' rejected: %s", c->input,
                 rm_error_last(OWNER));
    cr_assert_str_eq(out, c->normalised);
    /* Normalising is idempotent: the normal form is its own normal form. */
    char again[RM_MODEL_KEY_MAX];
    cr_assert_eq(rm_model_key_normalize(out, again, sizeof again, OWNER),
                 RM_OK);
    cr_assert_str_eq(again, c->normalised);
}

typedef struct invalid_case {
    char input[64];
    /* A part of the message that only this kind of rejection produces. */
    char message_part[96];
} invalid_case;

ParameterizedTestParameters(model_key, rejects_with_a_specific_message)
{
    static invalid_case cases[] = {
        /* no '@' */
        {"", "model key '' has no '@'"},
        {"resnet", "model key 'resnet' has no '@'"},
        {"resnet:cpu", "has no '@'"},
        /* repeated '@' */
        {"a@b@cpu", "repeated '@' at offset 3"},
        {"a@@cpu", "repeated '@' at offset 2"},
        {"@@", "repeated '@'"},
        /* empty name or device */
        {"@cpu", "model key '@cpu' has an empty name"},
        {"@", "has an empty name"},
        {"m@", "has an empty device"},
        /* unknown devices */
        {"m@gpu", "unknown device 'gpu' (expected cpu, cuda or cuda:N)"},
        {"m@cpu0", "unknown device 'cpu0'"},
        {"m@cpu:0", "unknown device 'cpu:0'"},
        {"m@cuda:", "unknown device 'cuda:'"},
        {"m@cuda:-1", "unknown device 'cuda:-1'"},
        {"m@cuda:+1", "unknown device 'cuda:+1'"},
        {"m@cuda:1x", "unknown device 'cuda:1x'"},
        {"m@cuda:0x1", "unknown device 'cuda:0x1'"},
        {"m@cuda::1", "unknown device 'cuda::1'"},
        {"m@cud\xd0\xb0", "byte 0xd0 at offset 5 is not allowed"}, /* Cyrillic a */
        {"m@cuda1", "unknown device 'cuda1'"},
        {"m@cuda!", "unknown device 'cuda!'"},
        /* device index out of range */
        {"m@cuda:5000", "device index 5000 out of range 0..1023"},
        {"m@cuda:1024", "device index 1024 out of range 0..1023"},
        {"m@cuda:0005000", "device index 5000 out of range 0..1023"},
        {"m@cuda:99999999999999999999999", "device index 99999999999999999999999 out of range"},
        /* bytes never allowed, wherever they are */
        {"abc\a@cpu", "byte 0x07 at offset 3 is not allowed"},
        {"mo del@cpu", "byte 0x20 at offset 2 is not allowed"},
        {"m@cpu ", "byte 0x20 at offset 5 is not allowed"},
        {" m@cpu", "byte 0x20 at offset 0 is not allowed"},
        {"m\t@cpu", "byte 0x09 at offset 1 is not allowed"},
        {"m@cpu\n", "byte 0x0a at offset 5 is not allowed"},
        {"m\x7f@cpu", "byte 0x7f at offset 1 is not allowed"},
        {"m\xc3\xa9@cpu", "byte 0xc3 at offset 1 is not allowed"},
        {"m\xff@cpu", "byte 0xff at offset 1 is not allowed"},
        /* printable, but not a name byte */
        {"m!@cpu", "byte '!' (0x21) at offset 1, which is not allowed in a name"},
        {"a,b@cpu", "byte ',' (0x2c) at offset 1"},
        {"a\\b@cpu", "byte '\\' (0x5c) at offset 1"},
        {"a=b@cpu", "byte '=' (0x3d) at offset 1"},
        {"a#b@cpu", "byte '#' (0x23) at offset 1"},
    };
    return cr_make_param_array(invalid_case, cases,
                               sizeof cases / sizeof cases[0]);
}

ParameterizedTest(invalid_case *c, model_key, rejects_with_a_specific_message)
{
    char out[RM_MODEL_KEY_MAX] = "untouched";
    rm_error_clear();
    int32_t status = rm_model_key_normalize(c->input, out, sizeof out, OWNER);
    cr_assert_eq(status, RM_E_INVALID_KEY, "'%s' gave %d", c->input, status);
    const char *message = rm_error_last(OWNER);
    cr_assert(strstr(message, c->message_part) != NULL,
              "message for '%s' is \"%s\", expected it to contain \"%s\"",
              c->input, message, c->message_part);
    cr_assert(strncmp(message, "model key '", 11) == 0,
              "message does not name the key: \"%s\"", message);
    cr_assert_str_eq(out, "untouched", "output written on failure");
}

/* Builds "<name_bytes x 'n'>@<device>" into `key`. */
static void build_key(char *key, size_t name_bytes, const char *device)
{
    memset(key, 'n', name_bytes);
    key[name_bytes] = '@';
    strcpy(key + name_bytes + 1, device);
}

Test(model_key, name_of_200_bytes_is_the_longest)
{
    char key[512];
    char out[RM_MODEL_KEY_MAX];
    build_key(key, 200, "cpu");
    cr_assert_eq(rm_model_key_normalize(key, out, sizeof out, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_assert_str_eq(out, key);

    build_key(key, 201, "cpu");
    cr_assert_eq(rm_model_key_normalize(key, out, sizeof out, OWNER),
                 RM_E_INVALID_KEY);
    cr_assert(strstr(rm_error_last(OWNER), "name of 201 bytes (at most 200)"),
              "%s", rm_error_last(OWNER));
}

Test(model_key, whole_key_of_255_bytes_is_the_longest)
{
    /* 200-byte name + '@' + "cuda:" + 49 digits = 255 bytes: accepted, and
     * the leading zeros go. */
    char key[512];
    char out[RM_MODEL_KEY_MAX];
    char device[64] = "cuda:";
    memset(device + 5, '0', 48);
    strcpy(device + 53, "1");
    build_key(key, 200, device);
    cr_assert_eq(strlen(key), 255);
    cr_assert_eq(rm_model_key_normalize(key, out, sizeof out, OWNER), RM_OK,
                 "%s", rm_error_last(OWNER));
    cr_assert_eq(strlen(out), 200 + strlen("@cuda:1"));
    cr_assert_str_eq(out + 200, "@cuda:1");

    /* One more leading zero makes 256 bytes. */
    memmove(device + 6, device + 5, strlen(device + 5) + 1);
    device[5] = '0';
    build_key(key, 200, device);
    cr_assert_eq(strlen(key), 256);
    cr_assert_eq(rm_model_key_normalize(key, out, sizeof out, OWNER),
                 RM_E_INVALID_KEY);
    cr_assert(strstr(rm_error_last(OWNER), "longer than 255 bytes"), "%s",
              rm_error_last(OWNER));
}

Test(model_key, very_long_key_is_rejected_with_a_truncated_quote)
{
    static char key[100000];
    memset(key, 'k', sizeof key - 1);
    char out[RM_MODEL_KEY_MAX];
    cr_assert_eq(rm_model_key_normalize(key, out, sizeof out, OWNER),
                 RM_E_INVALID_KEY);
    const char *message = rm_error_last(OWNER);
    cr_assert(strstr(message, "longer than 255 bytes"), "%s", message);
    cr_assert(strstr(message, "kkk...'"), "quote not truncated: %s", message);
    cr_assert_lt(strlen(message), 200);
}

Test(model_key, control_bytes_are_escaped_in_the_message)
{
    char out[RM_MODEL_KEY_MAX];
    cr_assert_eq(rm_model_key_normalize("a\x01'b@cpu", out, sizeof out, OWNER),
                 RM_E_INVALID_KEY);
    cr_assert(strstr(rm_error_last(OWNER), "model key 'a\\x01\\x27b@cpu'"),
              "%s", rm_error_last(OWNER));
}

Test(model_key, huge_device_index_is_quoted_as_given)
{
    char out[RM_MODEL_KEY_MAX];
    cr_assert_eq(rm_model_key_normalize("m@cuda:99999", out, sizeof out, OWNER),
                 RM_E_INVALID_KEY);
    cr_assert(strstr(rm_error_last(OWNER), "device index 99999 out of range"),
              "%s", rm_error_last(OWNER));
}

Test(model_key, null_arguments_are_invalid_arguments)
{
    char out[RM_MODEL_KEY_MAX];
    cr_assert_eq(rm_model_key_normalize(NULL, out, sizeof out, OWNER),
                 RM_E_INVALID_ARGUMENT);
    cr_assert_neq(rm_error_last(OWNER)[0], '\0');
    cr_assert_eq(rm_model_key_normalize("m@cpu", NULL, 16, OWNER),
                 RM_E_INVALID_ARGUMENT);
}

Test(model_key, output_buffer_must_fit_the_normalised_key)
{
    /* "m@cuda" grows to "m@cuda:0": 9 bytes with the NUL. */
    char out[16];
    memset(out, 'X', sizeof out);
    cr_assert_eq(rm_model_key_normalize("m@cuda", out, 8, OWNER),
                 RM_E_BUFFER_TOO_SMALL);
    cr_assert(strstr(rm_error_last(OWNER), "needs 9 bytes"), "%s",
              rm_error_last(OWNER));
    cr_assert_eq(out[0], 'X', "output written on failure");
    cr_assert_eq(rm_model_key_normalize("m@cuda", out, 9, OWNER), RM_OK);
    cr_assert_str_eq(out, "m@cuda:0");
    cr_assert_eq(rm_model_key_normalize("m@cpu", out, 0, OWNER),
                 RM_E_BUFFER_TOO_SMALL);
    /* A grammar error wins over a small buffer. */
    cr_assert_eq(rm_model_key_normalize("m@gpu", out, 1, OWNER),
                 RM_E_INVALID_KEY);
}

Test(model_key, normalises_in_place)
{
    char key[RM_MODEL_KEY_MAX] = "Model@CUDA:0012";
    cr_assert_eq(rm_model_key_normalize(key, key, sizeof key, OWNER), RM_OK);
    cr_assert_str_eq(key, "Model@cuda:12");
}

Test(model_key, messages_are_recorded_for_the_given_owner_only)
{
    static const int other_owner;
    char out[RM_MODEL_KEY_MAX];
    rm_error_clear();
    cr_assert_eq(rm_model_key_normalize("bad", out, sizeof out, &other_owner),
                 RM_E_INVALID_KEY);
    cr_assert_str_eq(rm_error_last(OWNER), "");
    cr_assert(strstr(rm_error_last(&other_owner), "'bad'"));
}
