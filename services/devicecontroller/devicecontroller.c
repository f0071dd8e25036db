/*
 * devicecontroller.c — see devicecontroller.h.
 *
 * Twin shape, as in KubeEdge v1beta1:
 *   desired   spec.properties[].desired.{value, metadata.timestamp}
 *   reported  status.twins[].{propertyName, reported.{value, metadata.timestamp}}
 *   state     status.state ("online", "offline", "unknown"), status.lastOnlineTime
 * Timestamps are milliseconds since the epoch, as decimal strings.
 *
 * Upstream reports (group "twin", resource node/<node>/<ns>/Device/<name>)
 * carry {"twins":[{"propertyName":..,"reported":{"value":..,
 * "metadata":{"timestamp":..}}}], "state":"online"}; only the node the
 * device is bound to may report for it. A reported value older (by its
 * timestamp, when the reading was taken) than the one held is stale and
 * does not replace it.
 */
#include "devicecontroller.h"

#include "cloudhub.pb-c.h"
#include "devicecontroller.pb-c.h"
#include "edgecontroller.pb-c.h"
#include "ke_err.h"
#include "ke_hubclient.h"
#include "ke_k8s.h"
#include "ke_k8s_api.h"
#include "ke_log.h"
#include "ke_map.h"
#include "ke_nodesync.h"
#include "ke_time.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DC_MOD "devicecontroller"
#define DC_RETRIES 10

struct devicecontroller {
    ke_store *store;
    ke_rpc_channel *hub;
    ke_nodesync *sync;      /* devices and their models to their nodes */
    ke_nodesync *_Atomic started_sync; /* sync once started: what the authorizer asks */
    ke_hub_consumer *up;    /* the durable upstream consumer "devicecontroller" */
    int stopped;
};

static const char *ns_or_default(const char *ns) { return ns && *ns ? ns : "default"; }

/* ---- twins ---- */

static int64_t ts_of(const json_t *v, const char *path)
{
    const char *s = ke_k8s_str(v, path);
    return s ? atoll(s) : 0;
}

/* twin_fill fills t (and its values) for property name of device. */
static void twin_fill(const json_t *device, const char *name, Ke__V1__Twin *t,
                      Ke__V1__TwinValue *desired, Ke__V1__TwinValue *reported)
{
    ke__v1__twin__init(t);
    ke__v1__twin_value__init(desired);
    ke__v1__twin_value__init(reported);
    t->property = (char *)name;
    json_t *p = ke_k8s_find_by(json_object_get(json_object_get(device, "spec"), "properties"),
                               "name", name);
    if (p && json_object_get(p, "desired")) {
        const char *v = ke_k8s_str(p, "desired.value");
        desired->value = (char *)(v ? v : "");
        desired->timestamp_ms = ts_of(p, "desired.metadata.timestamp");
        t->desired = desired;
    }
    json_t *r = ke_k8s_find_by(json_object_get(json_object_get(device, "status"), "twins"),
                        "propertyName", name);
    if (r && json_object_get(r, "reported")) {
        const char *v = ke_k8s_str(r, "reported.value");
        reported->value = (char *)(v ? v : "");
        reported->timestamp_ms = ts_of(r, "reported.metadata.timestamp");
        t->reported = reported;
    }
}

static Ke__V1__DeviceState state_of(const json_t *device)
{
    const char *s = ke_k8s_str(device, "status.state");
    if (s && strcasecmp(s, "online") == 0)
        return KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE;
    if (s && strcasecmp(s, "offline") == 0)
        return KE__V1__DEVICE_STATE__DEVICE_STATE_OFFLINE;
    return KE__V1__DEVICE_STATE__DEVICE_STATE_UNKNOWN;
}

/* property_names collects the names in spec.properties and status.twins. */
static size_t property_names(const json_t *device, const char **names, size_t cap)
{
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(json_object_get(json_object_get(device, "spec"), "properties"), i, e) {
        const char *v = ke_k8s_str(e, "name");
        if (v && n < cap)
            names[n++] = v;
    }
    json_array_foreach(json_object_get(json_object_get(device, "status"), "twins"), i, e) {
        const char *v = ke_k8s_str(e, "propertyName");
        int seen = 0;
        for (size_t k = 0; v && k < n; k++)
            seen |= strcmp(names[k], v) == 0;
        if (v && !seen && n < cap)
            names[n++] = v;
    }
    return n;
}

