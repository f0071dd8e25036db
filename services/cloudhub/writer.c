/*
 * writer.c — the group-commit writer: one thread that stores the
 * publishes of every caller (Hub.Publish, Hub.PublishBatch), the
 * upstream reports of every node and the consumers' cursor moves
 * (Hub.Subscribe acks) in shared SQLite transactions, and
 * answers each caller (acks each report to its edge) after the commit that
 * holds its messages.
 *
 * A handler (on an rpc loop thread) checks its request, copies the
 * messages into a job and hands it over (ch_writer_submit): nothing there
 * waits on the file. The writer takes every job queued, up to
 * CH_WRITE_BATCH_ITEMS messages (a job is never split), and under ch->mu
 * runs them in queue order in one transaction (more only when a report
 * repeats a key, see run_batch), then queues what was stored to the
 * connected nodes and acks the reports; it answers the publishers after
 * releasing ch->mu. A commit therefore costs once per batch, not once per
 * message, and the batch grows by itself with the load: while one commit
 * runs, the next batch gathers. Nothing is answered or acked before its
 * commit, and a failed commit answers every publish of its transaction
 * INTERNAL (nothing queued) and ends its reports' streams unacked.
 *
 * The queue is bounded (CH_WRITE_QUEUE_BYTES of copied messages, and
 * CH_WRITE_QUEUE_ITEMS messages): past it a publish is refused
 * RESOURCE_EXHAUSTED at once, with nothing stored.
 */
#include "cloudhub_internal.h"

#include "ke_err.h"
#include "ke_log.h"
#include "ke_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ch_writer_job_new allocates a job for n items (zeroed). */
ch_wjob *ch_writer_job_new(ke_rpc_call *call, int batch, size_t n)
{
    ch_wjob *j = calloc(1, sizeof(*j) + n * sizeof(ch_pub));
    if (!j)
        return NULL;
    j->call = call;
    j->batch = batch;
    j->n = n;
    return j;
}

void ch_writer_job_free(ch_wjob *j)
{
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++)
        free(j->items[i].buf);
    free(j);
}

int ch_writer_submit(cloudhub *ch, ch_wjob *j)
{
    size_t bytes = sizeof(*j) + j->n * sizeof(ch_pub);
    for (size_t i = 0; i < j->n; i++)
        bytes += j->items[i].len + strlen(j->items[i].key) + 1;
    j->bytes = bytes;
    int rc = 0;
    pthread_mutex_lock(&ch->wmu);
    if (ch->wstop) {
        rc = KE_ECLOSED;
    } else if (ch->wbytes + bytes > CH_WRITE_QUEUE_BYTES ||
               ch->witems + j->n > CH_WRITE_QUEUE_ITEMS) {
        rc = KE_EFULL;
    } else {
        j->next = NULL;
        if (ch->wtail)
            ch->wtail->next = j;
        else
            ch->whead = j;
        ch->wtail = j;
        ch->wbytes += bytes;
        ch->witems += (uint32_t)j->n;
        pthread_cond_signal(&ch->wcv);
    }
    pthread_mutex_unlock(&ch->wmu);
    if (rc == KE_EFULL)
        ke_metric_add(ch->m.write_refused, 1);
    return rc;
}

/* report_ident writes "<group>\x1f<key>" of a report into buf. */
static const char *report_ident(const ch_pub *p, char *buf, size_t len)
{
    snprintf(buf, len, "%s\x1f%s", p->group, p->key);
    return buf;
}

/* store_job runs one job's items in the open transaction (ch->mu held).
 * Returns 0 or the store error that fails the transaction. */
static int store_job(cloudhub *ch, ch_wjob *j)
{
    if (j->cack)
        return ch_subscribe_ack_log(ch, j, &j->collected);
    if (j->report)
        return ch_tunnel_report_log(ch, j->call, &j->items[0]);
    for (size_t i = 0; i < j->n; i++) {
        ch_pub *p = &j->items[i];
        p->rc = ch_store_object_put(ch, p->node, p->key, p->rv, p->deleted, p->msg, p->len);
        if (p->rc != 0 && p->rc != KE_EEXIST && p->rc != KE_ECONFLICT)
            return p->rc;
    }
    return 0;
}

