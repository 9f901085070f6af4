/*
 * lookup_bench.c — what one key lookup costs at a million keys, and what another layout of
 * the credentials in LMDB would cost (a benchmark, not a test; docs/benchmarks.md).
 *
 *   build/lookup_bench <prefix>/dp [lookups]
 *
 * Reads the credentials of a data plane's store (the largest "keyauth_credentials#" database:
 * SHA-256 digest → record), then measures, single-threaded:
 *
 *  1. this machine's latency of one dependent access to memory that is not cached (a pointer
 *     chase through 256 MiB): the unit every figure below is made of;
 *  2. for each layout, written into a scratch environment from the same credentials: the
 *     pages it takes (bytes per key), the bytes a change of one credential rewrites (LMDB
 *     copies every page it writes), and ns per lookup of a uniformly random stored key, in
 *     a tight loop and with 64 random cache lines of a 64 MiB buffer read between lookups
 *     (what the rest of a request does to the caches; its own time is not counted).
 *
 * Layouts: "btree", the store's (one B-tree keyed by the 32-byte digest); "hashN", 2^N
 * buckets keyed by the digest's first N bits, each value an open hash of 4-byte offsets
 * (twice as many slots as entries, chosen by digest bytes 4..7) over chained entries
 * holding digest bytes 4..31 and the record: a lookup touches LMDB's few hot leaf pages,
 * one slot and one entry.
 */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DIGEST 32
#define CHASE_BYTES (256u << 20)
#define TRASH_BYTES (64u << 20)
#define TRASH_LINES 64
#define PAGE 4096.0

struct cred {
    uint8_t digest[DIGEST];
    uint32_t len;
    uint8_t *record;
};

static struct cred *creds;
static size_t ncreds;
static uint64_t rng = 0x9e3779b97f4a7c15u;
static volatile uint64_t sink;

static void check(int rc, const char *what)
{
    if (rc == 0) return;
    fprintf(stderr, "lookup_bench: %s: %s\n", what, mdb_strerror(rc));
    exit(1);
}

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

