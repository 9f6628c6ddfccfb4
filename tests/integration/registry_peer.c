/* registry_peer: a small host that test_registry_node_processes runs as a
 * separate process (fork + exec) to load, attach, hold, write into and die
 * with node-scope models through the real rm_plugin.so ($RM_PLUGIN_PATH).
 *
 *   registry_peer --ns NS [--set KEY=VALUE]... load KEY [option]...
 *   registry_peer --ns NS [--set KEY=VALUE]... lock-and-die
 *   registry_peer --ns NS [--set KEY=VALUE]... idle
 *   registry_peer --ns NS [--set KEY=VALUE]... churn KEY --seconds S --log PATH
 *                 [--bytes N]
 *
 * The first three create one context: registry.scope = node,
 * registry.namespace = NS, then the --set pairs ($RM_PLUGIN_CONFIG
 * ignored); churn creates and destroys such contexts in a loop.
 *
 * load: model_get_or_load(KEY) with a loader that counts its call (one
 * byte appended to the counter file, O_APPEND, so that the calls of all
 * processes are the file's size), prints "loading PID KEY", sleeps, asks
 * for a buffer of --bytes, writes its first half, prints "half PID KEY",
 * and then, as the options say, dies, waits, fails or writes the rest.
 * The model of KEY is pattern stream rp_model_seed(KEY, --seed)
 * (registry_peer_protocol.h); after the call the peer hashes the bytes at
 * *out_model and prints one result line per key. Options:
 *   --bytes N               model size (default 65536)
 *   --seed S                pattern seed (default 0)
 *   --count K               load K keys: KEY, then KEY with "-1" .. "-(K-1)"
 *                           put before its '@'; all are held together
 *   --counter PATH          the counter file
 *   --barrier-fd FD         after "ready", read FD until end of file, then
 *                           call model_get_or_load (a start barrier)
 *   --sleep-ms N            the loader sleeps N ms before alloc_buffer
 *   --loader-barrier-fd FD  after "half", the loader reads FD until end of
 *                           file
 *   --fail CODE             after "half" (and the loader barrier), the
 *                           loader returns CODE
 *   --die-half              after "half", the loader waits forever (for its
 *                           SIGKILL)
 *   --hold none|stdin|forever  after the results: release at once (none,
 *                           the default), hold until stdin ends, or hold
 *                           until killed
 *   --write                 after the results: print "writing ADDR" and
 *                           write one byte in the middle of the first
 *                           model; a read-only mapping kills the peer with
 *                           SIGSEGV (its handler prints "segv code=C
 *                           in_model=0|1" first); else it prints "wrote"
 *   --evict                 after the release, model_evict() every key and
 *                           print "evicted rc=NAME" for each
 *
 * Lines on stdout:
 *   ready PID                       the context exists; model_get_or_load
 *                                   (or the barrier) comes next
 *   loading PID KEY / half PID KEY  from the loader
 *   result key=K rc=RC name=NAME bytes=N sum=HEX ok=0|1 ms=MS cpu_ms=MS
 *          calls=N model=ADDR hits=.. misses=.. loads=.. load_failures=..
 *          attaches=.. takeovers=.. dead_references=.. lock_recoveries=..
 *          msg=LAST_ERROR
 *       (ms and cpu_ms: wall and process CPU time of the call; calls: this
 *       process's loader calls so far; ok=1 when rc is RM_OK and the bytes
 *       are the pattern; sum: the hash of the bytes, 0 on error; the
 *       counters: registry_metrics after the call)
 *   holding                         holding, as --hold says
 *   bye dead_references=.. lock_recoveries=.. evictions=.. takeovers=..
 *                                   stdin ended: released, metrics before
 *                                   context_destroy
 *
 * lock-and-die: maps /dev/shm/rmreg.NS.table (plugin/registry/node_table.h), locks
 * the header's robust mutex, prints "locked PID" and SIGKILLs itself while
 * holding it.
 *
 * idle: prints "ready PID" once its context exists (it is attached to the
 * node table, holding no model) and waits until stdin ends (then "bye")
 * or it is killed.
 *
 * churn: until S seconds have passed, one cycle after another: create a
 * context, model_get_or_load(KEY), check the model, hold it 0 to 1 ms,
 * release it, model_evict(KEY) (RM_E_BUSY and RM_E_NOT_FOUND are fine:
 * another process holds it, or evicted it), destroy the context, pause 0
 * to 2 ms. Its loader stamps the model: the first 8 bytes are a stamp
 * unique to the load (pid << 32 | cycle), the rest tp_pattern(stamp, 8,
 * ...) (the pattern stream from offset 8). Each loader call appends
 * "load STAMP" to the log file, each cycle (after its release) "hold
 * STAMP T1 T2": the stamp it read and CLOCK_MONOTONIC nanoseconds just
 * after the get returned and just before the release (one write per line,
 * O_APPEND, so the lines of all peers stay whole). A call that fails
 * otherwise, or a model that is not its stamp's pattern, is a "fail"
 * line and exit status 1. At the end: "churned cycles=N loads=L".
 *
 * Anything else that goes wrong is "fail WHY". The exit status is 0 when
 * every step ran (whatever the plugin returned: the result lines say), 1
 * when a model's bytes are wrong, 2 when the plugin cannot be loaded, the
 * context not created or the arguments are wrong. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "node_table.h"
#include "peer_host.h"
#include "plugin_env.h"
#include "registry_peer_protocol.h"

#define MAX_KEYS 64

typedef enum hold_mode { HOLD_NONE, HOLD_STDIN, HOLD_FOREVER } hold_mode;

typedef struct peer_options {
    const char *ns;
    const char *key;
    uint64_t bytes;
    uint64_t seed;
    int count;
    const char *counter;
    int barrier_fd;
    int loader_barrier_fd;
    long sleep_ms;
    bool fail;
    int32_t fail_code;
    bool die_half;
    hold_mode hold;
    bool write;
    bool evict;
    long seconds;
    const char *log;
} peer_options;

static const rm_plugin_v1 *vt;
static rm_context *context;
static peer_options opts = {.bytes = 65536, .count = 1, .barrier_fd = -1, .loader_barrier_fd = -1};
static uint64_t loader_calls;

/* For the SIGSEGV handler: the first model's mapping. */
static volatile uintptr_t model_start, model_end;

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

