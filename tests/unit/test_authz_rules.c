/*
 * test_authz_rules.c — lib/authz's decisions without a server or a store:
 * RBAC objects fed with ke_authz_put, identities made by hand, requests
 * built as the services receive them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_authz.h"
#include "ke_err.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void put(ke_authz *az, const char *json)
{
    json_t *o = json_loads(json, 0, NULL);
    assert_non_null(o);
    assert_int_equal(ke_authz_put(az, o), 0);
    json_decref(o);
}

static ke_authz *fresh(void)
{
    ke_authz_config c = {0};
    ke_authz *az = NULL;
    assert_int_equal(ke_authz_new(&c, &az), 0);
    return az;
}

#define RBAC "\"apiVersion\":\"rbac.authorization.k8s.io/v1\","

static int allows(ke_authz *az, const char *user, const char *group, const char *verb,
                  const char *api, const char *res, const char *ns, const char *name)
{
    const char *groups[1] = {group};
    return ke_authz_rbac_allows(az, user, groups, group ? 1 : 0, verb, api, res, ns, name);
}

static void test_authz_wildcards_match_any_verb_resource_group(void **state)
{
    (void)state;
    ke_authz *az = fresh();
    put(az, "{" RBAC "\"kind\":\"ClusterRole\",\"metadata\":{\"name\":\"all\"},\"rules\":[{"
            "\"apiGroups\":[\"*\"],\"resources\":[\"*\"],\"verbs\":[\"*\"]}]}");
    put(az, "{" RBAC "\"kind\":\"ClusterRole\",\"metadata\":{\"name\":\"pods-read\"},\"rules\":[{"
            "\"apiGroups\":[\"\"],\"resources\":[\"pods\"],\"verbs\":[\"get\",\"list\"]}]}");
    put(az, "{" RBAC "\"kind\":\"ClusterRoleBinding\",\"metadata\":{\"name\":\"b1\"},"
            "\"subjects\":[{\"kind\":\"User\",\"name\":\"root\"}],\"roleRef\":{\"kind\":"
            "\"ClusterRole\",\"name\":\"all\"}}");
    put(az, "{" RBAC "\"kind\":\"ClusterRoleBinding\",\"metadata\":{\"name\":\"b2\"},"
            "\"subjects\":[{\"kind\":\"User\",\"name\":\"reader\"}],\"roleRef\":{\"kind\":"
            "\"ClusterRole\",\"name\":\"pods-read\"}}");
    assert_true(allows(az, "root", NULL, "delete", "devices.kubeedge.io", "devices/twin", "x", "y"));
    assert_true(allows(az, "root", NULL, "list", "", "nodes", "", ""));
    assert_true(allows(az, "reader", NULL, "get", "", "pods", "prod", "web"));
    assert_true(allows(az, "reader", NULL, "list", "", "pods", "", ""));
    assert_false(allows(az, "reader", NULL, "watch", "", "pods", "", ""));
    assert_false(allows(az, "reader", NULL, "get", "", "secrets", "prod", "s"));
    /* the group must match too: devices are not in the core group */
    assert_false(allows(az, "reader", NULL, "get", "devices.kubeedge.io", "pods", "p", "x"));
    assert_false(allows(az, "nobody", NULL, "get", "", "pods", "prod", "web"));
    /* deleting the binding takes the grant away */
    assert_int_equal(ke_authz_remove(az, "ClusterRoleBinding", "", "b2"), 0);
    assert_false(allows(az, "reader", NULL, "get", "", "pods", "prod", "web"));
    ke_authz_free(az);
}

static void test_authz_resource_names_limit_to_named_requests(void **state)
{
    (void)state;
    ke_authz *az = fresh();
    put(az, "{" RBAC "\"kind\":\"Role\",\"metadata\":{\"name\":\"one\",\"namespace\":\"ns\"},"
            "\"rules\":[{\"apiGroups\":[\"\"],\"resources\":[\"configmaps\"],\"verbs\":[\"get\","
            "\"list\",\"update\"],\"resourceNames\":[\"cfg\"]}]}");
    put(az, "{" RBAC "\"kind\":\"RoleBinding\",\"metadata\":{\"name\":\"b\",\"namespace\":\"ns\"},"
            "\"subjects\":[{\"kind\":\"User\",\"name\":\"u\"}],\"roleRef\":{\"kind\":\"Role\","
            "\"name\":\"one\"}}");
    assert_true(allows(az, "u", NULL, "get", "", "configmaps", "ns", "cfg"));
    assert_true(allows(az, "u", NULL, "update", "", "configmaps", "ns", "cfg"));
    assert_false(allows(az, "u", NULL, "get", "", "configmaps", "ns", "other"));
    assert_false(allows(az, "u", NULL, "list", "", "configmaps", "ns", "")); /* no name */
    assert_false(allows(az, "u", NULL, "get", "", "configmaps", "ns2", "cfg"));
    ke_authz_free(az);
}

