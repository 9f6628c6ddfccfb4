/* The content of a benchmark model, word by word: node_model_holder's
 * loader writes it and every reader (the holders themselves and
 * bench_registry_node, which attaches) checks it, so both sides must
 * compute it from this one definition. */
#ifndef RM_BENCH_MODEL_PATTERN_H
#define RM_BENCH_MODEL_PATTERN_H

#include <stdint.h>

/* A different pattern per key, so that a model attached under the wrong
 * key cannot pass the check. */
static inline uint64_t pattern_seed(const char *key)
{
    uint64_t hash = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
    for (const unsigned char *at = (const unsigned char *)key; *at != 0; at++)
        hash = (hash ^ *at) * UINT64_C(0x100000001b3);
    return hash;
}

static inline uint64_t pattern_word(uint64_t seed, uint64_t index)
{
    return (index + seed) * UINT64_C(0x9e3779b97f4a7c15);
}

#endif
