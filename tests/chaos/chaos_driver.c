/* chaos_driver: the chaos soak. It runs, in one fresh namespace, a mix of
 * separately exec'd chaos_worker processes (node-registry loaders and
 * holders, a worker that lives inside the node table's lock, tensor
 * producers, consumers and keepers; see chaos_board.h) and SIGKILLs a
 * random one at random times, mostly one that is inside a plugin call or
 * a loader, and starts a replacement. A watchdog calls a call that makes no
 * progress for more than 2 s a hang (and names it). At the end the
 * survivors stop cleanly, `rmctl gc` runs on the namespace, and the report
 * counts kills, hangs, byte mismatches, crashes other than the injected
 * kills, leaked segments and bytes, double loads and unexpected error
 * codes. The exit status is 0 only when all of those but kills are 0.
 *
 *   chaos_driver --worker PATH --rmctl PATH [--kills N] [--seconds S]
 *                [--seed S] [--json]
 *
 * $RM_PLUGIN_PATH names the plugin (the workers inherit it; rmctl finds it
 * in its directory). The run stops after N kills (default 200) or S
 * seconds (default 110), whichever comes first; fewer than N kills is a
 * failure too, so a bounded CI run proves what it claims. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chaos_board.h"

#define HANG_NS (2 * UINT64_C(1000000000))
#define STOP_GRACE_MS 20000

/* The mix of workers: role of each slot. */
static const chaos_role mix[] = {
    ROLE_MODELS,   ROLE_MODELS,   ROLE_MODELS,   ROLE_LOCK_HOG, ROLE_PRODUCER,
    ROLE_PRODUCER, ROLE_CONSUMER, ROLE_CONSUMER, ROLE_KEEPER,
};
#define WORKERS (sizeof mix / sizeof mix[0])

static const char *const role_names[ROLE_COUNT] = {"", "models", "lock-hog", "producer",
                                                   "consumer", "keeper"};

typedef struct report {
    uint64_t kills, kills_in_call, kills_by_call[CALL_COUNT];
    uint64_t hangs, crashes, exits, double_loads, worker_failures;
    uint64_t leaked_segments, leaked_bytes;
    int gc_status;
    double seconds;
    char first_problem[512];
} report;

static chaos_board *board;
static int board_fd;
static const char *worker_path;
static uint64_t random_state;
static report result;

static uint64_t random_below(uint64_t bound)
{
    random_state = chaos_mix(random_state);
    return random_state % bound;
}

__attribute__((format(printf, 1, 2))) static void problem(const char *format, ...)
{
    char line[512];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    fprintf(stderr, "chaos: %s\n", line);
    if (result.first_problem[0] == '\0')
        snprintf(result.first_problem, sizeof result.first_problem, "%s", line);
}

static void sleep_ms(uint64_t ms)
{
    struct timespec pause = {.tv_sec = (time_t)(ms / 1000),
                             .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
    }
}

/* ---- workers ------------------------------------------------------------ */

static void spawn(int slot)
{
    chaos_worker_slot *w = &board->workers[slot];
    memset((void *)w, 0, sizeof *w);
    atomic_store(&w->role, mix[slot]);
    char fd_text[16], slot_text[16], role_text[16], seed_text[32];
    snprintf(fd_text, sizeof fd_text, "%d", board_fd);
    snprintf(slot_text, sizeof slot_text, "%d", slot);
    snprintf(role_text, sizeof role_text, "%d", (int)mix[slot]);
    snprintf(seed_text, sizeof seed_text, "%" PRIu64, random_below(UINT64_MAX) | 1);
    pid_t pid = fork();
    if (pid < 0) {
        perror("chaos: fork");
        exit(2);
    }
    if (pid == 0) {
        execl(worker_path, worker_path, "--board", fd_text, "--slot", slot_text, "--role",
              role_text, "--seed", seed_text, (char *)NULL);
        _exit(127);
    }
    atomic_store(&w->pid, (uint32_t)pid);
}

static int slot_of(pid_t pid)
{
    for (int i = 0; i < (int)WORKERS; i++)
        if (atomic_load(&board->workers[i].pid) == (uint32_t)pid)
            return i;
    return -1;
}

/* What a gone worker left on the board: its held models and half-moved
 * mail (the plugin's own state is the plugin's to recover). */