/* One whole line on stdout (one write(): the peer's lines come from one
 * thread, or from the signal handler, which writes its own). */
__attribute__((format(printf, 1, 2))) static void say(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    peer_host_say_v(format, args);
    va_end(args);
}

static uint64_t clock_ns(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec left = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

/* Reads `fd` until end of file: a barrier that the test opens by closing
 * the other end. */
static void wait_for_end_of(int fd)
{
    char scratch[64];
    for (;;) {
        ssize_t got = read(fd, scratch, sizeof scratch);
        if (got == 0 || (got < 0 && errno != EINTR))
            return;
    }
}

/* ------------------------------------------------------------------------ */
/* The loader                                                               */
/* ------------------------------------------------------------------------ */

static void count_loader_call(void)
{
    loader_calls++;
    if (opts.counter == NULL)
        return;
    int fd = open(opts.counter, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say("fail counter %s: %s", opts.counter, strerror(errno));
        return;
    }
    (void)peer_send_all(fd, "x", 1);
    close(fd);
}

static int32_t peer_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)user;
    count_loader_call();
    say("loading %ld %s", (long)getpid(), key);
    if (opts.sleep_ms > 0)
        sleep_ms(opts.sleep_ms);
    if (!RM_LOADED_MODEL_HAS_BUFFER(out)) {
        say("fail the plugin offers no loader buffer");
        return RM_E_NOT_SHAREABLE;
    }
    void *buffer = NULL;
    int32_t rc = out->alloc_buffer(out, opts.bytes, &buffer);
    if (rc != RM_OK)
        return rc;
    uint64_t seed = rp_model_seed(key, opts.seed);
    size_t half = (size_t)(opts.bytes / 2);
    tp_pattern(seed, 0, buffer, half);
    say("half %ld %s", (long)getpid(), key);
    if (opts.die_half)
        for (;;)
            pause();
    if (opts.loader_barrier_fd >= 0)
        wait_for_end_of(opts.loader_barrier_fd);
    if (opts.fail)
        return opts.fail_code;
    tp_pattern(seed, half, (uint8_t *)buffer + half, (size_t)(opts.bytes - half));
    return RM_OK;
}

/* ------------------------------------------------------------------------ */
/* Writing into the model                                                   */
/* ------------------------------------------------------------------------ */