/* ---- downstream: devices and their models to their nodes (lib/nodesync) ---- */

static size_t device_refs(const json_t *device, char **refs, size_t cap)
{
    const char *mname = ke_k8s_str(device, "spec.deviceModelRef.name");
    char buf[400];
    if (!mname || !*mname || cap == 0)
        return 0;
    snprintf(buf, sizeof(buf), "%s/DeviceModel/%s",
             ns_or_default(ke_k8s_str(device, "metadata.namespace")), mname);
    return (refs[0] = strdup(buf)) != NULL;
}

/* ---- upstream: reported twins and state ---- */

static void merge_report(json_t *device, const json_t *rep)
{
    json_t *status = json_object_get(device, "status");
    if (!json_is_object(status)) {
        status = json_object();
        json_object_set_new(device, "status", status);
    }
    json_t *twins = json_object_get(status, "twins");
    if (!json_is_array(twins)) {
        twins = json_array();
        json_object_set_new(status, "twins", twins);
    }
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(rep, "twins"), i, t) {
        const char *name = ke_k8s_str(t, "propertyName");
        json_t *reported = json_object_get(t, "reported");
        if (!name || !json_is_object(reported))
            continue;
        json_t *cur = ke_k8s_find_by(twins, "propertyName", name);
        if (!cur) {
            cur = json_pack("{s:s}", "propertyName", name);
            json_array_append_new(twins, cur);
        } else if (ts_of(cur, "reported.metadata.timestamp") >
                   ts_of(t, "reported.metadata.timestamp")) {
            continue; /* a reading older than the one held: stale */
        }
        json_object_set(cur, "reported", reported);
    }
    const char *state = ke_k8s_str(rep, "state");
    if (state) {
        /* lastOnlineTime moves when the device comes online, so the same
         * report handed twice changes nothing the second time. */
        const char *was = ke_k8s_str(status, "state");
        int came_online =
            strcasecmp(state, "online") == 0 && (!was || strcasecmp(was, "online") != 0);
        json_object_set_new(status, "state", json_string(state));
        if (came_online) {
            char ts[32];
            ke_time_rfc3339(ts, sizeof(ts), ke_time_wall_ms());
            json_object_set_new(status, "lastOnlineTime", json_string(ts));
        }
    }
}

/* on_twin_report applies one reported-twin message (the consumer thread of
 * "devicecontroller"). Returns 0 once its effect is in the store, or when
 * it can never have one (malformed, not the node's device: logged); a store
 * error returns it, and the consumer hands the report again. A report
 * whose values are there already writes nothing. */
static int on_twin_report(const Ke__V1__UpstreamMessage *up, void *ud)
{
    devicecontroller *dc = ud;
    const Ke__V1__Message *m = up->message;
    char node[64], ns[128], name[256];
    if (!m || !m->route ||
        sscanf(m->route->resource, "node/%63[^/]/%127[^/]/Device/%255s", node, ns, name) != 3 ||
        strcmp(node, up->node_name) != 0)
        return 0;
    json_error_t je;
    json_t *rep = json_loadb((const char *)m->content.data, m->content.len, 0, &je);
    char why[256];
    if (!json_is_object(rep)) {
        char ens[KE_LOG_ESC_SIZE(128)], ena[KE_LOG_ESC_SIZE(256)];
        ke_log_warn(DC_MOD, "ignoring twin report that is not a JSON object node=%s device=%s/%s",
                    node, ke_log_esc(ns, ens, sizeof(ens)), ke_log_esc(name, ena, sizeof(ena)));
        json_decref(rep);
        return 0;
    }
    if (ke_k8s_json_depth_check(rep, KE_K8S_JSON_DEPTH_MAX, why, sizeof(why)) != 0) {
        char ew[KE_LOG_ESC_SIZE(sizeof(why))];
        ke_log_warn(DC_MOD, "ignoring twin report node=%s device=%s/%s: %s", node, ns, name,
                    ke_log_esc(why, ew, sizeof(ew)));
        json_decref(rep);
        return 0;
    }
    int rc = KE_ECONFLICT;
    for (int attempt = 0; attempt < DC_RETRIES && rc == KE_ECONFLICT; attempt++) {
        json_t *device = NULL;
        rc = ke_store_get(dc->store, "Device", ns, name, &device);
        if (rc != 0)
            break;
        const char *bound = ke_k8s_str(device, "spec.nodeName");
        if (!bound || strcmp(bound, node) != 0) {
            ke_log_warn(DC_MOD, "ignoring twin report for %s/%s from node %s: bound to %s", ns,
                        name, node, bound ? bound : "none");
            json_decref(device);
            break;
        }
        json_t *before = json_deep_copy(json_object_get(device, "status"));
        merge_report(device, rep);
        rc = json_equal(before, json_object_get(device, "status"))
                 ? 0
                 : ke_store_update_status(dc->store, device, NULL);
        json_decref(before);
        json_decref(device);
    }
    json_decref(rep);
    return rc == KE_ENOTFOUND ? 0 : rc;
}

