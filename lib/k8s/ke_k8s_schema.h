/*
 * ke_k8s_schema.h — the OpenAPI schema of the kinds cloudcore's Kubernetes
 * gateway serves, embedded in the binary (api/openapi/schema.json, written
 * by tools/gen-openapi.py): strict field validation of objects (unknown
 * fields and wrong types refused, with the field path as the API server
 * prints it), the strategic merge patch facts of list fields, and the
 * documents kubectl reads at /openapi/v2 and /openapi/v3.
 *
 * Kinds: Namespace, Node, Pod, ConfigMap, Secret, Event, Service (core v1)
 * and Device, DeviceModel (devices.kubeedge.io/v1beta1, KubeEdge's shape),
 * each with its List kind; Status, DeleteOptions and WatchEvent (meta v1).
 *
 * The schema is parsed once, on first use; every function is thread-safe
 * and the schema is read-only afterwards.
 */
#ifndef KE_K8S_SCHEMA_H
#define KE_K8S_SCHEMA_H

#include "ke_k8s_patch.h"

#include <jansson.h>
#include <stddef.h>

/* ke_k8s_schema_load parses the embedded schema (once; later calls return
 * the first result). Returns 0, KE_ENOMEM or KE_EINVAL (a damaged
 * schema). The other functions call it themselves. */
int ke_k8s_schema_load(void);

/* ke_k8s_schema_check is strict field validation of obj (borrowed): every
 * field must be known to the schema of its (apiVersion, kind), through
 * nested objects, lists and maps; a Quantity is a string or a number, an
 * IntOrString a string or an integer, a free-form object anything; null
 * stands for an absent field. Returns 0; KE_EINVAL with, in why, the first
 * type mismatch ("spec.containers: expected array, got object") or else
 * every unknown field, as the API server's strict decoding error puts it
 * ("strict decoding error: unknown field \"spec.foo\", unknown field
 * \"spec.containers[0].imagee\""; cut short at len); KE_ENOTFOUND (with
 * why) for an apiVersion and kind the schema does not have; KE_ENOMEM. */
int ke_k8s_schema_check(const json_t *obj, char *why, size_t len);

/* ke_k8s_patch_meta (the strategic merge patch facts of one list field)
 * is declared by ke_k8s_patch.h; ke_k8s_schema_patch_meta fills it from
 * the loaded schema (strings valid for the life of the process). */

/* ke_k8s_schema_patch_meta looks up the field at path of kind ("Pod") for
 * the strategic merge patch engine: path is dotted from the object's top,
 * "[]" stepping into a list's entries ("spec.containers",
 * "spec.containers[].env", "metadata.finalizers"). ud is unused (the
 * engine's callback shape). Returns 1 and fills *meta when the field has a
 * patch strategy, else 0 (unknown kind or field, or no strategy). */
int ke_k8s_schema_patch_meta(void *ud, const char *kind, const char *path,
                             ke_k8s_patch_meta *meta);

/* ke_k8s_openapi_v2 builds the /openapi/v2 document: swagger 2.0, the
 * collection and item paths of every kind served (operations with their
 * x-kubernetes-group-version-kind and x-kubernetes-action, and the
 * fieldValidation query parameter on post, put and patch) and the schema as
 * definitions. A new reference, or NULL (out of memory, schema damaged). */
json_t *ke_k8s_openapi_v2(void);

/* kubectl asks /openapi/v2 for protobuf only (Accept
 * "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"); the
 * answer's Content-Type is this ('@' is not allowed in a media type). */
#define KE_K8S_OPENAPI_V2_PB_TYPE "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

/* ke_k8s_openapi_v2_pb encodes the ke_k8s_openapi_v2 document as the
 * protobuf message kubectl reads (gnostic's openapi.v2.Document; vendor
 * extensions as JSON text). On 0, *out (free() it) holds *len bytes.
 * Returns 0 or KE_ENOMEM. */
int ke_k8s_openapi_v2_pb(unsigned char **out, size_t *len);

/* ke_k8s_openapi_v3_index builds the /openapi/v3 discovery document:
 * {"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?<q>=<H>"},
 * "apis/devices.kubeedge.io/v1beta1":{...}}}, H the SHA-256 (hex) of that
 * group-version's document, so the URL changes when the document does. q is
 * hash_query, or "hash" when NULL. A new reference, or NULL. */
json_t *ke_k8s_openapi_v3_index(const char *hash_query);

/* ke_k8s_openapi_v3 builds the OpenAPI 3.0.0 document of group_version
 * ("api/v1", "apis/devices.kubeedge.io/v1beta1"; a leading '/' and a
 * "?..." query are ignored): the paths of its kinds (fieldValidation on
 * post, put and patch, as kubectl looks for it) and components.schemas
 * with just the schemas they need, refs as "#/components/schemas/...".
 * A new reference; NULL for an unknown group-version or out of memory. */
json_t *ke_k8s_openapi_v3(const char *group_version);

#endif