static void clear_traces(int slot, pid_t pid)
{
    chaos_worker_slot *w = &board->workers[slot];
    for (int key = 0; key < CHAOS_KEYS; key++)
        atomic_store(&w->held_stamp[key], 0);
    for (int i = 0; i < CHAOS_MAIL_SLOTS; i++) {
        uint64_t state = atomic_load(&board->mail[i].state);
        uint64_t kind = state & 0xff;
        if ((state >> 8) == (uint64_t)pid && (kind == MAIL_WRITING || kind == MAIL_READING))
            atomic_store(&board->mail[i].state, MAIL_EMPTY);
    }
    if (atomic_load(&w->failed)) {
        result.worker_failures++;
        problem("%s worker %d said: %s", role_names[mix[slot]], (int)pid, w->message);
    }
    atomic_store(&w->pid, 0);
}

/* A worker ended by itself or by a signal we did not send. */
static void judge_end(int slot, pid_t pid, int status)
{
    const char *role = role_names[mix[slot]];
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        result.exits++; /* a producer's normal exit */
    } else if (WIFEXITED(status)) {
        result.crashes++;
        problem("%s worker %d exited with status %d: %s", role, (int)pid, WEXITSTATUS(status),
                board->workers[slot].message);
    } else if (WIFSIGNALED(status)) {
        result.crashes++;
        problem("%s worker %d died of signal %d (%s) inside %s", role, (int)pid,
                WTERMSIG(status), strsignal(WTERMSIG(status)),
                chaos_call_names[atomic_load(&board->workers[slot].call) % CALL_COUNT]);
    }
}

static void reap_ended(void)
{
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        int slot = slot_of(pid);
        if (slot < 0)
            continue; /* rmctl or a hung worker already counted */
        judge_end(slot, pid, status);
        clear_traces(slot, pid);
        spawn(slot);
    }
}

/* SIGKILLs the worker in `slot` and waits for it. */
static void kill_worker(int slot, bool count_as_kill)
{
    pid_t pid = (pid_t)atomic_load(&board->workers[slot].pid);
    uint32_t call = atomic_load(&board->workers[slot].call) % CALL_COUNT;
    kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
        if (count_as_kill) {
            result.kills++;
            result.kills_by_call[call]++;
            result.kills_in_call += call != CALL_NONE;
        }
    } else {
        judge_end(slot, pid, status); /* it ended before the kill landed */
    }
    clear_traces(slot, pid);
}

static void watchdog(void)
{
    uint64_t now = chaos_now_ns();
    for (int i = 0; i < (int)WORKERS; i++) {
        chaos_worker_slot *w = &board->workers[i];
        uint64_t started = atomic_load(&w->call_started_ns);
        if (atomic_load(&w->pid) == 0 || started == 0 || now < started + HANG_NS)
            continue;
        result.hangs++;
        problem("%s worker %u made no progress in %s for %.1f s", role_names[mix[i]],
                atomic_load(&w->pid), chaos_call_names[atomic_load(&w->call) % CALL_COUNT],
                (double)(now - started) / 1e9);
        kill_worker(i, false);
        spawn(i);
    }
}

/* Two live workers holding one key's model at once must hold one load. */
static void check_double_loads(void)
{
    for (int key = 0; key < CHAOS_KEYS; key++) {
        uint64_t seen = 0;
        for (int i = 0; i < (int)WORKERS; i++) {
            uint64_t stamp = atomic_load(&board->workers[i].held_stamp[key]);
            if (stamp == 0 || atomic_load(&board->workers[i].pid) == 0)
                continue;
            if (seen != 0 && stamp != seen) {
                result.double_loads++;
                problem("key %d held as two loads at once (%016" PRIx64 ", %016" PRIx64 ")",
                        key, seen, stamp);
                return;
            }
            seen = stamp;
        }
    }
}

/* A role at random (so that the lock hog, always inside a call, does not
 * draw most kills), and within it mostly a worker that is inside a plugin
 * call or a loader: that is where a kill can leave half-done state. */
static int pick_victim(void)
{
    chaos_role role = mix[random_below(WORKERS)];
    int inside[WORKERS], any[WORKERS], inside_count = 0, any_count = 0;
    for (int i = 0; i < (int)WORKERS; i++) {
        if (mix[i] != role || atomic_load(&board->workers[i].pid) == 0)
            continue;
        any[any_count++] = i;
        if (atomic_load(&board->workers[i].call) != CALL_NONE)
            inside[inside_count++] = i;
    }
    if (inside_count > 0 && random_below(10) < 8)
        return inside[random_below((uint64_t)inside_count)];
    return any_count > 0 ? any[random_below((uint64_t)any_count)] : 0;
}

/* ---- the end ------------------------------------------------------------ */

