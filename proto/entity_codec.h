/*
 * entity_codec.h — entities between their JSON form and the sync protocol's messages.
 *
 * The conversion is driven by two descriptions of the same entity: the field table of
 * lib/entities.c (what a field means) and the protobuf-c descriptor of its message (where it
 * lives), matched by field name under the mapping rule written at the top of
 * proto/tollgate_sync.proto. Nothing here knows a particular entity, so a field added to
 * lib/entities.c and to the .proto travels with no code change.
 *
 * JSON form: the entity as the data plane stores it — every schema field present (null when
 * unset), foreign keys as {"id": X}, credentials with "key_digest" (hex) and optionally
 * "expires_at" instead of the secret "key". Fields the message has beyond the schema (those two)
 * are omitted when absent. Decoding returns exactly that form, so a control plane that hashes
 * tg_proto_entity_to_json(tg_proto_entity_from_json(doc)) and a data plane that hashes what it
 * decoded compute the same config digest.
 *
 * Pure functions, thread-safe. Messages are allocated with malloc and freed with
 * tg_proto_entity_free (or as part of a parent freed by protobuf_c_message_free_unpacked).
 */
#ifndef TG_ENTITY_CODEC_H
#define TG_ENTITY_CODEC_H

#include "tollgate_sync.pb-c.h"

#include <jansson.h>
#include <stddef.h>

typedef Tollgate__Sync__V1__Entity tg_pb_entity_t;

/* The message descriptor carrying entities of `type` ("services", ...), NULL if none. */
const ProtobufCMessageDescriptor *tg_proto_entity_descriptor(const char *type);

/*
 * Encodes a JSON entity of `type`. Returns NULL with a message in err when the JSON does not fit
 * the description (unknown key, wrong JSON type, a plaintext secret, malformed key_digest).
 */
tg_pb_entity_t *tg_proto_entity_from_json(const char *type, const json_t *entity, char *err,
                                          size_t errlen);

/*
 * tg_proto_entity_from_json of the JSON text [text, text + len): the same message, and the same
 * errors, without building a JSON tree when the document is a flat one (the control plane's
 * stored documents; see entity_codec.c). NULL with a message also when the text is not JSON.
 */
tg_pb_entity_t *tg_proto_entity_from_text(const char *type, const char *text, size_t len,
                                          char *err, size_t errlen);

/*
 * Decodes a message of `type` to its JSON form (new reference). NULL with a message when the
 * message's kind is not `type` or a JSON-carrying field does not parse.
 */
json_t *tg_proto_entity_to_json(const char *type, const tg_pb_entity_t *e, char *err,
                                size_t errlen);

/*
 * The canonical JSON (config_digest.h) of tg_proto_entity_to_json(type, e), as a new string the
 * caller frees (*len, optional, its length). Written straight from the message when its values
 * allow (the snapshot fast path of both planes), else through the JSON form: the bytes are the
 * same either way. NULL with a message where tg_proto_entity_to_json fails.
 */
char *tg_proto_entity_canonical(const char *type, const tg_pb_entity_t *e, size_t *len, char *err,
                                size_t errlen);

void tg_proto_entity_free(tg_pb_entity_t *e);

/*
 * Checks that the message of `type` carries every field of its lib/entities.c description under
 * the mapping rule, and nothing else but `extras` (NULL-terminated names). 0, or -1 with err.
 */
int tg_proto_entity_check_description(const char *type, const char *const *extras, char *err,
                                      size_t errlen);

#endif
