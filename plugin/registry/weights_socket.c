/* The descriptor hand-over of GPU weights: see weights_socket.h. */
#include "weights_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "error.h"
#include "process_identity.h"

#define WIRE_MAGIC UINT64_C(0x3153544847574d52) /* "RMWGHTS1" */
#define WIRE_VERSION 1u
/* A server gives one peer this long to send its request: a peer that
 * connects and says nothing must not stall the others for long. */
#define SERVER_RECEIVE_TIMEOUT_MS 250

typedef struct wire_request {
    uint64_t magic;
    uint32_t version;
    uint32_t reserved;
    uint64_t id;
    char namespace_name[RM_NAMESPACE_MAX + 1];
    char key[RM_MODEL_KEY_MAX];
} wire_request;

typedef struct wire_reply {
    uint64_t magic;
    int32_t status;
    uint32_t reserved;
    uint64_t bytes;
} wire_reply;

struct rm_weights_server {
    rm_weights_lookup_fn lookup;
    int listener;
    int stop_pipe[2]; /* the thread stops when [0] becomes readable */
    pthread_t thread;
};

/* "\0rm_plugin.weights.<pid>.<start time>"; returns the address length. */
static socklen_t socket_address(pid_t pid, uint64_t start_time, struct sockaddr_un *address)
{
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    int length = snprintf(address->sun_path + 1, sizeof address->sun_path - 1,
                          "rm_plugin.weights.%d.%llu", (int)pid,
                          (unsigned long long)start_time);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)length);
}

static void set_timeouts(int fd, unsigned ms)
{
    struct timeval limit = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

static bool peer_credentials(int fd, struct ucred *peer)
{
    socklen_t length = sizeof *peer;
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, peer, &length) == 0 &&
           length == sizeof *peer;
}

/* Both strings must be terminated inside their arrays. */
static bool request_terminated(const wire_request *request)
{
    return memchr(request->namespace_name, '\0', sizeof request->namespace_name) != NULL &&
           memchr(request->key, '\0', sizeof request->key) != NULL;
}

/* ------------------------------------------------------------------------ */
/* Server                                                                   */
/* ------------------------------------------------------------------------ */

static void send_reply(int connection, int32_t status, uint64_t bytes, int fd)
{
    wire_reply reply = {.magic = WIRE_MAGIC, .status = status, .bytes = bytes};
    struct iovec part = {.iov_base = &reply, .iov_len = sizeof reply};
    union {
        struct cmsghdr header;
        char bytes[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1};
    if (fd >= 0) {
        message.msg_control = control.bytes;
        message.msg_controllen = sizeof control.bytes;
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof fd);
    }
    /* A peer that went away meanwhile is no concern of ours. */
    (void)sendmsg(connection, &message, MSG_NOSIGNAL);
}

/* One exchange. The peer must run as this process's effective user. */
static void serve(rm_weights_server *server, int connection)
{
    struct ucred peer;
    if (!peer_credentials(connection, &peer) || peer.uid != geteuid())
        return;
    set_timeouts(connection, SERVER_RECEIVE_TIMEOUT_MS);
    wire_request request;
    ssize_t got = recv(connection, &request, sizeof request, MSG_WAITALL);
    if (got != (ssize_t)sizeof request || request.magic != WIRE_MAGIC ||
        request.version != WIRE_VERSION || !request_terminated(&request)) {
        send_reply(connection, RM_E_INVALID_ARGUMENT, 0, -1);
        return;
    }
    rm_weights_request asked = {.id = request.id};
    memcpy(asked.namespace_name, request.namespace_name, sizeof asked.namespace_name);
    memcpy(asked.key, request.key, sizeof asked.key);
    int fd = -1;
    uint64_t bytes = 0;
    int32_t status = server->lookup(&asked, &fd, &bytes);
    send_reply(connection, status, bytes, status == RM_OK ? fd : -1);
    if (fd >= 0)
        close(fd);
}

