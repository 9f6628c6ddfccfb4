/* The `name@device` model key grammar (documented in abi/rm_plugin.h).
 *
 * Normalisation runs whenever the registry meets a key string it has not
 * just seen on that thread, so it is one pass over the bytes with a bitset,
 * no allocation and no locale-dependent calls.
 * Every rejection names the key (escaped, truncated) and the exact problem,
 * because the message is all a host operator sees. */
#include "model_key.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

#define NAME_MAX_BYTES 200
#define DEVICE_INDEX_MAX 1023
/* How much of an offending key a message quotes; the rest becomes "...". */
#define QUOTED_KEY_MAX 64

/* [A-Za-z0-9._/:+-] as a 128-bit set, split into bytes 0..63 and 64..127:
 * one shift and mask per byte on the hot path, computed at compile time. */
#define BITS_FROM_TO(low, high) \
    ((~UINT64_C(0) >> (63 - ((high) & 63))) & (~UINT64_C(0) << ((low) & 63)))
#define BIT_OF(c) (UINT64_C(1) << ((c) & 63))
static const uint64_t name_bytes_low = BITS_FROM_TO('0', '9') | BIT_OF('.') |
                                       BIT_OF('/') | BIT_OF(':') |
                                       BIT_OF('+') | BIT_OF('-');
static const uint64_t name_bytes_high =
    BITS_FROM_TO('A', 'Z') | BITS_FROM_TO('a', 'z') | BIT_OF('_');

static inline bool is_name_byte(unsigned char byte)
{
    if (byte < 64)
        return (name_bytes_low >> byte) & 1;
    if (byte < 128)
        return (name_bytes_high >> (byte - 64)) & 1;
    return false;
}

/* Control bytes, blanks, DEL and anything non-ASCII are never allowed. */
static inline bool is_forbidden_byte(unsigned char byte)
{
    return byte <= 0x20 || byte >= 0x7f;
}

/* Writes a printable rendering of the first `length` bytes of `text` (at
 * most QUOTED_KEY_MAX of them) into `out`: bytes outside 0x20..0x7e and
 * quote/backslash become \xNN, a cut is marked with "...". */
static void quote_bytes(const char *text, size_t length, char *out,
                        size_t out_size)
{
    static const char hex[] = "0123456789abcdef";
    size_t used = 0;
    size_t shown = length < QUOTED_KEY_MAX ? length : QUOTED_KEY_MAX;
    for (size_t i = 0; i < shown; i++) {
        unsigned char byte = (unsigned char)text[i];
        bool plain = byte >= 0x20 && byte < 0x7f && byte != '\'' &&
                     byte != '\\';
        size_t need = plain ? 1 : 4;
        if (used + need + 1 > out_size)
            break;
        if (plain) {
            out[used++] = (char)byte;
        } else {
            out[used++] = '\\';
            out[used++] = 'x';
            out[used++] = hex[byte >> 4];
            out[used++] = hex[byte & 0xf];
        }
    }
    if (shown < length && used + 4 <= out_size) {
        memcpy(out + used, "...", 3);
        used += 3;
    }
    out[used] = '\0';
}

/* Room for QUOTED_KEY_MAX bytes escaped to four characters each. */
#define QUOTED_BUFFER_SIZE (QUOTED_KEY_MAX * 4 + 4)

static int32_t reject(const void *error_owner, const char *key,
                      size_t key_length, const char *problem_format, ...)
    __attribute__((format(printf, 4, 5)));

static int32_t reject(const void *error_owner, const char *key,
                      size_t key_length, const char *problem_format, ...)
{
    char quoted[QUOTED_BUFFER_SIZE];
    quote_bytes(key, key_length, quoted, sizeof quoted);
    char problem[256];
    va_list args;
    va_start(args, problem_format);
    vsnprintf(problem, sizeof problem, problem_format, args);
    va_end(args);
    return rm_error_set(error_owner, RM_E_INVALID_KEY, "model key '%s' %s",
                        quoted, problem);
}

/* Case-insensitive match of `length` bytes against lower-case `word`.
 * OR-ing 0x20 folds only letters here: the bytes were already checked to be
 * printable (0x21..0x7e), and the only other byte that folds onto one of
 * "cpuda:" is 0x1a, a control byte. Avoids locale-dependent tolower(). */
static bool device_word_is(const char *device, const char *word, size_t length)
{
    for (size_t i = 0; i < length; i++) {
        if ((char)(device[i] | 0x20) != word[i])
            return false;
    }
    return true;
}

/* Parses the device part into its normal form in `normal` (at least 16
 * bytes). Returns RM_OK or a rejection. */