static size_t format_unsigned(char *out, uint64_t value)
{
    char digits[24];
    size_t count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    for (size_t i = 0; i < count; i++)
        out[i] = digits[count - 1 - i];
    return count;
}

/* Says where and why the fault happened (async-signal-safe), then returns:
 * SA_RESETHAND has put back the default action, so the faulting write runs
 * again and the process dies of SIGSEGV. */
static void on_segv(int signal_number, siginfo_t *info, void *ucontext)
{
    (void)signal_number;
    (void)ucontext;
    char line[96];
    size_t length = 0;
    memcpy(line, "segv code=", 10);
    length = 10;
    length += format_unsigned(line + length, (uint64_t)(info->si_code < 0 ? 0 : info->si_code));
    memcpy(line + length, " in_model=", 10);
    length += 10;
    uintptr_t at = (uintptr_t)info->si_addr;
    line[length++] = (at >= model_start && at < model_end) ? '1' : '0';
    line[length++] = '\n';
    (void)peer_send_all(STDOUT_FILENO, line, length);
}

static void write_into(uint8_t *model)
{
    struct sigaction action = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_RESETHAND};
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, NULL);
    model_start = (uintptr_t)model;
    model_end = (uintptr_t)model + (uintptr_t)opts.bytes;
    volatile uint8_t *target = model + opts.bytes / 2;
    say("writing %p", (void *)model);
    *target = (uint8_t)(*target ^ 0xff);
    say("wrote");
}

/* ------------------------------------------------------------------------ */
/* Modes                                                                    */
/* ------------------------------------------------------------------------ */

static void metrics_of(rm_registry_metrics *metrics)
{
    *metrics = (rm_registry_metrics)RM_STRUCT_INIT(rm_registry_metrics);
    int32_t rc = vt->registry_metrics(context, metrics);
    if (rc != RM_OK)
        say("fail registry_metrics: %s", vt->error_name(rc));
}

/* The i-th key: KEY, or KEY with "-i" before its '@'. */
static void key_at(int i, char *out, size_t size)
{
    const char *at = strchr(opts.key, '@');
    if (i == 0 || at == NULL) {
        snprintf(out, size, "%s", opts.key);
        return;
    }
    snprintf(out, size, "%.*s-%d%s", (int)(at - opts.key), opts.key, i, at);
}

static int run_load(void)
{
    rm_model_handle *handles[MAX_KEYS] = {0};
    uint8_t *models[MAX_KEYS] = {0};
    int status = 0;
    say("ready %ld", (long)getpid());
    if (opts.barrier_fd >= 0)
        wait_for_end_of(opts.barrier_fd);
    for (int i = 0; i < opts.count; i++) {
        char key[RM_MODEL_KEY_MAX + 16];
        key_at(i, key, sizeof key);
        void *model = NULL;
        uint64_t wall = clock_ns(CLOCK_MONOTONIC);
        uint64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
        int32_t rc = vt->model_get_or_load(context, key, peer_loader, NULL, &handles[i], &model);
        cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu;
        wall = clock_ns(CLOCK_MONOTONIC) - wall;
        char message[1024];
        snprintf(message, sizeof message, "%s", rc == RM_OK ? "" : vt->context_last_error(context));
        uint64_t sum = 0;
        bool ok = false;
        if (rc == RM_OK && model != NULL) {
            models[i] = model;
            sum = tp_hash_bytes(model, (size_t)opts.bytes);
            ok = sum == rp_model_hash(key, opts.seed, opts.bytes);
            if (!ok)
                status = 1;
        }
        rm_registry_metrics m;
        metrics_of(&m);
        say("result key=%s rc=%d name=%s bytes=%" PRIu64 " sum=%016" PRIx64 " ok=%d ms=%" PRIu64
            " cpu_ms=%" PRIu64 " calls=%" PRIu64 " model=%p hits=%" PRIu64 " misses=%" PRIu64
            " loads=%" PRIu64 " load_failures=%" PRIu64 " attaches=%" PRIu64 " takeovers=%" PRIu64
            " dead_references=%" PRIu64 " lock_recoveries=%" PRIu64 " msg=%s",
            key, (int)rc, vt->error_name(rc), opts.bytes, sum, ok ? 1 : 0, wall / 1000000u,
            cpu / 1000000u, loader_calls, model, m.hits, m.misses, m.loads, m.load_failures,
            m.attaches, m.takeovers, m.dead_references, m.lock_recoveries, message);
    }
    if (opts.write && models[0] != NULL)
        write_into(models[0]);
    if (opts.hold == HOLD_FOREVER) {
        say("holding");
        for (;;)
            pause();
    }
    if (opts.hold == HOLD_STDIN) {
        say("holding");
        wait_for_end_of(STDIN_FILENO);
    }
    for (int i = 0; i < opts.count; i++)
        if (handles[i] != NULL) {
            int32_t rc = vt->model_release(context, handles[i]);
            if (rc != RM_OK)
                say("fail model_release: %s", vt->error_name(rc));
        }
    for (int i = 0; opts.evict && i < opts.count; i++) {
        char key[RM_MODEL_KEY_MAX + 16];
        key_at(i, key, sizeof key);
        say("evicted rc=%s", vt->error_name(vt->model_evict(context, key)));
    }
    if (opts.hold == HOLD_STDIN) {
        rm_registry_metrics m;
        metrics_of(&m);
        say("bye dead_references=%" PRIu64 " lock_recoveries=%" PRIu64 " evictions=%" PRIu64
            " takeovers=%" PRIu64,
            m.dead_references, m.lock_recoveries, m.evictions, m.takeovers);
    }
    return status;
}

