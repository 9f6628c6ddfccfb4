/* The peer's side of a peer process (registry_peer, tensor_peer): whole
 * lines on stdout for the test to read, and the "--set KEY=VALUE"
 * arguments that become context entries. */
#ifndef RM_TEST_PEER_HOST_H
#define RM_TEST_PEER_HOST_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "peer_process.h" /* peer_send_all */
#include "plugin_loader.h"

/* Lines longer than this are cut: the test reads lines of at most
 * PEER_LINE_BYTES (peer_process.h), and both are 8192. */
#define PEER_HOST_LINE_BYTES 8192

/* One whole line on stdout in one write(); newlines inside become blanks,
 * so that one call is one line for the test. A line longer than PIPE_BUF
 * can still be split, so a peer with threads holds a lock around this. */
static inline void peer_host_say_v(const char *format, va_list args)
{
    char line[PEER_HOST_LINE_BYTES];
    int length = vsnprintf(line, sizeof line - 1, format, args);
    if (length < 0)
        length = 0;
    if ((size_t)length > sizeof line - 2)
        length = (int)(sizeof line - 2);
    for (int i = 0; i < length; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[length++] = '\n';
    (void)peer_send_all(STDOUT_FILENO, line, (size_t)length);
}

/* "KEY=VALUE" (split in place) as one more of `capacity` entries; false
 * when it has no '=' or there is no room. */
static inline bool peer_host_add_setting(char *pair, rm_config_entry *entries, uint64_t *count,
                                         uint64_t capacity)
{
    char *equals = strchr(pair, '=');
    if (equals == NULL || *count >= capacity)
        return false;
    *equals = '\0';
    entries[(*count)++] = (rm_config_entry){.key = pair, .value = equals + 1};
    return true;
}

#endif
