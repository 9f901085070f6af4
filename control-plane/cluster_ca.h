/*
 * cluster_ca.h — the cluster's certificate authority (DESIGN.md §6).
 *
 * One CA per CP cluster, stored in PostgreSQL (table cluster_ca) with its private key encrypted
 * under the keyring key, so every CP node that shares the database and the keyring shares the
 * CA. It issues each CP node's server certificate for cluster_listen and each data plane's
 * client certificate (from the DP's CSR: the key never leaves the DP). A DP certificate's
 * identity is its subject: CN=<node id>, OU=<control plane id>, O=tollgate-dp, plus the SAN
 * URI urn:tollgate:dp:<node id>; whatever the CSR asked for is ignored.
 *
 * All keys are EC P-256, signatures ECDSA-SHA256. A tg_cluster_ca_t is immutable after it is
 * loaded, so one instance may be used from any number of threads at once. Strings returned
 * through `char **` are malloc'd and owned by the caller.
 */
#ifndef TG_CLUSTER_CA_H
#define TG_CLUSTER_CA_H

#include "db.h"

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#define TG_CLUSTER_CA_CN "Tollgate cluster CA"
#define TG_CLUSTER_DP_ORG "tollgate-dp"
#define TG_CLUSTER_DP_URI_PREFIX "urn:tollgate:dp:"

typedef struct tg_cluster_ca tg_cluster_ca_t;

/*
 * Loads the CA from the database, creating it first when there is none: the new CA (10
 * years, CN "Tollgate cluster CA", basicConstraints CA:TRUE critical, keyUsage keyCertSign and
 * cRLSign) is inserted with ON CONFLICT DO NOTHING and the row is then re-read, so two CP
 * nodes starting at once end up with the same CA. `db` must not be inside a transaction
 * (or may be, when the caller commits). Returns 0, -TG_EDB/-TG_EDBDOWN, or -TG_ECRYPTO when
 * the stored key does not decrypt with this keyring (logged: the keyring differs between CP
 * nodes) or does not match the certificate.
 */
int tg_cluster_ca_ensure(tg_db_t *db, const uint8_t keyring[32], tg_cluster_ca_t **out);

/* A fresh CA in memory only (tests, tools). Returns 0 or -TG_ECRYPTO. */
int tg_cluster_ca_create(tg_cluster_ca_t **out);
/* A CA from its PEM certificate and PEM private key. Returns 0 or -TG_ECRYPTO. */
int tg_cluster_ca_from_pem(const char *cert_pem, const char *key_pem, tg_cluster_ca_t **out);

/* The CA certificate as PEM (owned by ca). */
const char *tg_cluster_ca_cert_pem(const tg_cluster_ca_t *ca);
/* The CA certificate (owned by ca: do not free; X509_up_ref to keep it longer). */
X509 *tg_cluster_ca_x509(const tg_cluster_ca_t *ca);
/* "sha256:<64 hex>" of the CA's DER SubjectPublicKeyInfo (kubeadm's CA cert hash). */
void tg_cluster_ca_spki_hash(const tg_cluster_ca_t *ca, char out[72]);

/*
 * A server certificate for a CP node's cluster listener: a new P-256 key, CN = names[0],
 * one SAN per name (IP when it parses as an address, else DNS), extendedKeyUsage serverAuth,
 * valid `days` days from 5 minutes ago. Returns 0 with *cert_pem and *key_pem set, or
 * -TG_EINVAL (no names, a name that is not a host name or address, days < 1), -TG_ECRYPTO.
 */
int tg_cluster_ca_issue_server(const tg_cluster_ca_t *ca, const char *const *names, size_t n,
                               int days, char **cert_pem, char **key_pem);

/*
 * Signs a data plane's CSR: checks the CSR's self-signature and its key (EC P-256 or P-384,
 * or RSA of 2048 to 8192 bits), ignores its subject and extensions, and issues CN=node_id,
 * OU=cp_id, O=tollgate-dp, SAN URI urn:tollgate:dp:<node_id>, extendedKeyUsage clientAuth,
 * a random 128-bit serial, valid from 5 minutes ago for lifetime_s seconds (60 s .. 10 years).
 * On success returns 0, *cert_pem (caller frees), the serial as lower-case hex in serial_hex
 * and the notAfter time in *not_after_unix. A CSR that is not acceptable returns -TG_EINVAL
 * with a message for the client in err[errlen]; -TG_ECRYPTO when signing fails.
 */
int tg_cluster_ca_sign_csr(const tg_cluster_ca_t *ca, const char *csr_pem, const char *node_id,
                           const char *cp_id, int lifetime_s, char **cert_pem, char serial_hex[41],
                           int64_t *not_after_unix, char *err, size_t errlen);

/*
 * Reads a DP certificate's identity (for the sync server, after TLS verified the chain):
 * O must be tollgate-dp, CN and OU UUIDs, and the SAN URI must name the same node. Returns 0
 * with both ids (lower-case) or -TG_EINVAL. Does not verify the signature or validity.
 */
int tg_cluster_cert_identity(X509 *cert, char node_id[37], char cp_id[37]);

/* The serial of a certificate as lower-case hex (the form stored in data_planes.cert_serial). */
int tg_cluster_cert_serial(X509 *cert, char serial_hex[41]);

void tg_cluster_ca_free(tg_cluster_ca_t *ca);

#endif
