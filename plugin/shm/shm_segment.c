/* The plugin's names in /dev/shm and the segments behind them; see
 * shm_segment.h. */
#include "shm_segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "error.h"
#include "process_identity.h"

#define HEX_DIGITS 16
#define PID_DIGITS_MAX 10 /* a positive pid_t */

typedef struct segment_format {
    const char *family;
    const char *word; /* NULL: none */
    bool pid;
    bool id;
    const char *suffix;
    const char *description;
} segment_format;

static const segment_format formats[RM_SEGMENT_KIND_COUNT] = {
#define RM_SEGMENT_FORMAT_ROW(kind, family_, word_, pid_, id_, suffix_, description_)         \
    [kind] = {.family = family_,                                                              \
              .word = word_,                                                                  \
              .pid = pid_,                                                                    \
              .id = id_,                                                                      \
              .suffix = suffix_,                                                              \
              .description = description_},
    RM_SEGMENT_KINDS(RM_SEGMENT_FORMAT_ROW)
#undef RM_SEGMENT_FORMAT_ROW
};

ssize_t (*rm_segment_random_source)(void *buffer, size_t length, unsigned flags) = getrandom;

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

static bool namespace_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

bool rm_segment_namespace_valid(const char *namespace_name)
{
    size_t length = 0;
    for (; namespace_name[length] != '\0'; length++)
        if (!namespace_char(namespace_name[length]) || length >= RM_NAMESPACE_MAX)
            return false;
    return length > 0;
}

const char *rm_segment_kind_description(rm_segment_kind kind)
{
    return (unsigned)kind < RM_SEGMENT_KIND_COUNT ? formats[kind].description : "segment";
}

bool rm_segment_name_format(char out[RM_SEGMENT_NAME_MAX], rm_segment_kind kind,
                            const char *namespace_name, pid_t pid, uint64_t id)
{
    out[0] = '\0';
    if ((unsigned)kind >= RM_SEGMENT_KIND_COUNT || namespace_name == NULL ||
        !rm_segment_namespace_valid(namespace_name))
        return false;
    const segment_format *f = &formats[kind];
    if ((f->pid && pid <= 0) || (f->id && id == 0))
        return false;
    /* Every part is bounded (namespace, word, 10 digits, 16 digits,
     * suffix), so the longest name fits RM_SEGMENT_NAME_MAX. */
    char pid_part[PID_DIGITS_MAX + 8] = ""; /* room for any int, sign included */
    char id_part[HEX_DIGITS + 2] = "";
    if (f->pid)
        snprintf(pid_part, sizeof pid_part, ".%d", (int)pid);
    if (f->id)
        snprintf(id_part, sizeof id_part, ".%016" PRIx64, id);
    int length = snprintf(out, RM_SEGMENT_NAME_MAX, "/%s.%s%s%s%s%s%s", f->family,
                          namespace_name, f->word != NULL ? "." : "",
                          f->word != NULL ? f->word : "", pid_part, id_part, f->suffix);
    if (length < 0 || length >= RM_SEGMENT_NAME_MAX) {
        out[0] = '\0';
        return false;
    }
    return true;
}

/* Moves *cursor past `literal` if the text starts with it. */
static bool take_literal(const char **cursor, const char *literal)
{
    size_t length = strlen(literal);
    if (strncmp(*cursor, literal, length) != 0)
        return false;
    *cursor += length;
    return true;
}

/* ".<pid>": decimal, no sign, no leading zero, 1..INT32_MAX (pid_t). */
static bool take_pid(const char **cursor, pid_t *out)
{
    const char *at = *cursor;
    if (*at++ != '.' || *at < '1' || *at > '9')
        return false;
    int64_t value = 0;
    int digits = 0;
    for (; *at >= '0' && *at <= '9'; at++) {
        if (++digits > PID_DIGITS_MAX)
            return false;
        value = value * 10 + (*at - '0');
    }
    if (value > INT32_MAX)
        return false;
    *out = (pid_t)value;
    *cursor = at;
    return true;
}

/* ".<16 lowercase hex digits>", not all zero. */
static bool take_id(const char **cursor, uint64_t *out)
{
    const char *at = *cursor;
    if (*at++ != '.')
        return false;
    uint64_t value = 0;
    for (int i = 0; i < HEX_DIGITS; i++, at++) {
        char c = *at;
        unsigned digit;
        if (c >= '0' && c <= '9')
            digit = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            digit = (unsigned)(c - 'a' + 10);
        else
            return false;
        value = value << 4 | digit;
    }
    if (value == 0)
        return false;
    *out = value;
    *cursor = at;
    return true;
}