static int32_t normalize_device(const char *key, size_t key_length,
                                const char *device, size_t device_length,
                                char *normal, const void *error_owner)
{
    if (device_length == 0)
        return reject(error_owner, key, key_length, "has an empty device");
    if (device_length == 3 && device_word_is(device, "cpu", 3)) {
        memcpy(normal, "cpu", 4);
        return RM_OK;
    }
    if (device_length == 4 && device_word_is(device, "cuda", 4)) {
        memcpy(normal, "cuda:0", 7);
        return RM_OK;
    }
    char quoted_device[QUOTED_BUFFER_SIZE];
    if (device_length > 5 && device_word_is(device, "cuda:", 5)) {
        const char *digits = device + 5;
        size_t digit_count = device_length - 5;
        bool all_digits = true;
        for (size_t i = 0; i < digit_count; i++) {
            if (digits[i] < '0' || digits[i] > '9') {
                all_digits = false;
                break;
            }
        }
        if (all_digits) {
            /* Leading zeros are allowed, so a long run of them is fine;
             * only significant digits can overflow the range. */
            size_t first = 0;
            while (first + 1 < digit_count && digits[first] == '0')
                first++;
            size_t significant = digit_count - first;
            unsigned index = 0;
            if (significant <= 4) {
                for (size_t i = first; i < digit_count; i++)
                    index = index * 10 + (unsigned)(digits[i] - '0');
            }
            if (significant > 4 || index > DEVICE_INDEX_MAX) {
                quote_bytes(digits + first, significant, quoted_device,
                            sizeof quoted_device);
                return reject(error_owner, key, key_length,
                              "has device index %s out of range 0..%d",
                              quoted_device, DEVICE_INDEX_MAX);
            }
            /* By hand: snprintf would cost more than the rest of the
             * normalisation on the registry's hit path. */
            memcpy(normal, "cuda:", 5);
            char reversed[4];
            size_t width = 0;
            do {
                reversed[width++] = (char)('0' + index % 10);
                index /= 10;
            } while (index != 0);
            for (size_t i = 0; i < width; i++)
                normal[5 + i] = reversed[width - 1 - i];
            normal[5 + width] = '\0';
            return RM_OK;
        }
    }
    quote_bytes(device, device_length, quoted_device, sizeof quoted_device);
    return reject(error_owner, key, key_length,
                  "has an unknown device '%s' (expected cpu, cuda or cuda:N)",
                  quoted_device);
}

int32_t rm_model_key_normalize(const char *key, char *out, size_t out_size,
                               const void *error_owner)
{
    if (key == NULL || out == NULL)
        return rm_error_set(error_owner, RM_E_INVALID_ARGUMENT,
                            "model key normalisation needs a key and an "
                            "output buffer (got %s NULL)",
                            key == NULL ? "key" : "output");

    /* Bounded: a hostile key may be megabytes long or a wild pointer past
     * its terminator; nothing beyond RM_MODEL_KEY_MAX bytes is read. */
    size_t key_length = strnlen(key, RM_MODEL_KEY_MAX);
    if (key_length >= RM_MODEL_KEY_MAX)
        return reject(error_owner, key, key_length, "is longer than %d bytes",
                      RM_MODEL_KEY_MAX - 1);
    size_t at_offset = key_length; /* no '@' yet */
    size_t first_bad_name_byte = key_length;
    for (size_t i = 0; i < key_length; i++) {
        unsigned char byte = (unsigned char)key[i];
        if (is_name_byte(byte))
            continue;
        if (is_forbidden_byte(byte))
            return reject(error_owner, key, key_length,
                          "is invalid: byte 0x%02x at offset %zu is not "
                          "allowed",
                          byte, i);
        if (byte == '@') {
            if (at_offset != key_length)
                return reject(error_owner, key, key_length,
                              "has a repeated '@' at offset %zu (exactly one "
                              "is allowed)",
                              i);
            at_offset = i;
        } else if (at_offset == key_length &&
                   first_bad_name_byte == key_length) {
            /* Printable but not a name byte: an error only if it lies in
             * the name; in the device it makes an unknown device. */
            first_bad_name_byte = i;
        }
    }
    if (at_offset == key_length)
        return reject(error_owner, key, key_length,
                      "has no '@' (expected name@device)");
    if (at_offset == 0)
        return reject(error_owner, key, key_length, "has an empty name");
    if (at_offset > NAME_MAX_BYTES)
        return reject(error_owner, key, key_length,
                      "has a name of %zu bytes (at most %d)", at_offset,
                      NAME_MAX_BYTES);
    if (first_bad_name_byte < at_offset)
        return reject(error_owner, key, key_length,
                      "has byte '%c' (0x%02x) at offset %zu, which is not "
                      "allowed in a name (allowed: A-Z a-z 0-9 . _ / : + -)",
                      key[first_bad_name_byte],
                      (unsigned char)key[first_bad_name_byte],
                      first_bad_name_byte);

    char device[16];
    int32_t status =
        normalize_device(key, key_length, key + at_offset + 1,
                         key_length - at_offset - 1, device, error_owner);
    if (status != RM_OK)
        return status;

    size_t device_length = strlen(device);
    size_t needed = at_offset + 1 + device_length + 1;
    if (needed > out_size)
        return rm_error_set(error_owner, RM_E_BUFFER_TOO_SMALL,
                            "normalised model key needs %zu bytes, the "
                            "buffer has %zu",
                            needed, out_size);
    /* memmove: a caller may normalise in place (out == key). */
    memmove(out, key, at_offset + 1);
    memcpy(out + at_offset + 1, device, device_length + 1);
    return RM_OK;
}