static void *server_main(void *argument)
{
    rm_weights_server *server = argument;
    for (;;) {
        struct pollfd waits[2] = {{.fd = server->listener, .events = POLLIN},
                                  {.fd = server->stop_pipe[0], .events = POLLIN}};
        if (poll(waits, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (waits[1].revents != 0)
            break;
        if ((waits[0].revents & POLLIN) == 0)
            continue;
        int connection = accept4(server->listener, NULL, NULL, SOCK_CLOEXEC);
        if (connection < 0)
            continue; /* the peer gave up, or a transient shortage */
        serve(server, connection);
        close(connection);
    }
    return NULL;
}

int32_t rm_weights_server_start(rm_weights_lookup_fn lookup, const void *error_owner,
                                rm_weights_server **out)
{
    *out = NULL;
    rm_weights_server *server = calloc(1, sizeof *server);
    if (server == NULL)
        return rm_error_set(error_owner, RM_E_NO_MEMORY,
                            "out of memory starting the GPU weights server");
    server->lookup = lookup;
    server->stop_pipe[0] = server->stop_pipe[1] = -1;
    struct sockaddr_un address;
    socklen_t length = socket_address(getpid(), rm_process_self_start_time(), &address);
    int32_t status = RM_OK;
    server->listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (server->listener < 0 || bind(server->listener, (struct sockaddr *)&address, length) != 0 ||
        listen(server->listener, 64) != 0) {
        int err = errno;
        status = rm_error_set(error_owner, err == EADDRINUSE ? RM_E_BUSY : RM_E_SYSTEM,
                              "cannot listen on the GPU weights socket @%s: %s",
                              address.sun_path + 1, strerror(err));
    }
    if (status == RM_OK && pipe2(server->stop_pipe, O_CLOEXEC) != 0)
        status = rm_error_set(error_owner, RM_E_SYSTEM,
                              "cannot make the GPU weights server's stop pipe: %s",
                              strerror(errno));
    if (status == RM_OK) {
        sigset_t all_signals;
        sigset_t previous;
        sigfillset(&all_signals);
        pthread_sigmask(SIG_SETMASK, &all_signals, &previous);
        int failure = pthread_create(&server->thread, NULL, server_main, server);
        pthread_sigmask(SIG_SETMASK, &previous, NULL);
        if (failure != 0)
            status = rm_error_set(error_owner, RM_E_SYSTEM,
                                  "cannot start the GPU weights server thread: %s",
                                  strerror(failure));
        else
            pthread_setname_np(server->thread, "rm-weights");
    }
    if (status != RM_OK) {
        if (server->listener >= 0)
            close(server->listener);
        if (server->stop_pipe[0] >= 0) {
            close(server->stop_pipe[0]);
            close(server->stop_pipe[1]);
        }
        free(server);
        return status;
    }
    *out = server;
    return RM_OK;
}

void rm_weights_server_stop(rm_weights_server *server)
{
    if (server == NULL)
        return;
    char stop = 1;
    while (write(server->stop_pipe[1], &stop, 1) < 0 && errno == EINTR) {
    }
    pthread_join(server->thread, NULL);
    close(server->listener);
    close(server->stop_pipe[0]);
    close(server->stop_pipe[1]);
    free(server);
}

void rm_weights_server_forget(rm_weights_server *server)
{
    if (server == NULL)
        return;
    close(server->listener);
    close(server->stop_pipe[0]);
    close(server->stop_pipe[1]);
    free(server);
}

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

/* The descriptor of a received SCM_RIGHTS message, -1 if none; any other
 * descriptors that came with it are closed. */
static int received_descriptor(struct msghdr *message)
{
    int kept = -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(message); header != NULL;
         header = CMSG_NXTHDR(message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (header->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(header) + i * sizeof(int), sizeof fd);
            if (kept < 0)
                kept = fd;
            else
                close(fd);
        }
    }
    return kept;
}

int32_t rm_weights_fetch(pid_t pid, uint64_t start_time, const rm_weights_request *request,
                         int *out_fd, uint64_t *out_bytes, char *why, size_t why_size)
{
    *out_fd = -1;
    *out_bytes = 0;
    struct sockaddr_un address;
    socklen_t length = socket_address(pid, start_time, &address);
    int connection = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connection < 0) {
        snprintf(why, why_size, "socket(): %s", strerror(errno));
        return RM_E_SYSTEM;
    }
    set_timeouts(connection, RM_WEIGHTS_FETCH_TIMEOUT_MS);
    int32_t status = RM_OK;
    if (connect(connection, (struct sockaddr *)&address, length) != 0) {
        int err = errno;
        snprintf(why, why_size, "connect(@%s): %s", address.sun_path + 1, strerror(err));
        status = err == ECONNREFUSED || err == ENOENT ? RM_E_NOT_FOUND : RM_E_SYSTEM;
    }
    struct ucred peer;
    if (status == RM_OK && (!peer_credentials(connection, &peer) || peer.pid != pid ||
                            peer.uid != geteuid())) {
        snprintf(why, why_size, "the socket @%s is not pid %d's of this user",
                 address.sun_path + 1, (int)pid);
        status = RM_E_SYSTEM;
    }
    wire_request wire = {.magic = WIRE_MAGIC, .version = WIRE_VERSION, .id = request->id};
    snprintf(wire.namespace_name, sizeof wire.namespace_name, "%s", request->namespace_name);
    snprintf(wire.key, sizeof wire.key, "%s", request->key);
    if (status == RM_OK &&
        send(connection, &wire, sizeof wire, MSG_NOSIGNAL) != (ssize_t)sizeof wire) {
        snprintf(why, why_size, "send(): %s", strerror(errno));
        status = RM_E_SYSTEM;
    }
    wire_reply reply;
    int fd = -1;
    if (status == RM_OK) {
        struct iovec part = {.iov_base = &reply, .iov_len = sizeof reply};
        union {
            struct cmsghdr header;
            char bytes[CMSG_SPACE(4 * sizeof(int))];
        } control;
        struct msghdr message = {.msg_iov = &part,
                                 .msg_iovlen = 1,
                                 .msg_control = control.bytes,
                                 .msg_controllen = sizeof control.bytes};
        ssize_t got = recvmsg(connection, &message, MSG_WAITALL | MSG_CMSG_CLOEXEC);
        int err = errno;
        if (got >= 0)
            fd = received_descriptor(&message);
        if (got < 0) {
            snprintf(why, why_size, "no answer: %s",
                     err == EAGAIN || err == EWOULDBLOCK ? "timed out" : strerror(err));
            status = RM_E_SYSTEM;
        } else if (got != (ssize_t)sizeof reply || reply.magic != WIRE_MAGIC ||
                   (message.msg_flags & MSG_CTRUNC) != 0) {
            snprintf(why, why_size, "a malformed answer (%zd bytes)", got);
            status = RM_E_SYSTEM;
        } else if (reply.status != RM_OK) {
            snprintf(why, why_size, "it answered %s", rm_error_name(reply.status));
            status = reply.status == RM_E_NOT_FOUND ? RM_E_NOT_FOUND : RM_E_SYSTEM;
        } else if (fd < 0) {
            snprintf(why, why_size, "it answered without a descriptor");
            status = RM_E_SYSTEM;
        }
    }
    close(connection);
    if (status != RM_OK) {
        if (fd >= 0)
            close(fd);
        return status;
    }
    *out_fd = fd;
    *out_bytes = reply.bytes;
    return RM_OK;
}
