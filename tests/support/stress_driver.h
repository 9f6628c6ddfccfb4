/* The frame of a stress driver (tests/stress): a plain process, because
 * ThreadSanitizer cannot run Criterion, that runs named scenarios and
 * turns their verdicts into lines and an exit status. */
#ifndef RM_TEST_STRESS_DRIVER_H
#define RM_TEST_STRESS_DRIVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stress_scenario {
    const char *name;
    int (*run)(void); /* 0 when it passed */
} stress_scenario;

/* The iterations multiplier: $RM_STRESS_SCALE, else 0.25 under TSan (its
 * slowdown would make the full run take minutes), else 1. */
static inline double stress_scale(void)
{
    const char *text = getenv("RM_STRESS_SCALE");
    if (text != NULL)
        return atof(text);
    return getenv("RM_TEST_UNDER_TSAN") != NULL ? 0.25 : 1.0;
}

/* `base` iterations times stress_scale(), at least 1. */
static inline int stress_scaled(int base)
{
    double value = (double)base * stress_scale();
    if (value < 1.0)
        return 1;
    if (value > 1e8)
        return 100000000;
    return (int)(value + 0.5);
}

/* Runs round(i, why, why_size) for stress_scaled(base) rounds, each on a
 * fresh set-up of its own, and stops at the first that fails (returns
 * non-zero), adding which round it was to `why`. 0 when all passed. */
static inline int stress_rounds(int base, int (*round)(int index, char *why, size_t why_size),
                                char *why, size_t why_size)
{
    int rounds = stress_scaled(base);
    for (int i = 0; i < rounds; i++) {
        if (round(i, why, why_size) != 0) {
            size_t used = strlen(why);
            snprintf(why + used, why_size - used, " (round %d of %d)", i + 1, rounds);
            return -1;
        }
    }
    return 0;
}

/* What a driver may watch around each scenario (stress_run_watched), e.g.
 * for a watchdog or a crash report: started(i) before scenario i runs,
 * ended(i, result) after it, returning the verdict to record (a check of
 * the driver's own may fail a scenario that passed, saying why in the
 * reason). Either may be NULL. */
typedef struct stress_watch {
    void (*started)(size_t index);
    int (*ended)(size_t index, int result);
} stress_watch;

/* Runs every scenario: "ok   NAME" for a pass; for a failure "FAIL NAME:
 * REASON" when `reason` (cleared before each) says why, else nothing (the
 * scenario printed its own FAIL line). before_each (may be NULL) resets
 * what the scenarios share; `watch` (may be NULL) sees each one start and
 * end. Then "N passed, M failed"; the failed count. */
static inline int stress_run_watched(const stress_scenario *scenarios, size_t count,
                                     void (*before_each)(void), char *reason,
                                     const stress_watch *watch)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; i++) {
        if (before_each != NULL)
            before_each();
        if (reason != NULL)
            reason[0] = '\0';
        if (watch != NULL && watch->started != NULL)
            watch->started(i);
        int result = scenarios[i].run();
        if (watch != NULL && watch->ended != NULL)
            result = watch->ended(i, result);
        if (result == 0) {
            printf("ok   %s\n", scenarios[i].name);
            passed++;
        } else {
            if (reason != NULL)
                printf("FAIL %s: %s\n", scenarios[i].name, reason);
            failed++;
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed;
}

static inline int stress_run(const stress_scenario *scenarios, size_t count,
                             void (*before_each)(void), char *reason)
{
    return stress_run_watched(scenarios, count, before_each, reason, NULL);
}

#endif