/* ---- API ---- */

/* get_device reads the device ref names; `prefix` is the field path of
 * the DeviceRef in the request ("" or "device."). On failure it finishes
 * the call: INVALID_ARGUMENT naming the field, NOT_FOUND, or the store
 * error's status (ke_k8s_status_of). */
static int get_device(devicecontroller *dc, ke_rpc_call *call, const char *prefix,
                      const Ke__V1__DeviceRef *ref, json_t **out)
{
    char why[320], path[32];
    const char *ns;
    snprintf(path, sizeof(path), "%sname", prefix);
    if (!ref) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s: required", path);
        return -1;
    }
    if (ke_k8s_resolve_ns(ke_k8s_kind_find("Device"), ref->namespace_, 1, &ns, why,
                          sizeof(why)) != 0 ||
        ke_k8s_check_name(ref->name, path, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s%s",
                   strncmp(why, "namespace", 9) == 0 ? prefix : "", why);
        return -1;
    }
    int rc = ke_store_get(dc->store, "Device", ns, ref->name, out);
    if (rc == KE_ENOTFOUND)
        ke_rpc_call_finishf(call, KE_RPC_NOT_FOUND, "devices \"%s\" not found", ref->name);
    else if (rc != 0)
        ke_rpc_call_finishf(call, ke_k8s_status_of(rc), "store error: %s", ke_strerror(rc));
    return rc == 0 ? 0 : -1;
}

static void get_device_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    json_t *d = NULL;
    if (get_device(ud, call, "", (const Ke__V1__DeviceRef *)m, &d) == 0)
        ke_k8s_reply_object(call, d);
    json_decref(d);
}

/* device_kind resolves the kind and namespace of a ListDevices or
 * WatchDevices request: "" is Device; any name of Device or DeviceModel in
 * the kind table; the namespace "" is every namespace. Finishes the call
 * INVALID_ARGUMENT (naming kind or namespace) and returns NULL otherwise. */
static const ke_k8s_kind *device_kind(ke_rpc_call *call, const char *method, const char *kind,
                                      const char *ns, const char **ns_out)
{
    char why[320];
    const ke_k8s_kind *k = ke_k8s_kind_find(kind && *kind ? kind : "Device");
    if (!k || (strcmp(k->kind, "Device") != 0 && strcmp(k->kind, "DeviceModel") != 0)) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                   "kind: %s serves Device or DeviceModel, not \"%.64s\"", method, kind);
        return NULL;
    }
    if (ke_k8s_resolve_ns(k, ns, 0, ns_out, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return NULL;
    }
    return k;
}

/* list_devices_on_message: one page of Devices, or of DeviceModels when the
 * request's kind says so (as EdgeController.List; any other kind is
 * INVALID_ARGUMENT). */
static void list_devices_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    devicecontroller *dc = ud;
    const Ke__V1__ListRequest *req = (const Ke__V1__ListRequest *)m;
    const char *ns;
    const ke_k8s_kind *k = device_kind(call, "ListDevices", req->kind, req->namespace_, &ns);
    if (k)
        ke_k8s_serve_list(call, dc->store, k->kind, ns, req);
}

