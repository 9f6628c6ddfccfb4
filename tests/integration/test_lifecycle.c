/* dlopen / negotiate / create / use / destroy / dlclose, 100 times in one
 * process: no thread, descriptor or mapping is left behind. Memory leaks
 * are caught by lifecycle_leakcheck under valgrind and LeakSanitizer. */
#include <criterion/criterion.h>

#include "lifecycle_cycles.h"

TestSuite(lifecycle, .timeout = 120);

Test(lifecycle, hundred_load_unload_cycles_leave_nothing_behind)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    cr_assert_not_null(path, "RM_PLUGIN_PATH must name the built rm_plugin.so");
    char why[1024] = "";
    cr_assert_eq(lifecycle_run(path, 100, why, sizeof why), 0, "%s", why);
}
