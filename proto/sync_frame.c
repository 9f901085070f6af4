/*
 * sync_frame.c — Envelope <-> websocket frame (sync_frame.h).
 */
#include "sync_frame.h"

#include "alloc.h"

#include <stdlib.h>

int tg_sync_pack(const tg_sync_env_t *env, size_t headroom, uint8_t **buf, uint8_t **frame,
                 size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(&env->base);
    if (n > TG_SYNC_FRAME_MAX) return -1;
    *buf = tg_malloc(headroom + n + 1);
    *frame = *buf + headroom;
    *len = protobuf_c_message_pack(&env->base, *frame);
    return 0;
}

tg_sync_env_t *tg_sync_unpack(const uint8_t *frame, size_t len)
{
    if (len > TG_SYNC_FRAME_MAX) return NULL;
    tg_sync_env_t *env = tollgate__sync__v1__envelope__unpack(NULL, len, frame);
    if (env && env->body_case == TOLLGATE__SYNC__V1__ENVELOPE__BODY__NOT_SET) {
        tollgate__sync__v1__envelope__free_unpacked(env, NULL);
        return NULL;
    }
    return env;
}

void tg_sync_env_free(tg_sync_env_t *env)
{
    if (env) tollgate__sync__v1__envelope__free_unpacked(env, NULL);
}

const char *tg_sync_body_name(const tg_sync_env_t *env)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&tollgate__sync__v1__envelope__descriptor,
                                                (unsigned)env->body_case);
    return fd ? fd->name : "none";
}
