#include "config_row.h"

#include "alloc.h"
#include "error.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_credential(const tg_schema_t *s)
{
    return s->ttl; /* key-auth credentials: the only entity with a secret and a ttl */
}

int tg_config_row_ncols(const tg_schema_t *s)
{
    return is_credential(s) ? 4 : 2;
}

/* Select lists are built once per (schema, alias) and kept for the life of the process. */
#define MAX_ALIASES 4
typedef struct cols_cache {
    const tg_schema_t *s;
    char alias[8];
    char *text;
} cols_cache_t;

static pthread_mutex_t g_cols_lock = PTHREAD_MUTEX_INITIALIZER;
static cols_cache_t g_cols[64];
static size_t g_ncols;

const char *tg_config_row_cols(const tg_schema_t *s, const char *alias)
{
    const char *text = NULL;
    pthread_mutex_lock(&g_cols_lock);
    for (size_t i = 0; i < g_ncols && !text; i++)
        if (g_cols[i].s == s && strcmp(g_cols[i].alias, alias) == 0) text = g_cols[i].text;
    if (!text && g_ncols < sizeof(g_cols) / sizeof(g_cols[0]) && strlen(alias) < 8) {
        char *t = is_credential(s)
                      ? tg_asprintf("%1$sid::text, %1$sdoc::text, encode(%1$skey_digest, 'hex'),"
                                    " %1$sexpires_at",
                                    alias)
                      : tg_asprintf("%1$sid::text, %1$sdoc::text", alias);
        g_cols[g_ncols].s = s;
        snprintf(g_cols[g_ncols].alias, sizeof(g_cols[g_ncols].alias), "%s", alias);
        g_cols[g_ncols++].text = t;
        text = t;
    }
    pthread_mutex_unlock(&g_cols_lock);
    if (!text) abort(); /* more (schema, alias) pairs than any caller uses */
    return text;
}

tg_pb_entity_t *tg_config_row_proto(const tg_schema_t *s, const PGresult *res, int row, int col,
                                    char *err, size_t errlen)
{
    const char *doc = PQgetvalue(res, row, col + 1);
    size_t len = (size_t)PQgetlength(res, row, col + 1);
    if (!is_credential(s)) return tg_proto_entity_from_text(s->name, doc, len, err, errlen);
    /* the document with key_digest and expires_at added: spliced into the text before its
     * closing brace, so that the message is still read without a JSON tree */
    const char *close = doc + len;
    while (close > doc && close[-1] != '}')
        close--;
    if (close == doc) {
        snprintf(err, errlen, "%s %s: stored document is not an object", s->name,
                 PQgetvalue(res, row, col));
        return NULL;
    }
    close--;
    const char *p = close;
    while (p > doc && (p[-1] == ' ' || p[-1] == '\n'))
        p--;
    bool empty = p > doc && p[-1] == '{';
    char *text = tg_asprintf("%.*s%s\"key_digest\": \"%s\"%s%s}", (int)(close - doc), doc,
                             empty ? "" : ", ", PQgetvalue(res, row, col + 2),
                             PQgetisnull(res, row, col + 3) ? "" : ", \"expires_at\": ",
                             PQgetisnull(res, row, col + 3) ? "" : PQgetvalue(res, row, col + 3));
    tg_pb_entity_t *pb = tg_proto_entity_from_text(s->name, text, strlen(text), err, errlen);
    free(text);
    return pb;
}

int tg_config_row_hash_proto(const tg_schema_t *s, const char *id, const tg_pb_entity_t *pb,
                             uint8_t out[TG_CONFIG_DIGEST_LEN], char *err, size_t errlen)
{
    size_t len;
    char *canon = tg_proto_entity_canonical(s->name, pb, &len, err, errlen);
    if (!canon) return -TG_EINVAL;
    tg_config_digest_entity_raw(tg_str_from(s->name), tg_str_from(id), (tg_str_t){canon, len},
                                out);
    free(canon);
    return 0;
}

int tg_config_row_hash(const tg_schema_t *s, const PGresult *res, int row, int col,
                       uint8_t out[TG_CONFIG_DIGEST_LEN], char *err, size_t errlen)
{
    tg_pb_entity_t *pb = tg_config_row_proto(s, res, row, col, err, errlen);
    if (!pb) return -TG_EINVAL;
    int rc = tg_config_row_hash_proto(s, PQgetvalue(res, row, col), pb, out, err, errlen);
    tg_proto_entity_free(pb);
    return rc;
}