static void set_desired_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    devicecontroller *dc = ud;
    const Ke__V1__SetDesiredRequest *req = (const Ke__V1__SetDesiredRequest *)m;
    if (!req->property[0]) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "property: required");
        return;
    }
    char why[320];
    for (int attempt = 0; attempt < DC_RETRIES; attempt++) {
        json_t *device = NULL, *model = NULL, *out = NULL;
        if (get_device(dc, call, "device.", req->device, &device) != 0)
            return;
        const char *ns = ns_or_default(ke_k8s_str(device, "metadata.namespace"));
        const char *mname = ke_k8s_str(device, "spec.deviceModelRef.name");
        if (ke_store_get(dc->store, "DeviceModel", ns, mname, &model) != 0) {
            ke_rpc_call_finishf(call, KE_RPC_FAILED_PRECONDITION, "device's model \"%s\" not found", mname);
            json_decref(device);
            return;
        }
        json_t *prop =
            ke_k8s_find_by(json_object_get(json_object_get(model, "spec"), "properties"), "name",
                    req->property);
        int code = KE_RPC_OK;
        if (!prop) {
            code = KE_RPC_NOT_FOUND;
            snprintf(why, sizeof(why), "property: model \"%s\" has no property \"%s\"", mname,
                     req->property);
        } else if (ke_k8s_str(prop, "accessMode") &&
                   strcmp(ke_k8s_str(prop, "accessMode"), "ReadOnly") == 0) {
            code = KE_RPC_FAILED_PRECONDITION;
            snprintf(why, sizeof(why), "property: \"%s\" is ReadOnly", req->property);
        } else if (ke_k8s_twin_value_check(prop, req->value, 1, why, sizeof(why)) != 0) {
            code = KE_RPC_INVALID_ARGUMENT;
        }
        if (code != KE_RPC_OK) {
            ke_rpc_call_finishf(call, code, "%s", why);
            json_decref(device);
            json_decref(model);
            return;
        }
        json_t *spec = json_object_get(device, "spec");
        json_t *props = json_object_get(spec, "properties");
        if (!json_is_array(props)) {
            props = json_array();
            json_object_set_new(spec, "properties", props);
        }
        json_t *p = ke_k8s_find_by(props, "name", req->property);
        if (!p) {
            p = json_pack("{s:s}", "name", req->property);
            json_array_append_new(props, p);
        }
        char ts[32];
        snprintf(ts, sizeof(ts), "%lld", (long long)ke_time_wall_ms());
        json_object_set_new(p, "desired",
                            json_pack("{s:s,s:{s:s,s:s}}", "value", req->value, "metadata",
                                      "timestamp", ts, "type", ke_k8s_str(prop, "type")));
        int rc = ke_store_update(dc->store, device, &out);
        json_decref(model);
        if (rc == KE_ECONFLICT) {
            json_decref(device);
            continue; /* someone else wrote the device meanwhile: redo on the new version */
        }
        if (rc == KE_EINVAL) { /* the store's bound on an object's size */
            ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                       "value: too large: device %s/%s would exceed %d bytes", ns,
                       ke_k8s_str(device, "metadata.name"), KE_STORE_OBJECT_MAX);
        } else if (rc != 0) {
            ke_rpc_call_finishf(call, ke_k8s_status_of(rc), "store error: %s", ke_strerror(rc));
        } else {
            Ke__V1__Twin t;
            Ke__V1__TwinValue d, r;
            twin_fill(out, req->property, &t, &d, &r);
            ke_rpc_call_finish(call, KE_RPC_OK, NULL, &t.base);
            char ep[KE_LOG_ESC_SIZE(128)], ev[KE_LOG_ESC_SIZE(256)];
            ke_log_info(DC_MOD, "desired set device=%s/%s property=\"%s\" value=\"%s\"", ns,
                        ke_k8s_str(device, "metadata.name"),
                        ke_log_esc(req->property, ep, sizeof(ep)),
                        ke_log_esc(req->value, ev, sizeof(ev)));
        }
        json_decref(device);
        json_decref(out);
        return;
    }
    ke_rpc_call_finishf(call, KE_RPC_ABORTED, "device keeps changing; try again");
}

static void get_twin_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    devicecontroller *dc = ud;
    const Ke__V1__DeviceRef *ref = (const Ke__V1__DeviceRef *)m;
    json_t *device = NULL;
    if (get_device(dc, call, "", ref, &device) != 0)
        return;
    const char *names[64];
    size_t n = property_names(device, names, 64);
    Ke__V1__Twin twins[64], *tp[64];
    Ke__V1__TwinValue des[64], rep[64];
    for (size_t i = 0; i < n; i++) {
        twin_fill(device, names[i], &twins[i], &des[i], &rep[i]);
        tp[i] = &twins[i];
    }
    Ke__V1__DeviceRef dref = KE__V1__DEVICE_REF__INIT;
    dref.namespace_ = (char *)ns_or_default(ke_k8s_str(device, "metadata.namespace"));
    dref.name = (char *)ke_k8s_str(device, "metadata.name");
    Ke__V1__TwinReply r = KE__V1__TWIN_REPLY__INIT;
    r.device = &dref;
    r.twins = tp;
    r.n_twins = n;
    r.state = state_of(device);
    ke_rpc_call_finish(call, KE_RPC_OK, NULL, &r.base);
    json_decref(device);
}

