/*
 * dp_join.h — enrolling a data plane with a control plane (`tollgate dp join`, DESIGN.md §6)
 * and reading the enrolment back.
 *
 * An enrolled DP keeps, under <prefix>/cluster/ (mode 0700):
 *   dp.key        its private key, generated here, never sent anywhere (0600)
 *   dp.crt        its client certificate from the cluster CA (subject carries node and CP ids)
 *   ca.crt        the cluster CA, to verify the CP's server certificate
 *   cluster.json  {"node_id", "control_plane_id", "endpoints": ["host:port", ...],
 *                  "server_name": the host the DP joined through}
 * Every file is written atomically (temporary file, fsync, rename); cluster.json is written
 * last, so its presence means the enrolment is complete.
 *
 * Runs on the main thread (CLI) or the DP's control thread (loading, renewal); blocking I/O.
 */
#ifndef TG_DP_JOIN_H
#define TG_DP_JOIN_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#define TG_DP_CLUSTER_DIR "cluster"

typedef struct tg_dp_enrolment {
    char node_id[37];
    char cp_id[37];
    char server_name[256];                      /* name the CP's certificate must carry */
    json_t *endpoints;                          /* array of "host:port" strings (owned) */
    char *dir, *key_path, *cert_path, *ca_path; /* owned */
} tg_dp_enrolment_t;

/*
 * Reads <prefix>/cluster/cluster.json and checks that the key, certificate and CA files exist.
 * Returns 0, -TG_ENOTFOUND when this prefix is not enrolled (no cluster.json), or -TG_EPARSE
 * with the reason in err when it is there but unusable. Free with tg_dp_enrolment_free.
 */
int tg_dp_enrolment_load(tg_dp_enrolment_t *e, char *err, size_t errlen);
void tg_dp_enrolment_free(tg_dp_enrolment_t *e);

/*
 * A new EC P-256 key and a CSR for it (subject CN = cn, which the CA ignores), both PEM,
 * caller frees (the key with OPENSSL_clear_free or after wiping). Used by join and by
 * certificate renewal. Returns 0 or -TG_ECRYPTO.
 */
int tg_dp_join_new_key_csr(const char *cn, char **key_pem, char **csr_pem);

/* Replaces `path` atomically with `len` bytes of `data`, file mode `mode`. 0 or -TG_EIO (errno
 * set). */
int tg_dp_join_write_file(const char *path, const char *data, size_t len, mode_t mode);

#endif
