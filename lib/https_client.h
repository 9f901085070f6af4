/*
 * https_client.h — a small blocking HTTPS/1.1 client for command-line tools.
 *
 * One request per connection ("Connection: close"), for `tollgate dp join` and similar
 * one-shot exchanges; never use it on an event loop. The response head is parsed by our own
 * strict parser (http.h); bodies delimited by Content-Length, chunked coding or close are
 * read up to a caller-set bound.
 *
 * Peer verification is explicit: either none (the caller authenticates the payload some other
 * way, as join does with the token's signature), or a chain to a CA given as PEM text plus a
 * host name or IP address the certificate must carry.
 *
 * Thread-safe (no shared state); the response is owned by the caller
 * (tg_https_response_free).
 */
#ifndef TG_HTTPS_CLIENT_H
#define TG_HTTPS_CLIENT_H

#include "http.h"

#include <stddef.h>

#define TG_HTTPS_MAX_HEADERS 64

typedef struct tg_https_opts {
    const char *ca_pem;      /* NULL: the server certificate is not verified at all */
    const char *verify_name; /* with ca_pem: DNS name or IP the certificate must match;
                                NULL = the host part of the address */
    int connect_timeout_ms;  /* 0 = 10 s */
    int io_timeout_ms;       /* per read or write; 0 = 30 s */
    size_t max_body;         /* 0 = 1 MiB */
} tg_https_opts_t;

typedef struct tg_https_response {
    int status;
    tg_http_header_t headers[TG_HTTPS_MAX_HEADERS]; /* point into `head` */
    size_t nheaders;
    char *head; /* the raw response head */
    char *body; /* NUL-terminated for convenience */
    size_t body_len;
} tg_https_response_t;

/*
 * Splits "host:port", "[v6]:port" into host (brackets removed) and port. Returns 0 or
 * -TG_EINVAL (no port, port outside 1..65535, empty or oversized host).
 */
int tg_https_split_hostport(const char *hostport, char *host, size_t hostcap, int *port);

/*
 * Sends `method path` to `hostport` over TLS with the extra header lines `headers`
 * ("Name: value", nheaders of them, may be NULL) and an optional body (Content-Length is
 * added when body is non-NULL), then reads the whole response into *resp. Returns 0 for any
 * complete HTTP response (whatever its status), or -TG_EINVAL, -TG_EIO (resolve/connect),
 * -TG_ETIMEOUT, -TG_ETLS (handshake or verification), -TG_EPARSE (malformed response) or
 * -TG_ETOOBIG (body above max_body), with a one-line reason in err[errlen].
 */
int tg_https_request(const char *hostport, const char *method, const char *path,
                     const char *const *headers, size_t nheaders, const char *body, size_t body_len,
                     const tg_https_opts_t *opts, tg_https_response_t *resp, char *err,
                     size_t errlen);

/* The value of the first header named `name` as a fresh string, or NULL; caller frees. */
char *tg_https_response_header(const tg_https_response_t *resp, const char *name);
void tg_https_response_free(tg_https_response_t *resp);

/*
 * "sha256:<hex>" of a PEM certificate's DER SubjectPublicKeyInfo (kubeadm's CA pin,
 * --discovery-token-ca-cert-hash). Returns 0 or -TG_EPARSE when cert_pem holds no certificate.
 */
int tg_https_spki_hash(const char *cert_pem, char out[72]);

#endif