/* ns per dependent load through a random cyclic permutation of CHASE_BYTES of cache lines. */
static double memory_latency(void)
{
    size_t n = CHASE_BYTES / 64;
    uint64_t *lines =
        mmap(NULL, CHASE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t *order = malloc(n * sizeof *order);
    if (lines == MAP_FAILED || !order) exit(1);
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = next_random() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        lines[order[i] * 8] = order[(i + 1) % n] * 8;
    free(order);
    size_t at = 0, steps = 5000000;
    double t0 = now_ns();
    for (size_t i = 0; i < steps; i++)
        at = lines[at];
    double ns = (now_ns() - t0) / steps;
    sink += at;
    munmap(lines, CHASE_BYTES);
    return ns;
}

static int by_digest(const void *a, const void *b)
{
    return memcmp(((const struct cred *)a)->digest, ((const struct cred *)b)->digest, DIGEST);
}

/* The store's credentials, sorted by digest (the order LMDB keeps them in already). */
static void load(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi main_db, db = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    check(mdb_env_create(&env), "mdb_env_create");
    mdb_env_set_maxdbs(env, 64);
    check(mdb_env_open(env, dir, MDB_RDONLY, 0), dir);
    check(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, NULL, 0, &main_db), "main database");
    check(mdb_cursor_open(txn, main_db, &cur), "mdb_cursor_open");
    size_t best = 0;
    for (int op = MDB_FIRST; mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
        static const char prefix[] = "keyauth_credentials#";
        char name[64];
        MDB_dbi d;
        MDB_stat st;
        if (k.mv_size >= sizeof name || k.mv_size < sizeof prefix - 1 ||
            memcmp(k.mv_data, prefix, sizeof prefix - 1) != 0)
            continue;
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if (mdb_dbi_open(txn, name, 0, &d) == 0 && mdb_stat(txn, d, &st) == 0 &&
            st.ms_entries > best) {
            best = st.ms_entries;
            db = d;
        }
    }
    mdb_cursor_close(cur);
    if (!best) {
        fprintf(stderr, "lookup_bench: no credentials in %s\n", dir);
        exit(1);
    }
    creds = calloc(best, sizeof *creds);
    check(mdb_cursor_open(txn, db, &cur), "mdb_cursor_open");
    for (int op = MDB_FIRST; ncreds < best && mdb_cursor_get(cur, &k, &v, op) == 0; op = MDB_NEXT) {
        if (k.mv_size != DIGEST || v.mv_size > 255) continue; /* what hashN's entries hold */
        struct cred *c = &creds[ncreds++];
        memcpy(c->digest, k.mv_data, DIGEST);
        c->len = (uint32_t)v.mv_size;
        c->record = malloc(v.mv_size);
        memcpy(c->record, v.mv_data, v.mv_size);
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    qsort(creds, ncreds, sizeof *creds, by_digest);
}

/* ------------------------------------------------------------------ layouts */

struct layout {
    const char *name;
    unsigned bits; /* hashN: N; btree: 0 */
    MDB_env *env;
    MDB_dbi db;
    size_t largest_value;
};

static uint32_t bucket_of(const struct layout *l, const uint8_t *d)
{
    uint32_t top = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
    return top >> (32 - l->bits);
}

/* One bucket's value: [slot count][slots: entry offset + 1, 0 empty][entries:
 * next offset + 1 (0: last), digest bytes 4..31, record length, record]. */
static size_t bucket_value(const struct cred *c, size_t n, uint8_t *out)
{
    uint32_t nslots = 1;
    while (nslots < 2 * n)
        nslots <<= 1;
    memcpy(out, &nslots, 4);
    memset(out + 4, 0, (size_t)nslots * 4);
    size_t at = 4 + (size_t)nslots * 4;
    for (size_t i = 0; i < n; i++) {
        uint32_t h, head;
        memcpy(&h, c[i].digest + 4, 4);
        uint8_t *slot = out + 4 + (size_t)(h & (nslots - 1)) * 4;
        memcpy(&head, slot, 4);
        uint32_t self = (uint32_t)at + 1;
        memcpy(slot, &self, 4);
        memcpy(out + at, &head, 4);
        memcpy(out + at + 4, c[i].digest + 4, DIGEST - 4);
        out[at + DIGEST] = (uint8_t)c[i].len;
        memcpy(out + at + DIGEST + 1, c[i].record, c[i].len);
        at += DIGEST + 1 + c[i].len;
    }
    return at;
}

static void build(struct layout *l, const char *dir)
{
    check(mdb_env_create(&l->env), "mdb_env_create");
    mdb_env_set_maxdbs(l->env, 2);
    mdb_env_set_mapsize(l->env, (size_t)4 << 30);
    check(mdb_env_open(l->env, dir, MDB_NOSYNC, 0600), dir);
    MDB_txn *txn;
    check(mdb_txn_begin(l->env, NULL, 0, &txn), "mdb_txn_begin");
    check(mdb_dbi_open(txn, "credentials", MDB_CREATE, &l->db), "mdb_dbi_open");
    uint8_t *buf = malloc(64u << 20);
    for (size_t i = 0; i < ncreds;) {
        MDB_val k, v;
        uint32_t key;
        size_t n = 1;
        if (l->bits) {
            uint32_t b = bucket_of(l, creds[i].digest);
            while (i + n < ncreds && bucket_of(l, creds[i + n].digest) == b)
                n++;
            key = __builtin_bswap32(b); /* big-endian: LMDB's order is the buckets' */
            k = (MDB_val){sizeof key, &key};
            v = (MDB_val){bucket_value(&creds[i], n, buf), buf};
        } else {
            k = (MDB_val){DIGEST, creds[i].digest};
            v = (MDB_val){creds[i].len, creds[i].record};
        }
        if (v.mv_size > l->largest_value) l->largest_value = v.mv_size;
        check(mdb_put(txn, l->db, &k, &v, MDB_APPEND), "mdb_put");
        i += n;
    }
    free(buf);
    check(mdb_txn_commit(txn), "mdb_txn_commit");
}

static const uint8_t *find(const struct layout *l, MDB_txn *txn, const uint8_t *d)
{
    MDB_val k, v;
    uint32_t key;
    if (!l->bits) {
        k = (MDB_val){DIGEST, (void *)d};
        return mdb_get(txn, l->db, &k, &v) == 0 ? v.mv_data : NULL;
    }
    key = __builtin_bswap32(bucket_of(l, d));
    k = (MDB_val){sizeof key, &key};
    if (mdb_get(txn, l->db, &k, &v) != 0) return NULL;
    const uint8_t *p = v.mv_data;
    uint32_t nslots, h, at;
    memcpy(&nslots, p, 4);
    memcpy(&h, d + 4, 4);
    memcpy(&at, p + 4 + (size_t)(h & (nslots - 1)) * 4, 4);
    while (at) {
        const uint8_t *e = p + at - 1;
        if (memcmp(e + 4, d + 4, DIGEST - 4) == 0) return e + DIGEST + 1;
        memcpy(&at, e, 4);
    }
    return NULL;
}

/* ns per lookup of random stored keys; with `trash`, cache lines read between lookups. */
static double lookups(const struct layout *l, size_t count, const uint8_t *trash)
{
    MDB_txn *txn;
    check(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
    double outside = 0;
    size_t found = 0;
    double t0 = now_ns();
    for (size_t i = 0; i < count; i++) {
        if (trash) {
            double a = now_ns();
            for (int j = 0; j < TRASH_LINES; j++)
                sink += trash[next_random() % (TRASH_BYTES / 64) * 64];
            outside += now_ns() - a;
        }
        found += find(l, txn, creds[next_random() % ncreds].digest) != NULL;
    }
    double spent = now_ns() - t0 - outside;
    mdb_txn_abort(txn);
    if (found != count) {
        fprintf(stderr, "lookup_bench: %s found %zu of %zu keys\n", l->name, found, count);
        exit(1);
    }
    return spent / count;
}

static void remove_env(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    char path[256];
    for (size_t i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s <prefix>/dp [lookups]\n", argv[0]);
        return 2;
    }
    size_t count = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000000;
    char scratch[] = "/tmp/tg-lookup-bench-XXXXXX";
    if (!mkdtemp(scratch)) return 1;
    load(argv[1]);
    double latency = memory_latency();
    uint8_t *trash = malloc(TRASH_BYTES);
    memset(trash, 1, TRASH_BYTES);
    struct layout layouts[] = {{"btree", 0, NULL, 0, 0},
                               {"hash8", 8, NULL, 0, 0},
                               {"hash10", 10, NULL, 0, 0},
                               {"hash12", 12, NULL, 0, 0}};
    printf("%zu credentials from %s; one uncached dependent load: %.0f ns\n\n", ncreds, argv[1],
           latency);
    printf("| layout | depth | B/key | bytes one change rewrites | ns/lookup | "
           "ns/lookup, caches disturbed | in uncached loads |\n|---|---|---|---|---|---|---|\n");
    for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++) {
        struct layout *l = &layouts[i];
        char dir[sizeof scratch + 16];
        snprintf(dir, sizeof dir, "%s/%s", scratch, l->name);
        if (mkdir(dir, 0700) != 0) return 1;
        build(l, dir);
        MDB_txn *txn;
        MDB_stat st;
        check(mdb_txn_begin(l->env, NULL, MDB_RDONLY, &txn), "mdb_txn_begin");
        check(mdb_stat(txn, l->db, &st), "mdb_stat");
        mdb_txn_abort(txn);
        size_t pages = st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
        /* a change copies the path from the root: a leaf per level, or the bucket's
         * overflow pages beside it */
        double rewritten =
            st.ms_depth * PAGE + (l->bits ? (double)(l->largest_value / 4096 + 1) * PAGE : 0);
        double tight = lookups(l, count, NULL), disturbed = lookups(l, count / 4, trash);
        printf("| %s | %u | %.0f | ≤ %.0f KiB | %.0f | %.0f | %.1f |\n", l->name, st.ms_depth,
               pages * PAGE / ncreds, rewritten / 1024, tight, disturbed, tight / latency);
        mdb_env_close(l->env);
        remove_env(dir);
    }
    rmdir(scratch);
    return 0;
}