static void stop_workers(void)
{
    atomic_store(&board->stopping, 1);
    uint64_t deadline = chaos_now_ns() + (uint64_t)STOP_GRACE_MS * 1000000u;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < (int)WORKERS; i++) {
            pid_t pid = (pid_t)atomic_load(&board->workers[i].pid);
            if (pid == 0)
                continue;
            int status = 0;
            pid_t done = waitpid(pid, &status, WNOHANG);
            if (done == pid) {
                if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                    judge_end(i, pid, status);
                clear_traces(i, pid);
            } else {
                alive++;
            }
        }
        if (alive == 0)
            return;
        if (chaos_now_ns() > deadline) {
            for (int i = 0; i < (int)WORKERS; i++) {
                if (atomic_load(&board->workers[i].pid) == 0)
                    continue;
                result.hangs++;
                problem("%s worker %u did not stop within %d ms (inside %s)",
                        role_names[mix[i]], atomic_load(&board->workers[i].pid),
                        STOP_GRACE_MS,
                        chaos_call_names[atomic_load(&board->workers[i].call) % CALL_COUNT]);
                kill_worker(i, false);
            }
            return;
        }
        sleep_ms(10);
    }
}

static int run_rmctl_gc(const char *rmctl, const char *plugin_path)
{
    char directory[4096];
    snprintf(directory, sizeof directory, "%s", plugin_path);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("REMOTEMEDIA_PLUGIN_DIR", dirname(directory), 1);
        unsetenv("RM_PLUGIN_CONFIG");
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, STDOUT_FILENO);
        /* The workers' TTL: every model is idle by now. */
        execl(rmctl, rmctl, "--namespace", board->name_space, "-c", "registry.ttl_s=0.05", "gc",
              (char *)NULL);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Counts (and then removes) what is left of the namespace in /dev/shm. */
static void count_leftovers(void)
{
    char pool_prefix[64], table_prefix[64];
    snprintf(pool_prefix, sizeof pool_prefix, "rm.%s.", board->name_space);
    snprintf(table_prefix, sizeof table_prefix, "rmreg.%s.", board->name_space);
    DIR *directory = opendir("/dev/shm");
    if (directory == NULL)
        return;
    struct dirent *entry;
    while ((entry = readdir(directory)) != NULL) {
        if (strncmp(entry->d_name, pool_prefix, strlen(pool_prefix)) != 0 &&
            strncmp(entry->d_name, table_prefix, strlen(table_prefix)) != 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "/dev/shm/%s", entry->d_name);
        struct stat info;
        if (lstat(path, &info) == 0)
            result.leaked_bytes += (uint64_t)info.st_blocks * 512u;
        result.leaked_segments++;
        problem("left in /dev/shm after rmctl gc: %s", entry->d_name);
        unlink(path);
    }
    closedir(directory);
}

static void print_report(bool json)
{
    uint64_t mismatches = atomic_load(&board->mismatches);
    uint64_t unexpected = atomic_load(&board->unexpected_errors);
    if (json) {
        printf("{\"bench\":\"chaos\",\"kills\":%" PRIu64 ",\"kills_inside_calls\":%" PRIu64
               ",\"hangs\":%" PRIu64 ",\"mismatches\":%" PRIu64 ",\"crashes\":%" PRIu64
               ",\"leaked_segments\":%" PRIu64 ",\"leaked_bytes\":%" PRIu64
               ",\"double_loads\":%" PRIu64 ",\"unexpected_errors\":%" PRIu64
               ",\"loader_calls\":%" PRIu64 ",\"models_checked\":%" PRIu64
               ",\"tensors_posted\":%" PRIu64 ",\"tensors_checked\":%" PRIu64
               ",\"views_rechecked\":%" PRIu64 ",\"stale_imports\":%" PRIu64
               ",\"normal_exits\":%" PRIu64 ",\"gc_status\":%d,\"seconds\":%.1f}\n",
               result.kills, result.kills_in_call, result.hangs, mismatches, result.crashes,
               result.leaked_segments, result.leaked_bytes, result.double_loads, unexpected,
               atomic_load(&board->loader_calls), atomic_load(&board->models_checked),
               atomic_load(&board->tensors_posted), atomic_load(&board->tensors_checked),
               atomic_load(&board->views_rechecked), atomic_load(&board->stale_imports),
               result.exits, result.gc_status, result.seconds);
        return;
    }
    printf("chaos soak, namespace %s, %zu workers, %.1f s\n", board->name_space, WORKERS,
           result.seconds);
    printf("  kills %" PRIu64 " (%" PRIu64 " inside a plugin call or loader:", result.kills,
           result.kills_in_call);
    for (int c = 1; c < CALL_COUNT; c++)
        if (result.kills_by_call[c] != 0)
            printf(" %s %" PRIu64, chaos_call_names[c], result.kills_by_call[c]);
    printf(")\n");
    printf("  work: %" PRIu64 " loader calls (%" PRIu64 " failed on purpose), %" PRIu64
           " models checked, %" PRIu64 " tensors posted, %" PRIu64 " checked, %" PRIu64
           " kept views re-checked, %" PRIu64 " imports found their tensor gone, %" PRIu64
           " normal exits\n",
           atomic_load(&board->loader_calls), atomic_load(&board->loads_failed_on_purpose),
           atomic_load(&board->models_checked), atomic_load(&board->tensors_posted),
           atomic_load(&board->tensors_checked), atomic_load(&board->views_rechecked),
           atomic_load(&board->stale_imports), result.exits);
    printf("chaos: kills=%" PRIu64 " hangs=%" PRIu64 " mismatches=%" PRIu64
           " crashes=%" PRIu64 " leaked_segments=%" PRIu64 " leaked_bytes=%" PRIu64
           " double_loads=%" PRIu64 " unexpected_errors=%" PRIu64 " gc_status=%d\n",
           result.kills, result.hangs, mismatches, result.crashes, result.leaked_segments,
           result.leaked_bytes, result.double_loads, unexpected, result.gc_status);
}

