/*
 * ke_k8s_patch.h — the patch engine of the Kubernetes REST gateway: the
 * three PATCH bodies kubectl and client libraries send, applied to an
 * object as JSON (jansson), as pure functions.
 *
 *   application/merge-patch+json           ke_k8s_merge_patch     (RFC 7386)
 *   application/json-patch+json            ke_k8s_json_patch      (RFC 6902)
 *   application/strategic-merge-patch+json ke_k8s_strategic_patch
 *
 * Every function works on a copy of *doc and swaps it in only on success:
 * on any error *doc is unchanged. Errors are KE_EINVAL with one line in why
 * (why may be NULL) for a patch that is malformed or cannot apply,
 * KE_ECONFLICT for a failed JSON-patch "test" operation and KE_ENOMEM.
 * Documents and patches nested deeper than KE_K8S_JSON_DEPTH_MAX are
 * refused before anything else, so no recursion here is bounded by the
 * input. The result is not validated: the caller runs ke_k8s_validate (a
 * merge patch may even turn the object into an array).
 */
#ifndef KE_K8S_PATCH_H
#define KE_K8S_PATCH_H

#include <jansson.h>
#include <stddef.h>

/* Most operations one JSON patch may hold. */
#define KE_K8S_JSON_PATCH_OPS_MAX 10000

/* Most data the "copy" operations of one JSON patch may duplicate, summed
 * over the patch, in bytes of compact JSON (roughly): without it a few
 * dozen copies of the document into itself would exhaust memory. */
#define KE_K8S_JSON_PATCH_COPY_MAX (4 * 1024 * 1024)

/* ke_k8s_merge_patch applies an RFC 7386 JSON merge patch to *doc: an
 * object patch merges key by key, recursively, null deleting a key; any
 * other patch value (array, string, null...) replaces the target whole.
 * Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_k8s_merge_patch(json_t **doc, const json_t *patch, char *why, size_t len);

/* ke_k8s_json_patch applies an RFC 6902 JSON patch, an array of at most
 * KE_K8S_JSON_PATCH_OPS_MAX operations (add, remove, replace, move, copy,
 * test), in order, all or nothing. Paths are RFC 6901 pointers ("" is the
 * whole document, "~0" and "~1" escape '~' and '/', "-" appends to an
 * array in add, move and copy). A "test" compares numbers by value (1 and
 * 1.0 are equal). Errors name the operation ("ops[2].path: ..."): KE_EINVAL
 * for a malformed operation, a path that does not resolve, a value that
 * would nest the document deeper than KE_K8S_JSON_DEPTH_MAX or copies past
 * KE_K8S_JSON_PATCH_COPY_MAX, KE_ECONFLICT
 * when a "test" fails (its value differs or its path does not exist),
 * KE_ENOMEM. */
int ke_k8s_json_patch(json_t **doc, const json_t *ops, char *why, size_t len);

/* Patch metadata of one field: how a strategic merge patch merges it.
 * strategy is NULL or "" (replace: the default, lists are replaced whole),
 * "merge", "retainKeys" or "merge,retainKeys" (comma-separated tokens; a
 * list merges when "merge" is one of them). merge_key names the field that
 * identifies an element of a list of objects ("name", "containerPort",
 * "mountPath"); NULL for a list of primitives, merged as a set. */
typedef struct ke_k8s_patch_meta {
    const char *strategy;
    const char *merge_key;
} ke_k8s_patch_meta;

/* ke_k8s_patch_meta_fn looks up the patch metadata of the field at path of
 * an object of kind `kind`. path runs from the object root, dot-separated,
 * with "[]" standing for any element of a list: "spec.containers",
 * "spec.containers[].env", "metadata.finalizers". Returns 1 and fills
 * *meta when the field has metadata, 0 otherwise. The strings of *meta
 * must live as long as the patch call. */
typedef int (*ke_k8s_patch_meta_fn)(void *ud, const char *kind, const char *path,
                                    ke_k8s_patch_meta *meta);

/* ke_k8s_strategic_patch applies a strategic merge patch (an object) to
 * *doc (an object) of kind `kind`, metadata from meta(ud, ...) (meta may be
 * NULL: no field has any, so every list is replaced):
 *
 *  - maps merge recursively, null deletes a key, a value of another type
 *    replaces; lists are replaced whole unless their strategy is "merge";
 *  - a merge list of objects merges each patch element into the element
 *    with the same merge-key value, or appends it; an element
 *    {"<key>": v, "$patch": "delete"} deletes the elements with key v, an
 *    element {"$patch": "replace"} replaces the list with the patch's other
 *    elements; a merge list of primitives is a set: the union, original
 *    values first, duplicates dropped;
 *  - in a map, "$patch": "replace" replaces the map with the rest of the
 *    patch map, "$patch": "delete" deletes the map (the key holding it; at
 *    the root it empties the object), "$patch": "merge" is the default;
 *  - "$retainKeys": [keys] keeps only those keys of the map (after the
 *    merge); every non-null key of the patch map must be one of them;
 *  - "$deleteFromPrimitiveList/<f>": [values] removes those values from
 *    the list f (before the patch's own f merges in);
 *  - "$setElementOrder/<f>": [elements] orders the merged merge list f:
 *    elements are named by {"<key>": v} (or by value for primitives). The
 *    named elements take the directive's order; elements it does not name
 *    (the server's, not in the patch) keep their relative order and their
 *    place relative to the named ones in the original list, so ones that
 *    came last stay last. The patch's own f must list its elements in the
 *    directive's order. Ignored on a list without strategy "merge".
 *
 * Other keys starting with '$' are ordinary keys. Refused with KE_EINVAL
 * and the path in why: a non-object patch or document, a $patch other than
 * replace, delete or merge, a merge-list element without its merge key
 * ("spec.containers[1]: missing merge key \"name\"", the index being the
 * patch's), malformed directives, nesting deeper than KE_K8S_JSON_DEPTH_MAX.
 * Returns 0, KE_EINVAL or KE_ENOMEM. */
int ke_k8s_strategic_patch(json_t **doc, const json_t *patch, const char *kind,
                           ke_k8s_patch_meta_fn meta, void *ud, char *why, size_t len);

#endif