static int run_lock_and_die(void)
{
    /* RM_SEGMENT_NODE_TABLE's name (plugin/shm/shm_segment.h), spelled out: the
     * peer loads the plugin and does not link its internals. */
    char name[96];
    snprintf(name, sizeof name, "/rmreg.%s.table", opts.ns);
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        say("fail shm_open %s: %s", name, strerror(errno));
        return 2;
    }
    void *mapped =
        mmap(NULL, RM_NODE_TABLE_HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mapped == MAP_FAILED) {
        say("fail mmap %s: %s", name, strerror(errno));
        return 2;
    }
    rm_node_header *header = mapped;
    if (header->magic != RM_NODE_TABLE_MAGIC || header->layout != RM_NODE_TABLE_LAYOUT) {
        say("fail %s is not a layout %u node table", name, RM_NODE_TABLE_LAYOUT);
        return 2;
    }
    int rc = pthread_mutex_lock(&header->lock);
    if (rc == EOWNERDEAD)
        rc = pthread_mutex_consistent(&header->lock);
    if (rc != 0) {
        say("fail pthread_mutex_lock: %s", strerror(rc));
        return 2;
    }
    say("locked %ld", (long)getpid());
    raise(SIGKILL);
    return 2; /* not reached */
}

static int run_idle(void)
{
    say("ready %ld", (long)getpid());
    wait_for_end_of(STDIN_FILENO);
    say("bye");
    return 0;
}

/* ---- churn --------------------------------------------------------------- */

static uint64_t churn_cycle;
static uint64_t churn_loads;

/* One line appended to the log in one write(). */
__attribute__((format(printf, 1, 2))) static bool log_line(const char *format, ...)
{
    char line[160];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(line, sizeof line, format, args);
    va_end(args);
    int fd = open(opts.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        say("fail log %s: %s", opts.log, strerror(errno));
        return false;
    }
    bool written = length > 0 && (size_t)length < sizeof line &&
                   write(fd, line, (size_t)length) == (ssize_t)length;
    close(fd);
    if (!written)
        say("fail writing the log %s", opts.log);
    return written;
}

/* The model of load `stamp`: the stamp, then the pattern stream. */
static void stamped_model(uint64_t stamp, uint8_t *out, size_t bytes)
{
    memcpy(out, &stamp, sizeof stamp);
    tp_pattern(stamp, sizeof stamp, out + sizeof stamp, bytes - sizeof stamp);
}

static int32_t churn_loader(void *user, const char *key, rm_loaded_model *out)
{
    (void)user;
    (void)key;
    if (!RM_LOADED_MODEL_HAS_BUFFER(out))
        return RM_E_NOT_SHAREABLE;
    void *buffer = NULL;
    int32_t rc = out->alloc_buffer(out, opts.bytes, &buffer);
    if (rc != RM_OK)
        return rc;
    uint64_t stamp = (uint64_t)getpid() << 32 | (churn_cycle & 0xffffffffu);
    stamped_model(stamp, buffer, (size_t)opts.bytes);
    churn_loads++;
    /* Logged before the model is published: a hold of this stamp by any
     * process comes after its load line. */
    return log_line("load %016" PRIx64 "\n", stamp) ? RM_OK : RM_E_LOADER_FAILED;
}

