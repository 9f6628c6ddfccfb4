/* The frame of a stress driver (tests/stress): a plain process, because
 * ThreadSanitizer cannot run Criterion, that runs named scenarios and
 * turns their verdicts into lines and an exit status. */
#ifndef RM_TEST_STRESS_DRIVER_H
#define RM_TEST_STRESS_DRIVER_H

#include <stdio.h>
#include <stdlib.h>

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

/* Runs every scenario: "ok   NAME" for a pass; for a failure "FAIL NAME:
 * REASON" when `reason` (cleared before each) says why, else nothing (the
 * scenario printed its own FAIL line). before_each (may be NULL) resets
 * what the scenarios share. Then "N passed, M failed"; the failed count. */
static inline int stress_run(const stress_scenario *scenarios, size_t count,
                             void (*before_each)(void), char *reason)
{
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; i++) {
        if (before_each != NULL)
            before_each();
        if (reason != NULL)
            reason[0] = '\0';
        if (scenarios[i].run() == 0) {
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

#endif
