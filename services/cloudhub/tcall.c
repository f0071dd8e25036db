/*
 * tcall.c — tunnel calls: the registry that Hub.Logs (logs.c) and
 * Hub.ProxyHTTP (service.c) share for a caller's rpc call waiting on frames
 * from a node's tunnel. One table per kind (CH_TCALL_LOGS, CH_TCALL_SERVICE):
 *
 *   id          hub-unique within its kind; random start, so that a
 *               restarted cloudcore does not take a frame meant for a call
 *               of its predecessor
 *   table       id (decimal) -> ch_tcall, to route a frame from the edge
 *   node list   the node's calls of that kind, bounded per node
 *   tunnel gone every call of the node ends UNAVAILABLE
 *
 * What each kind sends down the tunnel, and what its answers become, stays
 * in its own file; this file knows only the call, its id and its node.
 *
 * Locking: ch->mu guards the tables and each node's lists. A call is
 * linked (active) from its request until its end (answer, tunnel gone,
 * caller gone). Its memory is the caller's rpc call's data, freed in the
 * call's on_close (ch_tcall_close).
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int ch_tcall_init(cloudhub *ch)
{
    for (int k = 0; k < CH_TCALL_KINDS; k++) {
        ch_tcall_table *t = &ch->tcalls[k];
        uint64_t r = 0;
        if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
            r = (uint64_t)ke_map_len(ch->nodes) + 1; /* ids stay unique in this process */
        t->next_id = (r & ((1ull << 62) - 1)) | 1;
        if (!(t->by_id = ke_map_new()))
            return KE_ENOMEM;
    }
    return 0;
}

void ch_tcall_free(cloudhub *ch)
{
    for (int k = 0; k < CH_TCALL_KINDS; k++) {
        ke_map_free(ch->tcalls[k].by_id); /* empty: every caller's call has closed */
        ch->tcalls[k].by_id = NULL;
    }
}

/* tcall_link gives tc an id and links it to n. ch->mu held. 0 or KE_ENOMEM. */
static int tcall_link(cloudhub *ch, ch_node *n, ch_tcall *tc)
{
    ch_tcall_table *t = &ch->tcalls[tc->kind];
    tc->id = t->next_id++;
    if (t->next_id == 0)
        t->next_id = 1;
    snprintf(tc->key, sizeof(tc->key), "%" PRIu64, tc->id);
    if (ke_map_put(t->by_id, tc->key, tc, NULL) != 0)
        return KE_ENOMEM;
    ch_tcall_list *l = &n->tcalls[tc->kind];
    tc->n = n;
    tc->active = 1;
    tc->next = l->head;
    if (l->head)
        l->head->prev = tc;
    l->head = tc;
    l->len++;
    return 0;
}

void ch_tcall_unlink(cloudhub *ch, ch_tcall *tc)
{
    if (!tc->active)
        return;
    ke_map_del(ch->tcalls[tc->kind].by_id, tc->key);
    ch_tcall_list *l = &tc->n->tcalls[tc->kind];
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        l->head = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    l->len--;
    tc->prev = tc->next = NULL;
    tc->n = NULL;
    tc->active = 0;
}

uint64_t ch_tcall_open(cloudhub *ch, const ch_tcall_kind *kind, ke_rpc_call *call,
                       const char *node, const void *arg)
{
    ch_tcall *tc = calloc(1, sizeof(*tc));
    if (!tc) {
        ke_rpc_call_finish(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return 0;
    }
    tc->kind = kind->kind;
    tc->call = call;
    snprintf(tc->node, sizeof(tc->node), "%s", node);
    ke_rpc_call_set_data(call, tc); /* freed in on_close */
    char why[160];
    int code = KE_RPC_OK;
    ch_lock(ch);
    ch_node *n = ke_map_get(ch->nodes, node);
    if (!n || !n->stream || !n->hello_done) {
        snprintf(why, sizeof(why), "node %s is not connected", node);
        code = KE_RPC_UNAVAILABLE;
    } else if (n->tcalls[kind->kind].len >= kind->node_max) {
        snprintf(why, sizeof(why), "node %s has %u %s", node, kind->node_max, kind->busy);
        code = KE_RPC_RESOURCE_EXHAUSTED;
    } else if (tcall_link(ch, n, tc) != 0) {
        snprintf(why, sizeof(why), "out of memory");
        code = KE_RPC_RESOURCE_EXHAUSTED;
    }
    if (code == KE_RPC_OK) {
        int rc = kind->send(n->stream, tc->id, arg);
        if (rc != 0) {
            ch_tcall_unlink(ch, tc);
            snprintf(why, sizeof(why), "node %s is not connected (its tunnel is %s)", node,
                     rc == KE_EFULL ? kind->tunnel_full : "ending");
            code = KE_RPC_UNAVAILABLE;
        }
    }
    uint64_t id = tc->id;
    pthread_mutex_unlock(&ch->mu);
    if (code != KE_RPC_OK) {
        ke_rpc_call_finish(call, code, why, NULL);
        return 0;
    }
    return id;
}

void ch_tcall_close(cloudhub *ch, ke_rpc_call *call,
                    void (*abandoned)(cloudhub *ch, ch_node *n, const ch_tcall *tc))
{
    ch_tcall *tc = ke_rpc_call_get_data(call);
    if (!tc)
        return;
    ch_lock(ch);
    if (tc->active) {
        ch_node *n = tc->n;
        ch_tcall_unlink(ch, tc);
        abandoned(ch, n, tc);
    }
    pthread_mutex_unlock(&ch->mu);
    free(tc);
}

ch_tcall *ch_tcall_find(cloudhub *ch, int kind, uint64_t id, const char *node,
                        ke_rpc_call *tunnel)
{
    char key[24];
    snprintf(key, sizeof(key), "%" PRIu64, id);
    ch_tcall *tc = ke_map_get(ch->tcalls[kind].by_id, key);
    if (!tc || strcmp(tc->node, node) != 0 || tc->n->stream != tunnel)
        return NULL;
    return tc;
}

void ch_tcall_tunnel_gone(cloudhub *ch, ch_node *n, const char *why)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "node %s is not connected (%s)", n->name, why);
    for (int k = 0; k < CH_TCALL_KINDS; k++) {
        while (n->tcalls[k].head) {
            ch_tcall *tc = n->tcalls[k].head;
            ch_tcall_unlink(ch, tc);
            ke_rpc_call_finish(tc->call, KE_RPC_UNAVAILABLE, msg, NULL);
        }
    }
}
