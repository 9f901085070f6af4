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
    XX(SYS, 18, "system call failed")

enum tg_errno {
#define XX(name, num, msg) TG_E##name = (num),
    TG_ERRNO_MAP(XX)
#undef XX
};

/* Returns the message for a negative (or positive) TG_E code; never NULL. */
const char *tg_strerror(int err);
/* Returns the symbolic name ("TG_ENOTFOUND") for a code; never NULL. */
const char *tg_errname(int err);

#endif
