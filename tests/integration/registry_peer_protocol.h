/* What test_registry_node_processes and registry_peer share: the model a
 * loader writes for a key (so that any process can check any mapping), and
 * reading the "name=value" fields of the peer's lines. Test code,
 * header-only. The peer's arguments and lines are described at the top of
 * registry_peer.c. */
#ifndef RM_TEST_REGISTRY_PEER_PROTOCOL_H
#define RM_TEST_REGISTRY_PEER_PROTOCOL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_peer_protocol.h" /* tp_pattern, tp_hash_bytes, tp_pattern_hash */

/* The pattern stream of the model of `key` loaded with seed `seed`: the
 * bytes of the model are tp_pattern(rp_model_seed(key, seed), 0, ...). */
static inline uint64_t rp_model_seed(const char *key, uint64_t seed)
{
    uint64_t hash = 0xcbf29ce484222325u; /* FNV-1a */
    for (const unsigned char *at = (const unsigned char *)key; *at != '\0'; at++)
        hash = (hash ^ *at) * 0x100000001b3u;
    return tp_splitmix(hash ^ tp_splitmix(seed));
}

/* Hash of a correct model of `bytes` bytes (what a peer's sum= must be). */
static inline uint64_t rp_model_hash(const char *key, uint64_t seed, uint64_t bytes)
{
    return tp_pattern_hash(rp_model_seed(key, seed), bytes);
}

/* Where " name=" starts the value in `line` (or line-initial "name="), or
 * NULL. */
static inline const char *rp_field(const char *line, const char *name)
{
    if (line == NULL)
        return NULL;
    size_t length = strlen(name);
    for (const char *at = line; (at = strstr(at, name)) != NULL; at += length)
        if ((at == line || at[-1] == ' ') && at[length] == '=')
            return at + length + 1;
    return NULL;
}

/* A decimal (signed) field; `missing` when absent. */
static inline int64_t rp_field_int(const char *line, const char *name, int64_t missing)
{
    const char *value = rp_field(line, name);
    return value ? strtoll(value, NULL, 10) : missing;
}

/* A hexadecimal field (sum=, model=); 0 when absent. */
static inline uint64_t rp_field_hex(const char *line, const char *name)
{
    const char *value = rp_field(line, name);
    return value ? strtoull(value, NULL, 16) : 0;
}

#endif