int main(int argc, char **argv)
{
    const char *rmctl = NULL;
    uint64_t kill_target = 200;
    double seconds = 110;
    bool json = false;
    random_state = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 32;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else if (i + 1 < argc && strcmp(argv[i], "--worker") == 0)
            worker_path = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--rmctl") == 0)
            rmctl = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--kills") == 0)
            kill_target = strtoull(argv[++i], NULL, 0);
        else if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0)
            seconds = strtod(argv[++i], NULL);
        else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0)
            random_state = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: chaos_driver --worker PATH --rmctl PATH [--kills N] "
                            "[--seconds S] [--seed S] [--json]\n");
            return 2;
        }
    }
    const char *plugin_path = getenv("RM_PLUGIN_PATH");
    if (worker_path == NULL || rmctl == NULL || plugin_path == NULL) {
        fprintf(stderr, "chaos: --worker, --rmctl and $RM_PLUGIN_PATH are needed\n");
        return 2;
    }
    fprintf(stderr, "chaos: seed %" PRIu64 "\n", random_state);
    signal(SIGPIPE, SIG_IGN);

    board_fd = memfd_create("rm-chaos-board", 0); /* inherited by the workers */
    if (board_fd < 0 || ftruncate(board_fd, sizeof *board) != 0) {
        perror("chaos: memfd_create");
        return 2;
    }
    board = mmap(NULL, sizeof *board, PROT_READ | PROT_WRITE, MAP_SHARED, board_fd, 0);
    if (board == MAP_FAILED) {
        perror("chaos: mmap");
        return 2;
    }
    snprintf(board->name_space, sizeof board->name_space, "chaos%ld", (long)getpid());
    board->magic = CHAOS_MAGIC;

    uint64_t start = chaos_now_ns();
    uint64_t end = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < (int)WORKERS; i++)
        spawn(i);
    sleep_ms(200); /* let them start before the first kill */
    while (result.kills < kill_target && chaos_now_ns() < end) {
        sleep_ms(5 + random_below(40));
        reap_ended();
        watchdog();
        check_double_loads();
        int victim = pick_victim();
        if (atomic_load(&board->workers[victim].pid) == 0)
            continue;
        kill_worker(victim, true);
        check_double_loads();
        spawn(victim);
    }
    reap_ended();
    stop_workers();
    result.seconds = (double)(chaos_now_ns() - start) / 1e9;
    sleep_ms(100); /* past the workers' TTL */
    result.gc_status = run_rmctl_gc(rmctl, plugin_path);
    if (result.gc_status != 0)
        problem("rmctl gc exited with status %d", result.gc_status);
    count_leftovers();
    print_report(json);
    bool clean = result.kills >= kill_target && result.hangs == 0 && result.crashes == 0 &&
                 atomic_load(&board->mismatches) == 0 && result.double_loads == 0 &&
                 atomic_load(&board->unexpected_errors) == 0 && result.leaked_segments == 0 &&
                 result.gc_status == 0;
    if (result.kills < kill_target)
        fprintf(stderr, "chaos: only %" PRIu64 " of %" PRIu64 " kills in %.0f s\n",
                result.kills, kill_target, seconds);
    return clean ? 0 : 1;
}