/* ---- watches ---- */

typedef struct dc_watch {
    ke_store_watch *w;
    ke_rpc_call *call; /* a reference */
    int twins;         /* WatchTwins (else WatchDevices) */
    ke_map *seen;      /* "ns/name/property" -> "desired\x1freported" last sent */
} dc_watch;

static int map_free_value(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    free(v);
    return 0;
}

static void send_twin_events(dc_watch *w, const json_t *device)
{
    const char *names[64];
    size_t n = property_names(device, names, 64);
    const char *ns = ns_or_default(ke_k8s_str(device, "metadata.namespace"));
    const char *name = ke_k8s_str(device, "metadata.name");
    for (size_t i = 0; i < n; i++) {
        Ke__V1__Twin t;
        Ke__V1__TwinValue d, r;
        twin_fill(device, names[i], &t, &d, &r);
        char key[600], val[600];
        snprintf(key, sizeof(key), "%s/%s/%s", ns, name, names[i]);
        snprintf(val, sizeof(val), "%s@%lld\x1f%s@%lld", t.desired ? d.value : "",
                 (long long)d.timestamp_ms, t.reported ? r.value : "", (long long)r.timestamp_ms);
        const char *last = ke_map_get(w->seen, key);
        if (last && strcmp(last, val) == 0)
            continue;
        char *copy = strdup(val);
        void *old = NULL;
        if (copy && ke_map_put(w->seen, key, copy, &old) == 0)
            free(old);
        else
            free(copy);
        Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
        ref.namespace_ = (char *)ns;
        ref.name = (char *)name;
        Ke__V1__TwinEvent ev = KE__V1__TWIN_EVENT__INIT;
        ev.device = &ref;
        ev.twin = &t;
        ev.state = state_of(device);
        if (ke_rpc_call_send(w->call, &ev.base) == KE_EFULL) /* closed, queue freed, counted */
            ke_rpc_call_close_slow(w->call, "watch client is not reading (its send queue is at "
                                        "grpc.send_queue_bytes or 1024 events); watch again");
    }
}

static void watch_event(int type, const json_t *obj, uint64_t rev, void *ud)
{
    dc_watch *w = ud;
    if (w->twins && type != KE_STORE_GONE) {
        if (type != KE_STORE_DELETED)
            send_twin_events(w, obj);
        return;
    }
    ke_k8s_send_watch_event(w->call, type, obj, rev);
}

static void watch_start(devicecontroller *dc, ke_rpc_call *call, int twins, const char *kind,
                        const char *ns, const char *label, const char *field, uint64_t from)
{
    dc_watch *w = calloc(1, sizeof(*w));
    if (!w || !(w->seen = ke_map_new())) {
        free(w);
        ke_rpc_call_finishf(call, KE_RPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->twins = twins;
    ke_rpc_call_ref(call);
    w->call = call;
    int rc = ke_store_watch_start(dc->store, kind, ns, label, field, from, watch_event, w, &w->w);
    if (rc != 0) {
        /* selectors and names were checked: EINVAL is a version ahead */
        if (rc == KE_EINVAL)
            ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT,
                       "resource_version: %llu is after the store's revision %llu",
                       (unsigned long long)from, (unsigned long long)ke_store_revision(dc->store));
        else if (rc == KE_EGONE)
            ke_rpc_call_finishf(call, KE_RPC_OUT_OF_RANGE, "resource_version: too old; list again and "
                                                  "watch from the list's version");
        else
            ke_rpc_call_finishf(call, ke_k8s_status_of(rc), "cannot watch: %s", ke_strerror(rc));
        ke_rpc_call_unref(call);
        ke_map_free(w->seen);
        free(w);
        return;
    }
    ke_rpc_call_set_data(call, w);
}

static void watch_devices_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    const Ke__V1__WatchRequest *req = (const Ke__V1__WatchRequest *)m;
    char why[256];
    const char *ns;
    const ke_k8s_kind *k = device_kind(call, "WatchDevices", req->kind, req->namespace_, &ns);
    if (!k)
        return;
    if (ke_store_selector_check(req->label_selector, req->field_selector, why, sizeof(why)) != 0) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    watch_start(ud, call, 0, k->kind, ns, req->label_selector, req->field_selector,
                req->resource_version);
}

