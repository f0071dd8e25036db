/*
 * fuzz_config_yaml.c — libFuzzer harness for the configuration loader
 * (lib/config): the bytes become a YAML file (a memfd, opened by path as
 * /proc/self/fd/N, so nothing touches the disk) loaded by
 * ke_config_load_file against a small schema with every field type and
 * nested keys, like the programs' own.
 *
 * The contract of ke_config.h is checked (abort when broken):
 *   - the result is 0, KE_EINVAL, KE_EIO or KE_ENOMEM;
 *   - a failure leaves the target untouched and writes one non-empty line
 *     (no newline) to err;
 *   - a success can be repeated into the same target (the strings and
 *     lists of the first load are freed and replaced) with the same result.
 * Seeds: tests/fuzz/corpus/config_yaml/.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ke_config.h"
#include "ke_err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fz_config {
    char *listen;
    int64_t port;
    bool tls;
    int64_t timeout_ms;
    ke_config_strlist nodes;
    char *name;
    int64_t keepalive_ms;
    char *db;
};

static const ke_config_field fz_fields[] = {
    { "cloudhub.listen", KE_CONFIG_STRING, offsetof(struct fz_config, listen), "0.0.0.0:10000",
      "address the hub listens on" },
    { "cloudhub.port", KE_CONFIG_INT64, offsetof(struct fz_config, port), "10000", "hub port" },
    { "cloudhub.tls.enable", KE_CONFIG_BOOL, offsetof(struct fz_config, tls), "true",
      "serve TLS" },
    { "cloudhub.timeout", KE_CONFIG_DURATION, offsetof(struct fz_config, timeout_ms), "30s",
      "handshake timeout" },
    { "cloudhub.nodes", KE_CONFIG_STRLIST, offsetof(struct fz_config, nodes), "a,b",
      "nodes allowed to connect" },
    { "name", KE_CONFIG_STRING, offsetof(struct fz_config, name), NULL, "instance name" },
    { "keepalive", KE_CONFIG_DURATION, offsetof(struct fz_config, keepalive_ms), "500ms",
      "keepalive interval" },
    { "store.db", KE_CONFIG_STRING, offsetof(struct fz_config, db), "/var/lib/ke/store.db",
      "store file" },
};
#define FZ_NFIELDS KE_CONFIG_NFIELDS(fz_fields)

/* The memfd the inputs are written to, created once per process. */
static int fz_fd = -1;
static char fz_path[64];

/* check_err aborts unless err is one non-empty line. */
static void check_err(const char *err)
{
    if (err[0] == '\0' || strchr(err, '\n') != NULL) {
        fprintf(stderr, "fuzz_config_yaml: err is not one line: \"%s\"\n", err);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fz_fd < 0) {
        fz_fd = memfd_create("fuzz_config_yaml", 0);
        if (fz_fd < 0)
            abort();
        snprintf(fz_path, sizeof(fz_path), "/proc/self/fd/%d", fz_fd);
    }
    if (ftruncate(fz_fd, 0) != 0 || (size && pwrite(fz_fd, data, size, 0) != (ssize_t)size))
        abort();

    struct fz_config cfg, zero;
    memset(&cfg, 0, sizeof(cfg));
    memset(&zero, 0, sizeof(zero));
    char err[KE_CONFIG_ERR_MAX] = "";
    int rc = ke_config_load_file(fz_fields, FZ_NFIELDS, &cfg, fz_path, err, sizeof(err));
    if (rc != 0) {
        if (rc != KE_EINVAL && rc != KE_EIO && rc != KE_ENOMEM)
            abort();
        check_err(err);
        if (memcmp(&cfg, &zero, sizeof(cfg)) != 0)
            abort();
        return 0;
    }

    /* A second load into the loaded target replaces what the first stored. */
    err[0] = '\0';
    int rc2 = ke_config_load_file(fz_fields, FZ_NFIELDS, &cfg, fz_path, err, sizeof(err));
    if (rc2 != 0 && rc2 != KE_ENOMEM)
        abort();
    ke_config_free(fz_fields, FZ_NFIELDS, &cfg);
    ke_config_free(fz_fields, FZ_NFIELDS, &cfg); /* a second free is a no-op */
    return 0;
}
