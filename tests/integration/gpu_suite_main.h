/* The main() of a Criterion suite that runs against the test-only fake
 * driver (suite 'cuda', FAKE_CUDA_LIBRARY set) and unchanged on a real GPU
 * (suite 'gpu'): test_cuda_tensors and test_gpu_weights. It asks
 * cuda_info() in a child first, so that the process that forks the tests
 * never initialises CUDA, and exits 77 (skipped) when there is no usable
 * device and no fake was named. */
#ifndef RM_TEST_GPU_SUITE_MAIN_H
#define RM_TEST_GPU_SUITE_MAIN_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cuda_tensor_common.h"
#include "plugin_env.h"

/* 0: usable; 77: not; 1: the probe failed. `suite` names the messages. */
static int gpu_suite_probe_device(const char *suite)
{
    fflush(NULL);
    pid_t child = fork();
    if (child < 0)
        return 1;
    if (child == 0) {
        rm_loaded_plugin plugin;
        char error[1024];
        if (load_plugin_from_env(RM_ABI_VERSION(1, 3), &plugin, error, sizeof error) != 0) {
            fprintf(stderr, "%s: %s\n", suite, error);
            _exit(1);
        }
        rm_config_entry entry = {.key = "cuda.driver", .value = td_library()};
        rm_context *context = NULL;
        if (create_context_of(plugin.vtable, &entry, 1, &context) != RM_OK) {
            fprintf(stderr, "%s: no context: %s\n", suite,
                    plugin.vtable->context_last_error(NULL));
            _exit(1);
        }
        rm_cuda_info info = RM_STRUCT_INIT(rm_cuda_info);
        int32_t rc = plugin.vtable->cuda_info(context, &info);
        bool usable = rc == RM_OK && info.status == RM_OK && info.device_count > 0;
        fprintf(stderr, "%s: %s: %s\n", suite, td_library(),
                usable ? info.message : info.message[0] != '\0' ? info.message
                                                                 : plugin.vtable->error_name(rc));
        plugin.vtable->context_destroy(context);
        _exit(usable ? 0 : 77);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

static int gpu_suite_main(int argc, char *argv[], const char *suite)
{
    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true)) {
        int probe = gpu_suite_probe_device(suite);
        if (probe == 77 && !td_is_fake()) {
            fprintf(stderr, "%s: no usable CUDA device: skipped\n", suite);
            result = 77;
        } else if (probe != 0) {
            fprintf(stderr, "%s: the driver probe failed (%d)\n", suite, probe);
            result = 1;
        } else {
            result = !criterion_run_all_tests(tests);
        }
    }
    criterion_finalize(tests);
    return result;
}

#endif
