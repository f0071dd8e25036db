/*
 * join.c — how a node gets and keeps its identity:
 *
 *   Bootstrap  the CA certificate, to anyone (the edge checks its hash
 *              against the token before trusting it)
 *   Join       token + CSR -> node certificate; refused for a bad or
 *              expired token, a use-limited token that has made all its
 *              joins, a CSR whose CN is neither the node name nor
 *              system:node:<name> or whose key the policy refuses
 *              (ke_pki.h), or a node name already joined. Nothing is
 *              written on a refusal; a use is counted in the transaction
 *              that registers the node.
 *   Renew      a joined node, over mutual TLS, trades a new CSR for a new
 *              certificate; the one it replaces stays accepted until it
 *              expires, so streams open across the rotation keep working.
 *
 * Every certificate issued here is CN=system:node:<name>, O=system:nodes
 * (the node's identity, docs/security.md), whatever subject the CSR asks
 * for: only its key is used. A node whose certificate predates that naming
 * (CN=<name>) gets the new naming at its next Renew.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_pki.h"
#include "ke_time.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void bootstrap_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    (void)m;
    Ke__V1__BootstrapReply r = KE__V1__BOOTSTRAP_REPLY__INIT;
    r.ca_pem.data = (uint8_t *)ch->ca_pem;
    r.ca_pem.len = strlen(ch->ca_pem);
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
}

/* valid_node_name: a DNS-1123 label, as Kubernetes node names are. */
static int valid_node_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= CH_NODE_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return 0;
    return 1;
}

static void join_refuse(cloudhub *ch, ke_rpc_call *call, const char *node, int code,
                        const char *why)
{
    char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ew[KE_LOG_ESC_SIZE(256)];
    ke_log_warn(CH_MOD, "join refused node=%s code=%s reason=\"%s\"",
                ke_log_esc(node, en, sizeof(en)), ke_rpc_status_name(code),
                ke_log_esc(why, ew, sizeof(ew)));
    ke_metric_add(ch->m.join_refused, 1);
    ke_rpc_call_finish(call, code, why, NULL);
}

/* cert_ttl_s is the validity to issue: cloudhub.node_cert_ttl, or the
 * shorter one the caller asked for in "ke-cert-ttl-seconds" (>= 60 s). */
static int64_t cert_ttl_s(cloudhub *ch, ke_rpc_call *call)
{
    int64_t max = ch->cfg.node_cert_ttl_ms / 1000;
    char v[32];
    if (ke_rpc_call_metadata(call, "ke-cert-ttl-seconds", v, sizeof(v)) == 0) {
        long long want = atoll(v);
        if (want >= 60 && want < max)
            return want;
    }
    return max;
}

/* issue signs csr (whose CN must be node) and returns the reply fields. */
static int issue(cloudhub *ch, ke_rpc_call *call, const char *node, const char *csr, char **cert,
                 int64_t *not_after, char *fp, char *why, size_t whylen)
{
    char cn[KE_PKI_CN_MAX + 1];
    if (ke_pki_csr_cn(csr, cn, sizeof(cn)) != 0) {
        snprintf(why, whylen, "csr_pem: not a valid, self-signed PKCS#10 request");
        return KE_RPC_INVALID_ARGUMENT;
    }
    char policy[160];
    if (ke_pki_csr_key_check(csr, policy, sizeof(policy)) != 0) {
        snprintf(why, whylen, "csr_pem: %s", policy);
        return KE_RPC_INVALID_ARGUMENT;
    }
    char subject[KE_PKI_CN_MAX + 1];
    int fits = strlen(CLOUDHUB_NODE_CN_PREFIX) + strlen(node) <= KE_PKI_CN_MAX;
    snprintf(subject, sizeof(subject), "%s%s", CLOUDHUB_NODE_CN_PREFIX, fits ? node : "");
    if (strcmp(cn, node) != 0 && (!fits || strcmp(cn, subject) != 0)) {
        ke_err_oneline(cn);
        snprintf(why, whylen, "csr_pem: common name \"%s\" differs from node name \"%s\"", cn,
                 node);
        return KE_RPC_INVALID_ARGUMENT;
    }
    if (!fits) {
        snprintf(why, whylen, "node_name: at most %zu bytes (a node's certificate CN, "
                              "system:node:<name>, is at most %d)",
                 (size_t)KE_PKI_CN_MAX - strlen(CLOUDHUB_NODE_CN_PREFIX), KE_PKI_CN_MAX);
        return KE_RPC_INVALID_ARGUMENT;
    }
    static const char *const groups[] = {CLOUDHUB_NODE_GROUP, NULL};
    if (ke_pki_sign_csr_as(ch->ca_pem, ch->ca_key_pem, csr, subject, groups,
                           cert_ttl_s(ch, call), cert, not_after) != 0 ||
        ke_pki_ca_hash(*cert, fp) != 0) {
        snprintf(why, whylen, "csr_pem: cannot be signed (key too weak or unsupported)");
        return KE_RPC_INVALID_ARGUMENT;
    }
    return KE_RPC_OK;
}