/* 0 to max_us microseconds, from a per-process generator. */
static void pause_up_to_us(uint64_t *state, long max_us)
{
    *state = tp_splitmix(*state);
    long us = (long)(*state % (uint64_t)(max_us + 1));
    struct timespec left = {.tv_sec = 0, .tv_nsec = us * 1000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR)
        ;
}

static int run_churn(const rm_config_entry *entries, uint64_t entry_count)
{
    if (opts.bytes < 16 || opts.log == NULL || opts.seconds <= 0) {
        say("fail churn wants --seconds, --log and --bytes of at least 16");
        return 2;
    }
    uint8_t *expected = malloc((size_t)opts.bytes);
    if (expected == NULL) {
        say("fail out of memory");
        return 2;
    }
    uint64_t random_state = (uint64_t)getpid() * 0x9e3779b97f4a7c15u;
    uint64_t deadline = clock_ns(CLOCK_MONOTONIC) + (uint64_t)opts.seconds * 1000000000u;
    int status = 0;
    say("ready %ld", (long)getpid());
    while (status == 0 && clock_ns(CLOCK_MONOTONIC) < deadline) {
        churn_cycle++;
        int32_t rc = create_context_of(vt, entries, entry_count, &context);
        if (rc != RM_OK) {
            say("fail cycle %" PRIu64 ": context_create: %s: %s", churn_cycle,
                vt->error_name(rc), vt->context_last_error(NULL));
            context = NULL;
            status = 1;
            break;
        }
        rm_model_handle *handle = NULL;
        void *model = NULL;
        rc = vt->model_get_or_load(context, opts.key, churn_loader, NULL, &handle, &model);
        uint64_t got = clock_ns(CLOCK_MONOTONIC);
        if (rc != RM_OK) {
            say("fail cycle %" PRIu64 ": model_get_or_load: %s: %s", churn_cycle,
                vt->error_name(rc), vt->context_last_error(context));
            status = 1;
        } else {
            uint64_t stamp;
            memcpy(&stamp, model, sizeof stamp);
            stamped_model(stamp, expected, (size_t)opts.bytes);
            if (memcmp(model, expected, (size_t)opts.bytes) != 0) {
                say("fail cycle %" PRIu64 ": the model of stamp %016" PRIx64
                    " has other bytes",
                    churn_cycle, stamp);
                status = 1;
            }
            pause_up_to_us(&random_state, 1000);
            uint64_t until = clock_ns(CLOCK_MONOTONIC);
            rc = vt->model_release(context, handle);
            if (rc != RM_OK) {
                say("fail cycle %" PRIu64 ": model_release: %s", churn_cycle,
                    vt->error_name(rc));
                status = 1;
            }
            if (!log_line("hold %016" PRIx64 " %" PRIu64 " %" PRIu64 "\n", stamp, got, until))
                status = 1;
            rc = vt->model_evict(context, opts.key);
            if (rc != RM_OK && rc != RM_E_BUSY && rc != RM_E_NOT_FOUND) {
                say("fail cycle %" PRIu64 ": model_evict: %s: %s", churn_cycle,
                    vt->error_name(rc), vt->context_last_error(context));
                status = 1;
            }
        }
        vt->context_destroy(context);
        context = NULL;
        pause_up_to_us(&random_state, 2000);
    }
    free(expected);
    say("churned cycles=%" PRIu64 " loads=%" PRIu64, churn_cycle, churn_loads);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Arguments                                                                */
/* ------------------------------------------------------------------------ */

static bool parse_number(const char *text, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0')
        return false;
    *out = value;
    return true;
}

/* Parses the load options from argv[at]. */
static bool parse_load_options(int argc, char **argv, int at)
{
    for (int i = at; i < argc; i++) {
        const char *word = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        long long number = 0;
        bool numeric = value != NULL && parse_number(value, &number);
        if (strcmp(word, "--die-half") == 0) {
            opts.die_half = true;
            continue;
        }
        if (strcmp(word, "--write") == 0) {
            opts.write = true;
            continue;
        }
        if (strcmp(word, "--evict") == 0) {
            opts.evict = true;
            continue;
        }
        if (value == NULL) {
            say("fail %s wants a value", word);
            return false;
        }
        i++;
        if (strcmp(word, "--counter") == 0) {
            opts.counter = value;
        } else if (strcmp(word, "--log") == 0) {
            opts.log = value;
        } else if (strcmp(word, "--hold") == 0) {
            if (strcmp(value, "none") == 0)
                opts.hold = HOLD_NONE;
            else if (strcmp(value, "stdin") == 0)
                opts.hold = HOLD_STDIN;
            else if (strcmp(value, "forever") == 0)
                opts.hold = HOLD_FOREVER;
            else {
                say("fail --hold none|stdin|forever, not %s", value);
                return false;
            }
        } else if (!numeric) {
            say("fail %s %s: not a number", word, value);
            return false;
        } else if (strcmp(word, "--bytes") == 0 && number > 0) {
            opts.bytes = (uint64_t)number;
        } else if (strcmp(word, "--seed") == 0) {
            opts.seed = (uint64_t)number;
        } else if (strcmp(word, "--count") == 0 && number >= 1 && number <= MAX_KEYS) {
            opts.count = (int)number;
        } else if (strcmp(word, "--barrier-fd") == 0 && number >= 0) {
            opts.barrier_fd = (int)number;
        } else if (strcmp(word, "--loader-barrier-fd") == 0 && number >= 0) {
            opts.loader_barrier_fd = (int)number;
        } else if (strcmp(word, "--seconds") == 0 && number > 0) {
            opts.seconds = (long)number;
        } else if (strcmp(word, "--sleep-ms") == 0 && number >= 0) {
            opts.sleep_ms = (long)number;
        } else if (strcmp(word, "--fail") == 0 && number < 0 && number >= INT32_MIN) {
            opts.fail = true;
            opts.fail_code = (int32_t)number;
        } else {
            say("fail unknown or out-of-range option %s %s", word, value);
            return false;
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    rm_config_entry entries[32];
    uint64_t entry_count = 0;
    entries[entry_count++] = (rm_config_entry){.key = "registry.scope", .value = "node"};
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--ns") == 0 && i + 1 < argc) {
            opts.ns = argv[++i];
            entries[entry_count++] =
                (rm_config_entry){.key = "registry.namespace", .value = opts.ns};
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            char *pair = argv[++i];
            if (!peer_host_add_setting(pair, entries, &entry_count, 32)) {
                say("fail --set wants KEY=VALUE (32 entries at most), not %s", pair);
                return 2;
            }
        } else {
            break;
        }
    }
    if (opts.ns == NULL || i >= argc) {
        say("fail usage: registry_peer --ns NS [--set K=V]... load KEY [options] | "
            "lock-and-die | idle | churn KEY [options]");
        return 2;
    }
    const char *mode = argv[i++];
    bool load = strcmp(mode, "load") == 0;
    bool churn = strcmp(mode, "churn") == 0;
    if (load || churn) {
        if (i >= argc) {
            say("fail load wants a key");
            return 2;
        }
        opts.key = argv[i++];
        if (!parse_load_options(argc, argv, i))
            return 2;
    } else if ((strcmp(mode, "lock-and-die") != 0 && strcmp(mode, "idle") != 0) || i != argc) {
        say("fail unknown mode or extra arguments: %s", mode);
        return 2;
    }

    rm_loaded_plugin plugin;
    char error[1024];
    if (load_plugin_from_env(RM_ABI_VERSION(1, 2), &plugin, error, sizeof error) != 0) {
        say("fail %s", error);
        return 2;
    }
    vt = plugin.vtable;
    if (!RM_PLUGIN_HAS(vt, registry_reclaim)) {
        say("fail the plugin has no 1.2 node registry");
        return 2;
    }
    if (churn) {
        int status = run_churn(entries, entry_count);
        rm_plugin_unload(&plugin);
        return status;
    }
    int32_t created = create_context_of(vt, entries, entry_count, &context);
    if (created != RM_OK) {
        say("fail context_create: %d %s: %s", (int)created, vt->error_name(created),
            vt->context_last_error(NULL));
        return 2;
    }
    int status = load ? run_load() : strcmp(mode, "idle") == 0 ? run_idle() : run_lock_and_die();
    vt->context_destroy(context);
    rm_plugin_unload(&plugin);
    return status;
}
