/* Opening a segment the plugin made; see shm_segment.h. */
#include "shm_segment.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int rm_segment_open_owned(const char *name, bool writable, mode_t mode, uint64_t *out_size)
{
    int fd = shm_open(name, (writable ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                      0);
    if (fd < 0)
        return -1;
    struct stat info;
    int err = 0;
    if (fstat(fd, &info) != 0)
        err = errno;
    else if (!S_ISREG(info.st_mode))
        err = EINVAL;
    else if (info.st_uid != geteuid() || (info.st_mode & 07777) != mode)
        err = EPERM;
    if (err != 0) {
        close(fd);
        errno = err;
        return -1;
    }
    *out_size = (uint64_t)info.st_size;
    return fd;
}