static bool parse_as(const char *name, rm_segment_kind kind, const char *namespace_name,
                     rm_segment_name *out)
{
    const segment_format *f = &formats[kind];
    const char *cursor = name;
    if (!take_literal(&cursor, "/") || !take_literal(&cursor, f->family) ||
        !take_literal(&cursor, "."))
        return false;
    size_t ns_length = 0;
    while (namespace_char(cursor[ns_length]))
        if (++ns_length > RM_NAMESPACE_MAX)
            return false;
    if (ns_length == 0)
        return false;
    if (namespace_name != NULL &&
        (strlen(namespace_name) != ns_length || memcmp(cursor, namespace_name, ns_length) != 0))
        return false;
    memcpy(out->namespace_name, cursor, ns_length);
    out->namespace_name[ns_length] = '\0';
    cursor += ns_length;
    out->kind = kind;
    out->pid = 0;
    out->id = 0;
    if (f->word != NULL && (!take_literal(&cursor, ".") || !take_literal(&cursor, f->word)))
        return false;
    if (f->pid && !take_pid(&cursor, &out->pid))
        return false;
    if (f->id && !take_id(&cursor, &out->id))
        return false;
    return take_literal(&cursor, f->suffix) && *cursor == '\0';
}

bool rm_segment_name_parse(const char *name, const char *namespace_name, unsigned kinds,
                           rm_segment_name *out)
{
    if (name == NULL || strnlen(name, RM_SEGMENT_NAME_MAX) >= RM_SEGMENT_NAME_MAX)
        return false;
    /* The kinds' names are disjoint (family, word, digits, suffix): at most
     * one of them matches. */
    for (unsigned kind = 0; kind < RM_SEGMENT_KIND_COUNT; kind++)
        if ((kinds & RM_SEGMENT_KIND_BIT(kind)) != 0 &&
            parse_as(name, (rm_segment_kind)kind, namespace_name, out))
            return true;
    return false;
}

bool rm_segment_name_sibling(const char *name, rm_segment_kind kind,
                             char out[RM_SEGMENT_NAME_MAX])
{
    out[0] = '\0';
    rm_segment_name parts;
    if (!rm_segment_name_parse(name, NULL, RM_SEGMENT_ALL_KINDS, &parts) ||
        (unsigned)kind >= RM_SEGMENT_KIND_COUNT)
        return false;
    if ((formats[kind].pid && parts.pid == 0) || (formats[kind].id && parts.id == 0))
        return false;
    return rm_segment_name_format(out, kind, parts.namespace_name, parts.pid, parts.id);
}

/* ------------------------------------------------------------------------ */
/* Random ids                                                               */
/* ------------------------------------------------------------------------ */

int32_t rm_segment_random_id(rm_segment_kind kind, const char *namespace_name,
                             const void *error_owner, uint64_t *out)
{
    uint64_t id = 0;
    while (id == 0) {
        ssize_t got = rm_segment_random_source(&id, sizeof id, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got != (ssize_t)sizeof id)
            return rm_error_set(error_owner, RM_E_SYSTEM,
                                "getrandom() for the name of a new %s in namespace '%s' "
                                "failed: %s (a guessable name would let another process "
                                "create or open the segment first)",
                                rm_segment_kind_description(kind), namespace_name,
                                got < 0 ? strerror(errno) : "short read");
    }
    *out = id;
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Creating and opening                                                     */
/* ------------------------------------------------------------------------ */

static int32_t code_for_room(int err)
{
    return err == ENOSPC || err == ENOMEM ? RM_E_NO_MEMORY : RM_E_SYSTEM;
}

/* Sizes the new, checked segment; an errno-style code. */
static int size_segment(int fd, uint64_t bytes, rm_segment_commit commit)
{
    if (commit == RM_SEGMENT_SPARSE)
        return ftruncate(fd, (off_t)bytes) == 0 ? 0 : errno;
    int err;
    do
        err = posix_fallocate(fd, 0, (off_t)bytes);
    while (err == EINTR);
    return err;
}

int32_t rm_segment_create(const char *name, uint64_t bytes, rm_segment_commit commit,
                          const char *what, const void *error_owner, int *out_fd,
                          struct stat *out_file)
{
    *out_fd = -1;
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC,
                      S_IRUSR | S_IWUSR);
    if (fd < 0) {
        int err = errno; /* nothing of ours to unlink: EEXIST is someone else's */
        return rm_error_set(error_owner, code_for_room(err),
                            "cannot create segment %s in /dev/shm (the %s): shm_open() "
                            "failed: %s",
                            name, what, strerror(err));
    }
    int32_t rc = RM_OK;
    struct stat info;
    int err = 0;
    if (fchmod(fd, S_IRUSR | S_IWUSR) != 0) {
        rc = rm_error_set(error_owner, RM_E_SYSTEM,
                          "fchmod(0600) of segment %s (the %s) failed: %s", name, what,
                          strerror(errno));
    } else if (fstat(fd, &info) != 0) {
        rc = rm_error_set(error_owner, RM_E_SYSTEM, "fstat() of segment %s (the %s) failed: %s",
                          name, what, strerror(errno));
    } else if (!S_ISREG(info.st_mode) || info.st_uid != geteuid() ||
               (info.st_mode & 07777) != (S_IRUSR | S_IWUSR) || info.st_size != 0) {
        rc = rm_error_set(error_owner, RM_E_SYSTEM,
                          "segment %s (the %s) is not a new private file (type/mode %o, "
                          "owner %ld, %lld bytes; expected a regular file, mode 600, owner "
                          "%ld, empty)",
                          name, what, (unsigned)info.st_mode, (long)info.st_uid,
                          (long long)info.st_size, (long)geteuid());
    } else if ((err = size_segment(fd, bytes, commit)) != 0) {
        if (commit == RM_SEGMENT_COMMITTED && code_for_room(err) == RM_E_NO_MEMORY)
            rc = rm_error_set(error_owner, RM_E_NO_MEMORY,
                              "/dev/shm has no room for segment %s, the %llu-byte %s: %s",
                              name, (unsigned long long)bytes, what, strerror(err));
        else
            rc = rm_error_set(error_owner, code_for_room(err),
                              "%s() of segment %s (the %s) to %llu bytes failed: %s",
                              commit == RM_SEGMENT_SPARSE ? "ftruncate" : "posix_fallocate",
                              name, what, (unsigned long long)bytes, strerror(err));
    }
    if (rc != RM_OK) {
        close(fd);
        (void)shm_unlink(name);
        return rc;
    }
    if (out_file != NULL)
        *out_file = info;
    *out_fd = fd;
    return RM_OK;
}

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

