/* The 100-cycle lifecycle run as a plain process, so that valgrind's and
 * LeakSanitizer's verdicts become its exit status. */
#include "lifecycle_cycles.h"

int main(void)
{
    const char *path = getenv("RM_PLUGIN_PATH");
    if (path == NULL) {
        fprintf(stderr, "RM_PLUGIN_PATH must name the built rm_plugin.so\n");
        return 2;
    }
    char why[1024] = "";
    if (lifecycle_run(path, 100, why, sizeof why) != 0) {
        fprintf(stderr, "lifecycle: %s\n", why);
        return 1;
    }
    printf("lifecycle: 100 cycles, nothing left behind\n");
    return 0;
}