static void test_authz_rolebinding_to_clusterrole_is_scoped_to_its_namespace(void **state)
{
    (void)state;
    ke_authz *az = fresh();
    put(az, "{" RBAC "\"kind\":\"ClusterRole\",\"metadata\":{\"name\":\"edit\"},\"rules\":[{"
            "\"apiGroups\":[\"*\"],\"resources\":[\"*\"],\"verbs\":[\"*\"]}]}");
    put(az, "{" RBAC "\"kind\":\"RoleBinding\",\"metadata\":{\"name\":\"b\",\"namespace\":"
            "\"team\"},\"subjects\":[{\"kind\":\"Group\",\"name\":\"devs\"}],\"roleRef\":{"
            "\"kind\":\"ClusterRole\",\"name\":\"edit\"}}");
    assert_true(allows(az, "alice", "devs", "delete", "", "pods", "team", "x"));
    assert_true(allows(az, "alice", "devs", "list", "", "pods", "team", ""));
    assert_false(allows(az, "alice", "devs", "delete", "", "pods", "prod", "x"));
    assert_false(allows(az, "alice", "devs", "list", "", "pods", "", "")); /* all namespaces */
    assert_false(allows(az, "alice", "devs", "get", "", "nodes", "", "edge-1")); /* cluster */
    assert_false(allows(az, "alice", "ops", "delete", "", "pods", "team", "x")); /* group */
    /* a RoleBinding's Role is looked up in the binding's namespace */
    put(az, "{" RBAC "\"kind\":\"Role\",\"metadata\":{\"name\":\"r\",\"namespace\":\"other\"},"
            "\"rules\":[{\"apiGroups\":[\"*\"],\"resources\":[\"*\"],\"verbs\":[\"*\"]}]}");
    put(az, "{" RBAC "\"kind\":\"RoleBinding\",\"metadata\":{\"name\":\"b2\",\"namespace\":"
            "\"team\"},\"subjects\":[{\"kind\":\"User\",\"name\":\"bob\"}],\"roleRef\":{"
            "\"kind\":\"Role\",\"name\":\"r\"}}");
    assert_false(allows(az, "bob", NULL, "get", "", "pods", "team", "x"));
    assert_false(allows(az, "bob", NULL, "get", "", "pods", "other", "x"));
    ke_authz_free(az);
}

static ke_rpc_identity ident(const char *user, const char *group)
{
    ke_rpc_identity id;
    memset(&id, 0, sizeof(id));
    id.kind = KE_RPC_ID_CERT;
    snprintf(id.user, sizeof(id.user), "%s", user);
    if (group) {
        snprintf(id.groups[0], sizeof(id.groups[0]), "%s", group);
        id.n_groups = 1;
    }
    return id;
}

static int holds_web(void *ud, const char *node, const char *kind, const char *ns,
                     const char *name)
{
    (void)ud;
    return strcmp(node, "edge-1") == 0 && strcmp(ns, "default") == 0 &&
           ((strcmp(kind, "Pod") == 0 && strcmp(name, "web") == 0) ||
            (strcmp(kind, "Secret") == 0 && strcmp(name, "web-secret") == 0));
}

static int get(ke_authz *az, const ke_rpc_identity *id, const char *kind, const char *ns,
               const char *name, char *why, size_t len)
{
    Ke__V1__ObjectRef r = KE__V1__OBJECT_REF__INIT;
    r.kind = (char *)kind;
    r.namespace_ = (char *)ns;
    r.name = (char *)name;
    return ke_authz_decide(az, id, "/ke.v1.EdgeController/Get", &r.base, why, len);
}