static void watch_twins_on_message(ke_rpc_call *call, const ProtobufCMessage *m, void *ud)
{
    const Ke__V1__WatchTwinsRequest *req = (const Ke__V1__WatchTwinsRequest *)m;
    char field[320] = "", why[320];
    const char *ns;
    if (ke_k8s_resolve_ns(ke_k8s_kind_find("Device"), req->namespace_, 0, &ns, why,
                          sizeof(why)) != 0 ||
        (req->name[0] && ke_k8s_check_name(req->name, "name", why, sizeof(why)) != 0)) {
        ke_rpc_call_finishf(call, KE_RPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    if (req->name[0])
        snprintf(field, sizeof(field), "metadata.name=%s", req->name);
    watch_start(ud, call, 1, "Device", ns, NULL, field, 0);
}

static void watch_on_close(ke_rpc_call *call, const ke_rpc_status *st, void *ud)
{
    (void)st;
    (void)ud;
    dc_watch *w = ke_rpc_call_get_data(call);
    if (!w)
        return;
    ke_store_watch_stop(w->w);
    ke_map_each(w->seen, map_free_value, NULL);
    ke_map_free(w->seen);
    ke_rpc_call_unref(w->call);
    free(w);
}

/* ---- lifecycle ---- */

int devicecontroller_new(ke_store *store, devicecontroller **out)
{
    devicecontroller *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return KE_ENOMEM;
    dc->store = store;
    *out = dc;
    return 0;
}

int devicecontroller_register(devicecontroller *dc, ke_rpc_server *srv)
{
    static const ke_rpc_method_def methods[] = {
        {"GetDevice", KE_RPC_UNARY, {.on_message = get_device_on_message}},
        {"ListDevices", KE_RPC_UNARY, {.on_message = list_devices_on_message}},
        {"WatchDevices", KE_RPC_SERVER_STREAM,
         {.on_message = watch_devices_on_message, .on_close = watch_on_close}},
        {"SetDesired", KE_RPC_UNARY, {.on_message = set_desired_on_message}},
        {"GetTwin", KE_RPC_UNARY, {.on_message = get_twin_on_message}},
        {"WatchTwins", KE_RPC_SERVER_STREAM,
         {.on_message = watch_twins_on_message, .on_close = watch_on_close}},
    };
    return ke_rpc_server_add_all(srv, &ke__v1__device_controller__descriptor, methods,
                                 sizeof(methods) / sizeof(methods[0]), dc);
}

int devicecontroller_start(devicecontroller *dc, ke_rpc_channel *hub)
{
    static const char *const models[] = {"DeviceModel"};
    static const char *const groups[] = {"twin"};
    dc->hub = hub;
    ke_nodesync_config c = {.name = "dc-sync",
                            .store = dc->store,
                            .hub = hub,
                            .primary = "Device",
                            .ref_kinds = models,
                            .n_ref_kinds = 1,
                            .refs = device_refs};
    int rc = ke_nodesync_new(&c, &dc->sync);
    if (rc == 0)
        rc = ke_nodesync_start(dc->sync);
    if (rc == 0)
        atomic_store(&dc->started_sync, dc->sync);
    if (rc == 0)
        rc = ke_hub_consumer_new(hub, "devicecontroller", groups, 1, on_twin_report, dc, &dc->up);
    if (rc == 0)
        rc = ke_hub_consumer_start(dc->up);
    return rc;
}

int devicecontroller_node_holds(void *dcp, const char *node, const char *kind, const char *ns,
                                const char *name)
{
    devicecontroller *dc = dcp;
    ke_nodesync *s = atomic_load(&dc->started_sync);
    if (!s || (strcmp(kind, "Device") != 0 && strcmp(kind, "DeviceModel") != 0))
        return 0;
    return ke_nodesync_wants(s, node, kind, ns, name) ? 1 : 0;
}

void devicecontroller_stop(devicecontroller *dc)
{
    if (!dc || dc->stopped)
        return;
    dc->stopped = 1;
    ke_hub_consumer_stop(dc->up);
    ke_nodesync_stop(dc->sync);
}

void devicecontroller_free(devicecontroller *dc)
{
    if (!dc)
        return;
    devicecontroller_stop(dc);
    ke_hub_consumer_free(dc->up);
    ke_nodesync_free(dc->sync);
    free(dc);
}