/* ------------------------------------------------------------------------ */
/* Finding, reaping and unlinking                                           */
/* ------------------------------------------------------------------------ */

int32_t rm_segment_list(const char *namespace_name, unsigned kinds, rm_segment_visit_fn visit,
                        void *user, const void *error_owner)
{
    DIR *directory = opendir(RM_SEGMENT_DIRECTORY);
    if (directory == NULL)
        return rm_error_set(error_owner, RM_E_SYSTEM, "cannot read " RM_SEGMENT_DIRECTORY ": %s",
                            strerror(errno));
    int32_t rc = RM_OK;
    struct dirent *entry;
    while (rc == RM_OK && (entry = readdir(directory)) != NULL) {
        char name[RM_SEGMENT_NAME_MAX];
        size_t length = strnlen(entry->d_name, sizeof name - 1);
        if (length >= sizeof name - 1)
            continue; /* longer than any name of ours */
        name[0] = '/';
        memcpy(name + 1, entry->d_name, length + 1);
        rm_segment_name parts;
        if (rm_segment_name_parse(name, namespace_name, kinds, &parts))
            rc = visit(&parts, name, user);
    }
    closedir(directory);
    return rc;
}

typedef struct reaping {
    rm_segment_owner_gone_fn owner_gone;
    void *user;
    uint64_t *segments;
    uint64_t *bytes;
} reaping;

static int32_t reap_one(const rm_segment_name *segment, const char *name, void *user)
{
    reaping *r = user;
    bool gone;
    if (r->owner_gone != NULL)
        gone = r->owner_gone(segment, name, r->user);
    else
        gone = segment->pid > 0 && !rm_process_alive(segment->pid, 0);
    uint64_t freed = 0;
    if (gone && rm_segment_unlink(name, &freed)) {
        *r->segments += 1;
        *r->bytes += freed;
    }
    return RM_OK;
}

int32_t rm_segment_reap(const char *namespace_name, unsigned kinds,
                        rm_segment_owner_gone_fn owner_gone, void *user,
                        const void *error_owner, uint64_t *segments, uint64_t *bytes)
{
    reaping r = {.owner_gone = owner_gone, .user = user, .segments = segments, .bytes = bytes};
    return rm_segment_list(namespace_name, kinds, reap_one, &r, error_owner);
}

/* The checks and the unlink; `file` NULL: any file of ours. */
static bool unlink_checked(const char *name, const uint64_t file[2], uint64_t *freed_bytes)
{
    char path[sizeof RM_SEGMENT_DIRECTORY + RM_SEGMENT_NAME_MAX];
    if (snprintf(path, sizeof path, RM_SEGMENT_DIRECTORY "%s", name) >= (int)sizeof path)
        return false;
    struct stat info;
    if (lstat(path, &info) != 0 || !S_ISREG(info.st_mode) || info.st_uid != geteuid())
        return false;
    if (file != NULL && ((uint64_t)info.st_dev != file[0] || (uint64_t)info.st_ino != file[1]))
        return false;
    if (shm_unlink(name) != 0)
        return false;
    if (freed_bytes != NULL)
        *freed_bytes = (uint64_t)info.st_blocks * 512u;
    return true;
}

bool rm_segment_unlink(const char *name, uint64_t *freed_bytes)
{
    return unlink_checked(name, NULL, freed_bytes);
}

bool rm_segment_unlink_if_file(const char *name, uint64_t device, uint64_t inode,
                               uint64_t *freed_bytes)
{
    const uint64_t file[2] = {device, inode};
    return unlink_checked(name, file, freed_bytes);
}