/* ch_writer_pump_later puts node n on the list of nodes to pump once the
 * batch has released ch->mu (ch->mu held). Sending hands each frame to grpc, whose
 * write can run on the calling thread: done per node under short holds of
 * the lock, a batch's sends (its publishes, the acks of its reports) no
 * longer keep every other thread (acks, Hellos) waiting for all of them.
 * When the list cannot grow, n is pumped at once, as before. Writer thread
 * only. */
void ch_writer_pump_later(cloudhub *ch, ch_node *n)
{
    if (n->pump_owed)
        return;
    if (ch->wpump_n == ch->wpump_cap) {
        size_t cap = ch->wpump_cap ? ch->wpump_cap * 2 : 256;
        void *v = realloc(ch->wpump, cap * sizeof(*ch->wpump));
        if (!v) {
            ch_queue_pump(ch, n);
            return;
        }
        ch->wpump = v;
        ch->wpump_cap = cap;
    }
    memcpy(ch->wpump[ch->wpump_n++], n->name, CH_NODE_NAME_MAX);
    n->pump_owed = 1;
}

/* pump_owed pumps the nodes ch_writer_pump_later listed, each under its
 * own hold of ch->mu (not held on entry). A node removed meanwhile is skipped. */
static void pump_owed(cloudhub *ch)
{
    for (size_t i = 0; i < ch->wpump_n; i++) {
        ch_lock(ch);
        ch_node *n = ke_map_get(ch->nodes, ch->wpump[i]);
        if (n && n->pump_owed) {
            n->pump_owed = 0;
            ch_queue_pump(ch, n);
        }
        pthread_mutex_unlock(&ch->mu);
    }
    ch->wpump_n = 0;
}

/* queue_job, after the commit that holds the job: queues a publish's
 * stored messages to the connected nodes and numbers them, or acks a logged
 * report and wakes its consumers (ch->mu held). */
static void queue_job(cloudhub *ch, ch_wjob *j)
{
    if (j->cack) {
        if (j->sub)
            ch_subscribe_acked(ch, j->sub, j->ack_to, j->collected, 0);
        return;
    }
    if (j->report) {
        ch_tunnel_report_done(ch, j->call, &j->items[0], 0);
        return;
    }
    for (size_t i = 0; i < j->n; i++) {
        ch_pub *p = &j->items[i];
        /* A resend of the stored version goes to the node again (the edge
         * asked for an object it lacks); otherwise the same version is a
         * retry. */
        if (p->rc != 0 && !(p->rc == KE_EEXIST && p->resend))
            continue;
        ch_node *n = ke_map_get(ch->nodes, p->node);
        if (n && n->hello_done) {
            int qrc = ch_queue_push(ch, n, p->key, p->rv, p->msg, p->len, p->deleted, 0);
            if (qrc != 0) {
                /* The store has it: the node's next resync sends it. */
                ke_log_warn(CH_MOD, "cannot queue a publish node=%s key=%s rv=%llu: %s; sent "
                                    "at the next resync",
                            n->name, p->key, (unsigned long long)p->rv, ke_strerror(qrc));
                ch_node_disconnect(ch, n, KE_RPC_RESOURCE_EXHAUSTED, "cloudhub is out of memory");
            }
            ch_writer_pump_later(ch, n);
            p->reply_seq = ++ch->pub_seq;
        } else if (p->rc == 0) {
            p->reply_seq = ++ch->pub_seq;
        }
    }
}

/* commit_segment commits the open transaction holding jobs [from, to) and
 * does their after-commit work, or, when store_rc or the commit failed,
 * ends their reports' streams unacked; sets each job's store_rc. */
