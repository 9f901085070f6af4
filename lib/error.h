/*
 * error.h — the one list of internal error codes.
 *
 * Functions return int: 0 on success, a negative -TG_E* code on failure. The
 * X-macro expands into the enum, the symbolic name and a human message, so a
 * code can always be printed. Rich, user-facing errors (field path → message)
 * travel in a json error object and are rendered at the edge that owns the
 * format (Admin API, realms API, proxy); see schema.h for the Kong DAO codes.
 */
#ifndef TG_ERROR_H
#define TG_ERROR_H

#define TG_ERRNO_MAP(XX)                                                                           \
    XX(NOMEM, 1, "out of memory")                                                                  \
    XX(INVAL, 2, "invalid argument")                                                               \
    XX(AGAIN, 3, "incomplete input, try again")                                                    \
    XX(PARSE, 4, "malformed input")                                                                \
    XX(TOOBIG, 5, "input exceeds a limit")                                                         \
    XX(NOTFOUND, 6, "not found")                                                                   \
    XX(EXISTS, 7, "already exists")                                                                \
    XX(IO, 8, "input/output error")                                                                \
    XX(DB, 9, "database error")                                                                    \
    XX(DBDOWN, 10, "database unreachable")                                                         \
    XX(TIMEOUT, 11, "timed out")                                                                   \
    XX(CLOSED, 12, "connection closed")                                                            \
    XX(TLS, 13, "TLS error")                                                                       \
    XX(CRYPTO, 14, "cryptographic operation failed")                                               \
    XX(CONFIG, 15, "invalid configuration")                                                        \
    XX(UNSUPPORTED, 16, "not supported")                                                           \
    XX(CONFLICT, 17, "conflicting update")                                                         \
    XX(SYS, 18, "system call failed")                                                              \
    XX(PERM, 19, "not permitted")

enum tg_errno {
#define XX(name, num, msg) TG_E##name = (num),
    TG_ERRNO_MAP(XX)
#undef XX
};

/*
 * Kong's DAO error codes (kong/db/errors.lua) with the HTTP status the Admin
 * API answers them with: XX(name, code, http_status, kong_name).
 */
#define TG_API_ERROR_MAP(XX)                                                                       \
    XX(INVALID_PRIMARY_KEY, 1, 400, "invalid primary key")                                         \
    XX(SCHEMA_VIOLATION, 2, 400, "schema violation")                                               \
    XX(PRIMARY_KEY_VIOLATION, 3, 400, "primary key violation")                                     \
    XX(FOREIGN_KEY_VIOLATION, 4, 400, "foreign key violation")                                     \
    XX(UNIQUE_VIOLATION, 5, 409, "unique constraint violation")                                    \
    XX(NOT_FOUND, 6, 404, "not found")                                                             \
    XX(INVALID_OFFSET, 7, 400, "invalid offset")                                                   \
    XX(DATABASE_ERROR, 8, 500, "database error")                                                   \
    XX(INVALID_SIZE, 9, 400, "invalid size")                                                       \
    XX(INVALID_UNIQUE, 10, 400, "invalid unique")                                                  \
    XX(INVALID_OPTIONS, 11, 400, "invalid options")                                                \
    XX(OPERATION_UNSUPPORTED, 12, 405, "operation unsupported")                                    \
    XX(FOREIGN_KEYS_UNRESOLVED, 13, 400, "foreign keys unresolved")                                \
    XX(REFERENCED_BY_OTHERS, 19, 400, "referenced by others")

enum tg_api_error {
#define XX(name, code, status, kname) TG_API_##name = (code),
    TG_API_ERROR_MAP(XX)
#undef XX
};

/* HTTP status for a Kong error code (500 for unknown codes). */
int tg_api_error_status(int code);
/* Kong's `name` for an error code ("schema violation"). */
const char *tg_api_error_name(int code);

/* Returns the message for a negative (or positive) TG_E code; never NULL. */
const char *tg_strerror(int err);
/* Returns the symbolic name ("TG_ENOTFOUND") for a code; never NULL. */
const char *tg_errname(int err);

#endif