/* reply_certificate answers Join or Renew with cert (freed here). */
static void reply_certificate(cloudhub *ch, ke_rpc_call *call, char *cert, int64_t not_after)
{
    Ke__V1__JoinResponse r = KE__V1__JOIN_RESPONSE__INIT;
    r.certificate_pem.data = (uint8_t *)cert;
    r.certificate_pem.len = strlen(cert);
    r.ca_pem.data = (uint8_t *)ch->ca_pem;
    r.ca_pem.len = strlen(ch->ca_pem);
    r.not_after_ms = not_after;
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    free(cert);
}

static char *pem_copy(ProtobufCBinaryData b)
{
    if (b.len == 0 || b.len > KE_PKI_PEM_MAX)
        return NULL;
    char *s = malloc(b.len + 1);
    if (s) {
        memcpy(s, b.data, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* A join token's use limit, as join_on_message needs it. */
typedef struct join_token {
    char id[KE_PKI_TOKEN_ID_HEX];
    uint32_t uses;   /* 0: any number of joins */
    int64_t expires; /* Unix seconds */
} join_token;

static void token_used_up(const join_token *t, char *why, size_t len)
{
    snprintf(why, len, "token: already used for %u join%s, all it allows; ask for a new one "
                       "(keadm gettoken --uses N)",
             (unsigned)t->uses, t->uses == 1 ? "" : "s");
}

/* token_check reads the use limit of a token ke_pki_token_verify accepted
 * and, for a limited one, refuses it early when the store says it has made
 * all its joins (the count that decides is taken again in the transaction
 * that registers the node). */
static int token_check(cloudhub *ch, const char *token, join_token *t, char *why, size_t len)
{
    memset(t, 0, sizeof(*t));
    if (ke_pki_token_uses(token, t->id, &t->uses) != 0 ||
        ke_pki_token_parse(token, NULL, &t->expires) != 0) {
        snprintf(why, len, "malformed token"); /* verify parsed it: cannot happen */
        return KE_RPC_PERMISSION_DENIED;
    }
    if (t->uses == 0)
        return KE_RPC_OK;
    int64_t used = 0;
    ch_lock(ch);
    int rc = ch_store_token_used(ch, t->id, &used);
    pthread_mutex_unlock(&ch->mu);
    if (rc != 0) {
        snprintf(why, len, "node registry unavailable");
        return KE_RPC_INTERNAL;
    }
    if (used >= (int64_t)t->uses) {
        token_used_up(t, why, len);
        return KE_RPC_PERMISSION_DENIED;
    }
    return KE_RPC_OK;
}

static void join_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__JoinRequest *req = (const Ke__V1__JoinRequest *)m;
    char why[256], fp[KE_PKI_HASH_HEX];
    const char *node = req->node_name;
    int code;
    if (!valid_node_name(node)) {
        join_refuse(ch, call, "-", KE_RPC_INVALID_ARGUMENT,
                    "node_name: must be a DNS-1123 label (a-z, 0-9, '-'; at most 63)");
        return;
    }
    if (ke_pki_token_verify(req->token, ch->ca_pem, ch->secret, ch->secret_len,
                            ke_time_wall_ms() / 1000, why, sizeof(why)) != 0) {
        join_refuse(ch, call, node, KE_RPC_PERMISSION_DENIED, why);
        return;
    }
    join_token tok;
    if ((code = token_check(ch, req->token, &tok, why, sizeof(why))) != KE_RPC_OK) {
        join_refuse(ch, call, node, code, why);
        return;
    }
    char *csr = pem_copy(req->csr_pem), *cert = NULL;
    int64_t not_after = 0;
    code = csr ? issue(ch, call, node, csr, &cert, &not_after, fp, why, sizeof(why))
               : KE_RPC_INVALID_ARGUMENT;
    if (!csr)
        snprintf(why, sizeof(why), "csr_pem: required, at most 64 KiB");
    free(csr);
    if (code != KE_RPC_OK) {
        join_refuse(ch, call, node, code, why);
        return;
    }
    ch_lock(ch);
    ch_node *n = NULL;
    int rc;
    if (ke_map_get(ch->nodes, node)) {
        code = KE_RPC_ALREADY_EXISTS;
        snprintf(why, sizeof(why), "node %s already joined; remove it (Hub.RemoveNode) first",
                 node);
    } else if (!(n = calloc(1, sizeof(*n))) || !(n->pending = ke_map_new())) {
        code = KE_RPC_INTERNAL;
        snprintf(why, sizeof(why), "node registry unavailable");
    } else if ((rc = tok.uses ? ch_store_node_insert_token(ch, node, fp, tok.id, tok.uses,
                                                           tok.expires)
                              : ch_store_node_insert(ch, node, fp)) != 0) {
        code = rc == KE_EPERM ? KE_RPC_PERMISSION_DENIED : KE_RPC_INTERNAL;
        if (rc == KE_EPERM)
            token_used_up(&tok, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "node registry unavailable");
    } else {
        snprintf(n->name, sizeof(n->name), "%s", node);
        n->next_edge_seq = 1;
        n->last_seen_mono = ke_time_mono_ms(); /* idle since it joined */
        ke_map_put(ch->nodes, n->name, n, NULL);
        ke_metric_set(ch->m.known, (int64_t)ke_map_len(ch->nodes));
        n = NULL;
    }
    pthread_mutex_unlock(&ch->mu);
    if (n) {
        ke_map_free(n->pending);
        free(n);
    }
    if (code != KE_RPC_OK) {
        free(cert);
        join_refuse(ch, call, node, code, why);
        return;
    }
    reply_certificate(ch, call, cert, not_after);
    ke_metric_add(ch->m.joins, 1);
    ke_log_info(CH_MOD, "node joined node=%s cert=%.16s", node, fp);
}

static void renew_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    cloudhub *ch = ud;
    const Ke__V1__RenewRequest *req = (const Ke__V1__RenewRequest *)m;
    char node[CH_NODE_NAME_MAX] = "", why[256], fp[KE_PKI_HASH_HEX];
    int code = ch_auth_node(ch, call, node, sizeof(node), why, sizeof(why));
    char *csr = NULL, *cert = NULL;
    int64_t not_after = 0;
    if (code == KE_RPC_OK) {
        csr = pem_copy(req->csr_pem);
        code = csr ? issue(ch, call, node, csr, &cert, &not_after, fp, why, sizeof(why))
                   : KE_RPC_INVALID_ARGUMENT;
        if (!csr)
            snprintf(why, sizeof(why), "csr_pem: required, at most 64 KiB");
        free(csr);
    }
    if (code == KE_RPC_OK) {
        ch_lock(ch);
        if (ch_store_node_rotate(ch, node, fp) != 0) {
            code = KE_RPC_INTERNAL;
            snprintf(why, sizeof(why), "node registry unavailable");
        }
        pthread_mutex_unlock(&ch->mu);
    }
    if (code != KE_RPC_OK) {
        free(cert);
        char en[KE_LOG_ESC_SIZE(CH_NODE_NAME_MAX)], ew[KE_LOG_ESC_SIZE(256)];
        ke_log_warn(CH_MOD, "renew refused node=%s code=%s reason=\"%s\"",
                    ke_log_esc(node[0] ? node : "-", en, sizeof(en)), ke_rpc_status_name(code),
                    ke_log_esc(why, ew, sizeof(ew)));
        ke_rpc_call_finish(call, code, why, NULL);
        return;
    }
    reply_certificate(ch, call, cert, not_after);
    ke_metric_add(ch->m.renewals, 1);
    ke_log_info(CH_MOD, "node certificate renewed node=%s cert=%.16s", node, fp);
}

int ch_join_register(cloudhub *ch, ke_rpc_server *srv)
{
    static const ke_rpc_method_def methods[] = {
        {"Bootstrap", KE_RPC_UNARY, {.on_message = bootstrap_on_message}},
        {"Join", KE_RPC_UNARY, {.on_message = join_on_message}},
        {"Renew", KE_RPC_UNARY, {.on_message = renew_on_message}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__cloud_hub__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), ch);
}