static void test_authz_decide_masters_nodes_anonymous_unknown(void **state)
{
    (void)state;
    ke_authz *az = fresh();
    assert_int_equal(ke_authz_add_holder(az, holds_web, NULL), 0);
    char why[KE_AUTHZ_WHY_MAX];
    ke_rpc_identity admin = ident("system:admin", "system:masters"),
                    n1 = ident("system:node:edge-1", "system:nodes"),
                    n2 = ident("system:node:edge-2", "system:nodes"), anon;
    memset(&anon, 0, sizeof(anon));
    assert_int_equal(get(az, &admin, "Secret", "", "anything", why, sizeof(why)), KE_RPC_OK);
    assert_int_equal(get(az, &n1, "Secret", "", "web-secret", why, sizeof(why)), KE_RPC_OK);
    assert_int_equal(get(az, &n1, "Node", "", "edge-1", why, sizeof(why)), KE_RPC_OK);
    assert_int_equal(get(az, &n1, "Node", "", "edge-2", why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    assert_int_equal(get(az, &n2, "Secret", "", "web-secret", why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(why, "user \"system:node:edge-2\" (groups: system:nodes) cannot get "
                                "secrets in namespace \"default\""));
    assert_int_equal(get(az, &anon, "Secret", "", "web-secret", why, sizeof(why)),
                     KE_RPC_UNAUTHENTICATED);
    /* a CN that claims to be a node without the group is just a user */
    ke_rpc_identity fake = ident("system:node:edge-1", NULL);
    assert_int_equal(get(az, &fake, "Secret", "", "web-secret", why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    /* a node never writes through the user API, even what it holds */
    Ke__V1__ApplyRequest ap = KE__V1__APPLY_REQUEST__INIT;
    const char *pod = "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"web\"}}";
    ap.object_json.data = (uint8_t *)pod;
    ap.object_json.len = strlen(pod);
    assert_int_equal(ke_authz_decide(az, &n1, "/ke.v1.EdgeController/Apply", &ap.base, why,
                                     sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    /* unknown methods are denied, even to masters' peers without a rule */
    assert_int_equal(ke_authz_decide(az, &n1, "/ke.v1.Nope/Do", NULL, why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    /* the Hub API is for masters; Bootstrap for everyone */
    assert_int_equal(ke_authz_decide(az, &n1, "/ke.v1.Hub/ListNodes", NULL, why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    assert_int_equal(ke_authz_decide(az, &anon, "/ke.v1.CloudHub/Bootstrap", NULL, why,
                                     sizeof(why)),
                     KE_RPC_OK);
    /* control characters in a peer's name never reach the message */
    ke_rpc_identity evil = ident("eve\n[forged] line", NULL);
    assert_int_equal(get(az, &evil, "Secret", "", "s", why, sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    assert_null(strchr(why, '\n'));
    ke_authz_free(az);
}

static void test_authz_apply_needs_create_and_update_unless_versioned(void **state)
{
    (void)state;
    ke_authz *az = fresh();
    put(az, "{" RBAC "\"kind\":\"ClusterRole\",\"metadata\":{\"name\":\"upd\"},\"rules\":[{"
            "\"apiGroups\":[\"\"],\"resources\":[\"configmaps\"],\"verbs\":[\"update\"]}]}");
    put(az, "{" RBAC "\"kind\":\"ClusterRoleBinding\",\"metadata\":{\"name\":\"b\"},"
            "\"subjects\":[{\"kind\":\"User\",\"name\":\"u\"}],\"roleRef\":{\"kind\":"
            "\"ClusterRole\",\"name\":\"upd\"}}");
    ke_rpc_identity u = ident("u", NULL);
    char why[KE_AUTHZ_WHY_MAX];
    Ke__V1__ApplyRequest ap = KE__V1__APPLY_REQUEST__INIT;
    const char *plain = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"
                        "\"c\"}}";
    const char *versioned = "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{"
                            "\"name\":\"c\",\"resourceVersion\":\"7\"}}";
    ap.object_json.data = (uint8_t *)plain;
    ap.object_json.len = strlen(plain);
    assert_int_equal(ke_authz_decide(az, &u, "/ke.v1.EdgeController/Apply", &ap.base, why,
                                     sizeof(why)),
                     KE_RPC_PERMISSION_DENIED);
    assert_non_null(strstr(why, "cannot create configmaps"));
    ap.object_json.data = (uint8_t *)versioned;
    ap.object_json.len = strlen(versioned);
    assert_int_equal(ke_authz_decide(az, &u, "/ke.v1.EdgeController/Apply", &ap.base, why,
                                     sizeof(why)),
                     KE_RPC_OK);
    ke_authz_free(az);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_authz_wildcards_match_any_verb_resource_group),
        cmocka_unit_test(test_authz_resource_names_limit_to_named_requests),
        cmocka_unit_test(test_authz_rolebinding_to_clusterrole_is_scoped_to_its_namespace),
        cmocka_unit_test(test_authz_decide_masters_nodes_anonymous_unknown),
        cmocka_unit_test(test_authz_apply_needs_create_and_update_unless_versioned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