static int commit_segment(cloudhub *ch, ch_wjob *from, ch_wjob *to, int store_rc)
{
    int rc = store_rc;
    if (rc == 0)
        rc = ke_sqlite_commit(ch->db);
    else
        ke_sqlite_rollback(ch->db);
    ke_metric_add(ch->m.write_commits, 1);
    for (ch_wjob *j = from; j != to; j = j->next) {
        j->store_rc = rc;
        if (rc == 0)
            queue_job(ch, j);
        else if (j->report)
            ch_tunnel_report_done(ch, j->call, &j->items[0], rc);
        else if (j->cack && j->sub)
            ch_subscribe_acked(ch, j->sub, j->ack_to, 0, rc);
    }
    return rc;
}

/* run_batch stores the jobs in as few transactions as the reports allow
 * (ch->mu held). A report of a (group, key) already logged in the open
 * transaction first commits it and hands it to the consumers: the log keeps
 * only the newest entry of a key, and a consumer keeping up must see each
 * report, as it would one transaction per report. */
static void run_batch(cloudhub *ch, ch_wjob *jobs)
{
    ke_map *idents = ke_map_new(); /* reports' (group, key) in the open transaction */
    char ident[CH_KEY_MAX * 2];
    ch_wjob *seg = jobs;
    int rc = ke_sqlite_begin(ch->db);
    for (ch_wjob *j = jobs; j; j = j->next) {
        if (rc == 0 && j->report) {
            const char *id = report_ident(&j->items[0], ident, sizeof(ident));
            if (!idents || ke_map_get(idents, id)) {
                commit_segment(ch, seg, j, 0);
                seg = j;
                ke_map_free(idents);
                idents = ke_map_new();
                rc = ke_sqlite_begin(ch->db);
            }
        }
        if (rc == 0)
            rc = store_job(ch, j);
        if (rc == 0 && j->report && j->items[0].rc == 0 && idents &&
            ke_map_put(idents, report_ident(&j->items[0], ident, sizeof(ident)), (void *)1,
                       NULL) != 0) {
            /* cannot track it: commit here so the next one is safe */
            commit_segment(ch, seg, j->next, 0);
            seg = j->next;
            ke_map_free(idents);
            idents = NULL;
            rc = j->next ? ke_sqlite_begin(ch->db) : 0;
        }
    }
    if (seg)
        commit_segment(ch, seg, NULL, rc);
    ke_map_free(idents);
}

static void conflict_why(const ch_pub *p, char *why, size_t len)
{
    snprintf(why, len, "message.header.resource_version: %llu is older than the version stored "
                       "for %s",
             (unsigned long long)p->rv, p->key);
}

/* answer finishes a job's call (no lock held) and frees the job. */
static void answer(ch_wjob *j)
{
    char why[CH_KEY_MAX + 128];
    int store_rc = j->store_rc;
    if (j->report || j->cack) {
        /* acked (or not) under ch->mu already; no reply of its own */
    } else if (store_rc != 0) {
        ke_rpc_call_finish(j->call, KE_RPC_INTERNAL,
                           store_rc == KE_ECLOSED ? "cloudhub is stopping" : "store error", NULL);
    } else if (!j->batch) {
        ch_pub *p = &j->items[0];
        if (p->rc == KE_ECONFLICT) {
            conflict_why(p, why, sizeof(why));
            ke_rpc_call_finish(j->call, KE_RPC_FAILED_PRECONDITION, why, NULL);
        } else {
            Ke__V1__PublishReply reply = KE__V1__PUBLISH_REPLY__INIT;
            reply.seq = p->reply_seq;
            ke_rpc_call_finish(j->call, KE_RPC_OK, NULL, &reply.base);
        }
    } else {
        Ke__V1__PublishResult *res = calloc(j->n, sizeof(*res));
        Ke__V1__PublishResult **ptrs = calloc(j->n, sizeof(*ptrs));
        char **whys = calloc(j->n, sizeof(*whys));
        int ok = res && ptrs && whys;
        for (size_t i = 0; ok && i < j->n; i++) {
            ch_pub *p = &j->items[i];
            ke__v1__publish_result__init(&res[i]);
            res[i].seq = p->reply_seq;
            if (p->rc == KE_ECONFLICT) {
                conflict_why(p, why, sizeof(why));
                if (!(whys[i] = strdup(why))) {
                    ok = 0;
                    break;
                }
                res[i].code = KE_RPC_FAILED_PRECONDITION;
                res[i].error = whys[i];
            }
            ptrs[i] = &res[i];
        }
        if (ok) {
            Ke__V1__PublishBatchReply reply = KE__V1__PUBLISH_BATCH_REPLY__INIT;
            reply.n_results = j->n;
            reply.results = ptrs;
            ke_rpc_call_finish(j->call, KE_RPC_OK, NULL, &reply.base);
        } else {
            /* Stored and queued, but the answer cannot be built: the caller
             * retries, and a retry of a stored version is a no-op. */
            ke_rpc_call_finish(j->call, KE_RPC_RESOURCE_EXHAUSTED,
                               "out of memory for the reply (the items were stored)", NULL);
        }
        for (size_t i = 0; whys && i < j->n; i++)
            free(whys[i]);
        free(whys);
        free(ptrs);
        free(res);
    }
    ke_rpc_call_unref(j->call);
    ch_writer_job_free(j);
}

