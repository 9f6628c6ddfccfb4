/* A temporary file with given contents, for configuration-file tests.
 * Returns a static path (valid until the next call); the test unlinks it. */
#ifndef RM_TEST_TEMP_FILE_H
#define RM_TEST_TEMP_FILE_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline char *write_temp_file(const char *content)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/rm-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

#endif
