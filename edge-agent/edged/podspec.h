/*
 * podspec.h — what a Pod object asks of the runtime, in CRI terms: the
 * sandbox and container configurations (env resolved from ConfigMaps and
 * Secrets, mounts, resources, namespaces) and the pod's volume directories
 * on the host (configMap and secret projected as files with their modes,
 * emptyDir, hostPath). No runtime calls here: Edged sends what this builds.
 *
 * Every request is built on an arena (podspec_arena) and freed with it
 * once sent.
 */
#ifndef EDGED_PODSPEC_H
#define EDGED_PODSPEC_H

#include "cri/api.pb-c.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Labels Edged puts on every sandbox and container: the first three are
 * the names kubelet uses (so runtime tools show them), the node label
 * scopes a runtime shared by several edgecores. */
#define PODSPEC_LABEL_UID "io.kubernetes.pod.uid"
#define PODSPEC_LABEL_NAME "io.kubernetes.pod.name"
#define PODSPEC_LABEL_NAMESPACE "io.kubernetes.pod.namespace"
#define PODSPEC_LABEL_CONTAINER "io.kubernetes.container.name"
#define PODSPEC_LABEL_NODE "io.kubeedge-c.node"

typedef struct podspec_arena podspec_arena;
podspec_arena *podspec_arena_new(void);
void podspec_arena_free(podspec_arena *a);

/* podspec_lookup reads an object of this pod's namespace from the edge
 * store: kind "ConfigMap" or "Secret". Returns a new reference, or NULL
 * when the store does not hold it. */
typedef json_t *(*podspec_lookup)(const char *kind, const char *ns, const char *name, void *arg);

typedef struct podspec_ctx {
    const char *node;      /* this node's name */
    const char *pod_dir;   /* <root>/pods/<uid>: volumes live under it */
    const char *log_dir;   /* the sandbox's log directory */
    const char *pod_ip;    /* for status.podIP in env; may be NULL */
    podspec_lookup lookup;
    void *lookup_arg;
} podspec_ctx;

/* podspec_quantity parses a Kubernetes quantity ("100m", "1", "64Mi",
 * "1G", "1.5") into milli-units (*milli) — CPU in millicores, memory in
 * milli-bytes (divide by 1000). Returns 0 or -1. */
int podspec_quantity(const char *s, int64_t *milli);

/* podspec_sandbox builds the sandbox configuration (attempt: the
 * sandbox's attempt number). NULL and a reason in why on bad input. */
Runtime__V1__PodSandboxConfig *podspec_sandbox(podspec_arena *a, const json_t *pod,
                                              const podspec_ctx *c, uint32_t attempt,
                                              char *why, size_t cap);

/* podspec_container builds container `ctr` (an element of spec.containers)
 * for attempt `attempt`. On bad input (a missing ConfigMap or key, a mount
 * of an unknown volume) NULL and why "<reason>: <message>" where reason is
 * the Kubernetes waiting reason (CreateContainerConfigError). */
Runtime__V1__ContainerConfig *podspec_container(podspec_arena *a, const json_t *pod,
                                               const json_t *ctr, const podspec_ctx *c,
                                               uint32_t attempt, char *why, size_t cap);

/* podspec_volumes writes the pod's volumes under c->pod_dir/volumes:
 * configMap and secret volumes as files (items, modes, optional), emptyDir
 * as a directory, hostPath checked (created for DirectoryOrCreate). Files
 * are replaced atomically and keys gone from the object are removed, so a
 * call after the ConfigMap changed refreshes the mounted files. Returns 0,
 * or -1 with why as podspec_container. */
int podspec_volumes(const json_t *pod, const podspec_ctx *c, char *why, size_t cap);

/* podspec_refers: does the pod use ConfigMap/Secret `name` in a volume? */
int podspec_volume_refers(const json_t *pod, const char *kind, const char *name);

/* podspec_log_path: the container's log file, relative to the log dir. */
void podspec_log_path(char *buf, size_t cap, const char *container, uint32_t attempt);

/* podspec_remove_tree removes a directory tree (the pod's volumes when it
 * is gone). Returns 0 or -1 (errno). */
int podspec_remove_tree(const char *dir);

#endif