static void *writer_main(void *arg)
{
    cloudhub *ch = arg;
    pthread_mutex_lock(&ch->wmu);
    for (;;) {
        while (!ch->whead && !ch->wstop)
            pthread_cond_wait(&ch->wcv, &ch->wmu);
        if (!ch->whead)
            break; /* stopping, and nothing left */
        /* Take jobs up to the batch bound (at least one). */
        ch_wjob *first = ch->whead, *last = first;
        size_t items = first->n, bytes = first->bytes;
        while (last->next && items + last->next->n <= CH_WRITE_BATCH_ITEMS) {
            last = last->next;
            items += last->n;
            bytes += last->bytes;
        }
        ch->whead = last->next;
        if (!ch->whead)
            ch->wtail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&ch->wmu);

        ch_lock(ch);
        int64_t held = ke_time_mono_ns();
        run_batch(ch, first);
        held = ke_time_mono_ns() - held;
        pthread_mutex_unlock(&ch->mu);
        ke_metric_add_double(ch->m.write_lock_held, (double)held / 1e9);
        pump_owed(ch);
        int failed = 0;
        for (ch_wjob *j = first; j; j = j->next)
            failed += j->store_rc != 0;
        if (failed)
            ke_log_error(CH_MOD, "cannot store %d of %zu writes (their callers get INTERNAL, "
                                 "their reports are not acked)",
                         failed, items);
        ke_metric_add(ch->m.write_items, (int64_t)items);
        for (ch_wjob *j = first, *next; j; j = next) {
            next = j->next;
            answer(j);
        }

        pthread_mutex_lock(&ch->wmu);
        ch->wbytes -= bytes;
        ch->witems -= (uint32_t)items;
    }
    pthread_mutex_unlock(&ch->wmu);
    return NULL;
}

int ch_writer_start(cloudhub *ch)
{
    pthread_mutex_init(&ch->wmu, NULL);
    pthread_cond_init(&ch->wcv, NULL);
    if (pthread_create(&ch->writer, NULL, writer_main, ch) != 0) {
        pthread_cond_destroy(&ch->wcv);
        pthread_mutex_destroy(&ch->wmu);
        return KE_ENOMEM;
    }
    pthread_setname_np(ch->writer, "ke-cloudhub-wr");
    ch->writer_running = 1;
    return 0;
}

void ch_writer_stop(cloudhub *ch)
{
    if (!ch->writer_running)
        return;
    /* The writer stores and answers what is queued, then ends: a caller
     * never waits for an answer that will not come. */
    pthread_mutex_lock(&ch->wmu);
    ch->wstop = 1;
    pthread_cond_signal(&ch->wcv);
    pthread_mutex_unlock(&ch->wmu);
    pthread_join(ch->writer, NULL);
    ch->writer_running = 0;
    free(ch->wpump);
    ch->wpump = NULL;
    ch->wpump_n = ch->wpump_cap = 0;
    pthread_cond_destroy(&ch->wcv);
    pthread_mutex_destroy(&ch->wmu);
}
