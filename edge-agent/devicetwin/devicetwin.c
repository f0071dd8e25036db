/*
 * devicetwin.c — the DeviceTwin module (devicetwin.h).
 *
 * State, all on the loop:
 *   devs     "<ns>/<name>" -> dt_dev: the Device object as the store holds
 *            it (desired values in spec.properties[].desired) and the
 *            edge's own part, `local`:
 *              {"state":"online","lastOnline":"<RFC 3339>",
 *               "twins":{"<property>":{"value":"..","timestamp":<ms>,
 *                                      "version":<n>}}}
 *            mirrored in the store's local table at devicetwin/<ns>/<name>.
 *   byname   "<name>" -> the device, or `ambiguous` when two namespaces of
 *            this node have a device of that name (then topics must say
 *            <namespace>/<name>).
 *   models   "<ns>/<name>" -> the DeviceModel object.
 *
 * A report is checked whole before anything changes: every property must
 * be the model's, its value of the property's type, not older than the
 * value held (a report carries the time the value was read; an older one
 * is stale and refused, an identical one is a redelivery and changes
 * nothing). Desired values belong to the cloud (DeviceController.SetDesired):
 * an `expected` from the edge is refused.
 *
 * Shapes (KubeEdge 1.12–1.19 devicetwin dttype, timestamps in ms):
 *   MsgTwin   {"expected":{"value":"..","metadata":{"timestamp":N}},
 *              "actual":{...}, "metadata":{"type":"int"},
 *              "expected_version":{"cloud":N,"edge":N},
 *              "actual_version":{"cloud":N,"edge":N}}
 *   result    {"event_id":"..","timestamp":N,"twin":{"<p>":MsgTwin}}
 *             or {"event_id":"..","timestamp":N,"code":400,"reason":".."}
 *   delta     result + "delta":{"<p>":"<desired>"}
 *   document  {"event_id","timestamp","twin":{"<p>":{"last":MsgTwin,"current":MsgTwin}}}
 *   membership {"event_id","timestamp","devices":[{"id","name","state","last_online"}]}
 *              / {"added_devices":[..],"removed_devices":[..]}
 */
#include "devicetwin.h"

#include "ke_err.h"
#include "ke_k8s.h"
#include "ke_log.h"
#include "ke_map.h"
#include "ke_metrics.h"
#include "ke_time.h"
#include "mapper.pb-c.h"

#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define DT_MOD "devicetwin"
#define DT_PAYLOAD_MAX (64 * 1024) /* a message on a device topic */
#define DT_VALUE_MAX 512           /* a twin value, as KubeEdge bounds it */
#define DT_READINGS_MAX 256        /* properties in one report */
#define DT_FRAME_PROPS 4           /* properties per MapperFrame (mapper.options) */
#define DT_FRAME_TEXT 31           /* a name or value in a MapperFrame */
#define DT_JSON_DEPTH 8
#define DT_DEVICE_TOPIC "$hw/events/device/"
#define DT_MAPPER_TOPIC "ke/mapper/"

/* Why input was refused: the label of ke_devicetwin_refused_total. */
enum {
    R_MALFORMED,
    R_TOPIC,
    R_UNKNOWN_DEVICE,
    R_AMBIGUOUS,
    R_UNKNOWN_PROPERTY,
    R_TYPE,
    R_READ_ONLY,
    R_DESIRED,
    R_OVERSIZED,
    R_STALE,
    R_STORE,
    R_COUNT
};
static const char *const reason_names[R_COUNT] = {
    "malformed", "topic",    "unknown_device", "ambiguous", "unknown_property", "type",
    "read_only", "desired",  "oversized",      "stale",     "store",
};
static const int reason_codes[R_COUNT] = {400, 400, 404, 409, 400, 400,
                                          400, 400, 413, 409, 500};

typedef struct dt_dev {
    char ns[128], name[256];
    char key[512];  /* node/<node>/<ns>/Device/<name> */
    char lkey[400]; /* devicetwin/<ns>/<name> */
    json_t *obj;    /* the Device */
    uint64_t obj_rv;
    json_t *local;  /* the edge's part (file comment) */
    uint64_t last_rv; /* of the last report */
    uint32_t seq;   /* MapperFrame.seq of frames sent to its mapper */
} dt_dev;

typedef struct dt {
    ke_module *m;
    ke_rt *e;
    const devicetwin_config *cfg;
    ke_map *devs, *byname, *models;
    char prefix[128]; /* node/<node>/ */
    uint64_t boot, events;
    int eventbus_missing_logged;
    ke_metric *m_reports, *m_deltas, *m_refused[R_COUNT];
} dt;

static char ambiguous; /* byname's marker */

/* A refusal: its reason and the text for the mapper and the log. */
typedef struct dt_err {
    int reason;
    char why[256];
} dt_err;

static int refuse(dt_err *err, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(dt_err *err, int reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->reason = reason;
    vsnprintf(err->why, sizeof(err->why), fmt, ap);
    va_end(ap);
    ke_err_oneline(err->why);
    return -1;
}

/* ---- publishing (through EventBus) ---- */

static void publish(dt *t, const char *topic, const void *payload, size_t len)
{
    size_t pl = strlen("eventbus/publish/");
    size_t tl = strlen(topic);
    char *res = malloc(pl + tl + 1);
    if (!res)
        return;
    memcpy(res, "eventbus/publish/", pl);
    memcpy(res + pl, topic, tl + 1);
    Ke__V1__Message *msg = ke_rt_message_new(DT_MOD, "eventbus",
                                               KE__V1__OPERATION__OPERATION_PUBLISH, res, payload,
                                               len);
    free(res);
    int rc = msg ? ke_rt_send_to(t->e, "eventbus", msg) : KE_ENOMEM;
    if (rc == 0)
        return;
    if (msg)
        ke__v1__message__free_unpacked(msg, NULL);
    if (rc == KE_ENOTFOUND) {
        if (!t->eventbus_missing_logged)
            ke_log_warn(DT_MOD, "nothing is published to mappers: modules.eventbus is off");
        t->eventbus_missing_logged = 1;
        return;
    }
    char et[KE_LOG_ESC_SIZE(128)];
    ke_log_warn(DT_MOD, "not published topic=%s: %s", ke_log_esc(topic, et, sizeof(et)),
                ke_strerror(rc));
}

static void publish_json(dt *t, const char *topic, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (s)
        publish(t, topic, s, strlen(s));
    else
        ke_log_warn(DT_MOD, "not published topic=%s: out of memory", topic);
    free(s);
    json_decref(j);
}

/* base_message: {"event_id": id (or a new one), "timestamp": now}. */
static json_t *base_message(dt *t, const char *event_id)
{
    char id[40];
    if (!event_id) {
        uint64_t n = ++t->events;
        snprintf(id, sizeof(id), "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-8%03" PRIx64
                 "-%012" PRIx64,
                 t->boot >> 32, (t->boot >> 16) & 0xffff, t->boot & 0xfff, (n >> 48) & 0xfff,
                 n & (uint64_t)0xffffffffffff);
        event_id = id;
    }
    return json_pack("{s:s,s:I}", "event_id", event_id, "timestamp",
                     (json_int_t)ke_time_wall_ms());
}

static void device_topic(char *out, size_t cap, const char *id, const char *suffix)
{
    snprintf(out, cap, DT_DEVICE_TOPIC "%s/%s", id, suffix);
}

/* ---- devices, models, twins ---- */


static const json_t *model_of(dt *t, const dt_dev *d)
{
    const char *mname = ke_k8s_str(d->obj, "spec.deviceModelRef.name");
    char k[400];
    if (!mname)
        return NULL;
    snprintf(k, sizeof(k), "%s/%s", d->ns, mname);
    return ke_map_get(t->models, k);
}

static const json_t *model_props(dt *t, const dt_dev *d)
{
    return json_object_get(json_object_get(model_of(t, d), "spec"), "properties");
}

/* desired: the desired value of property name, or NULL; *ts its time. */
static const char *desired(const dt_dev *d, const char *name, int64_t *ts)
{
    const json_t *p =
        ke_k8s_find_by(json_object_get(json_object_get(d->obj, "spec"), "properties"), "name",
                       name);
    const char *v = p ? ke_k8s_str(p, "desired.value") : NULL;
    if (ts) {
        const char *s = p ? ke_k8s_str(p, "desired.metadata.timestamp") : NULL;
        *ts = s ? atoll(s) : 0;
    }
    return v;
}

static json_t *local_twin(const dt_dev *d, const char *name)
{
    return json_object_get(json_object_get(d->local, "twins"), name);
}

static const char *lower_type(const json_t *prop, char *buf, size_t cap)
{
    const char *type = ke_k8s_str(prop, "type");
    size_t i = 0;
    for (; type && type[i] && i + 1 < cap; i++)
        buf[i] = (char)tolower((unsigned char)type[i]);
    buf[i] = '\0';
    return i ? buf : "string";
}

/* msg_twin builds the MsgTwin of property prop, or NULL when it has
 * neither a desired nor a reported value. */
static json_t *msg_twin(const dt_dev *d, const json_t *prop, int versions)
{
    const char *name = ke_k8s_str(prop, "name");
    if (!name)
        return NULL;
    int64_t dts = 0;
    const char *dv = desired(d, name, &dts);
    const json_t *lt = local_twin(d, name);
    const char *av = ke_k8s_str(lt, "value");
    if (!dv && !av)
        return NULL;
    char type[32];
    json_t *tw = json_pack("{s:{s:s}}", "metadata", "type", lower_type(prop, type, sizeof(type)));
    if (dv)
        json_object_set_new(tw, "expected", json_pack("{s:s,s:{s:I}}", "value", dv, "metadata",
                                                      "timestamp", (json_int_t)dts));
    if (av)
        json_object_set_new(
            tw, "actual",
            json_pack("{s:s,s:{s:I}}", "value", av, "metadata", "timestamp",
                      json_integer_value(json_object_get(lt, "timestamp"))));
    if (versions) {
        json_object_set_new(tw, "expected_version",
                            json_pack("{s:I,s:I}", "cloud", (json_int_t)d->obj_rv, "edge", 0));
        json_object_set_new(tw, "actual_version",
                            json_pack("{s:I,s:I}", "cloud", 0, "edge",
                                      json_integer_value(json_object_get(lt, "version"))));
    }
    return tw;
}

/* twins_of: {"<p>": MsgTwin} for every model property with a value. */
static json_t *twins_of(dt *t, const dt_dev *d, int versions)
{
    json_t *out = json_object();
    size_t i;
    json_t *prop;
    json_array_foreach(model_props(t, d), i, prop) {
        json_t *tw = msg_twin(d, prop, versions);
        if (tw)
            json_object_set_new(out, ke_k8s_str(prop, "name"), tw);
    }
    return out;
}

static json_t *device_summary(const dt_dev *d)
{
    const char *state = ke_k8s_str(d->local, "state");
    const char *last = ke_k8s_str(d->local, "lastOnline");
    json_t *j = json_pack("{s:s,s:s,s:s}", "id", d->name, "name", d->name, "state",
                          state ? state : "unknown");
    if (last)
        json_object_set_new(j, "last_online", json_string(last));
    return j;
}

static void membership_updated(dt *t, const dt_dev *d, int added)
{
    json_t *j = base_message(t, NULL);
    json_t *one = json_array();
    json_array_append_new(one, device_summary(d));
    json_object_set_new(j, "added_devices", added ? one : json_array());
    json_object_set_new(j, "removed_devices", added ? json_array() : one);
    char topic[256];
    snprintf(topic, sizeof(topic), "$hw/events/node/%s/membership/updated", t->cfg->node_name);
    publish_json(t, topic, j);
}

/* frame_publish sends a MapperFrame to the device's mapper on both topic
 * forms (ke/mapper/<name>/down and ke/mapper/<ns>/<name>/down). */
static void frame_publish(dt *t, dt_dev *d, Ke__Mapper__V1__MapperFrame *f)
{
    f->seq = ++d->seq;
    size_t len = ke__mapper__v1__mapper_frame__get_packed_size(f);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    ke__mapper__v1__mapper_frame__pack(f, buf);
    char topic[512];
    snprintf(topic, sizeof(topic), DT_MAPPER_TOPIC "%s/down", d->name);
    publish(t, topic, buf, len);
    snprintf(topic, sizeof(topic), DT_MAPPER_TOPIC "%s/%s/down", d->ns, d->name);
    publish(t, topic, buf, len);
    free(buf);
}

/* frame_desired sends desired values (name/value pairs in arr, a JSON
 * object) to the protobuf mapper, DT_FRAME_PROPS per frame. */
static void frame_desired(dt *t, dt_dev *d, const json_t *values)
{
    Ke__Mapper__V1__PropertyValue pv[DT_FRAME_PROPS], *pp[DT_FRAME_PROPS];
    Ke__Mapper__V1__DesiredUpdate du;
    Ke__Mapper__V1__MapperFrame f;
    size_t n = 0, total = json_object_size(values), done = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)values, k, v) {
        done++;
        const char *s = json_string_value(v);
        if (!s || strlen(k) > DT_FRAME_TEXT || strlen(s) > DT_FRAME_TEXT) {
            ke_log_warn(DT_MOD, "desired value of %s/%s property=%s not sent on the protobuf "
                        "topic: a frame carries names and values of at most %d bytes",
                        d->ns, d->name, k, DT_FRAME_TEXT);
        } else {
            ke__mapper__v1__property_value__init(&pv[n]);
            pv[n].name = (char *)k;
            pv[n].value = (char *)s;
            pv[n].timestamp_ms = ke_time_wall_ms();
            pp[n] = &pv[n];
            n++;
        }
        if (n == DT_FRAME_PROPS || (done == total && n > 0)) {
            ke__mapper__v1__desired_update__init(&du);
            du.device = d->name;
            du.n_properties = n;
            du.properties = pp;
            ke__mapper__v1__mapper_frame__init(&f);
            f.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_DESIRED;
            f.desired = &du;
            frame_publish(t, d, &f);
            n = 0;
        }
    }
}

/* send_delta tells the mapper the desired values it does not report yet:
 * twin/update/delta on both topic forms and a DesiredUpdate frame. */
static void send_delta(dt *t, dt_dev *d)
{
    json_t *delta = json_object();
    size_t i;
    json_t *prop;
    json_array_foreach(model_props(t, d), i, prop) {
        const char *name = ke_k8s_str(prop, "name");
        const char *dv = name ? desired(d, name, NULL) : NULL;
        const char *av = dv ? ke_k8s_str(local_twin(d, name), "value") : NULL;
        if (dv && *dv && (!av || strcmp(av, dv) != 0))
            json_object_set_new(delta, name, json_string(dv));
    }
    if (json_object_size(delta) == 0) {
        json_decref(delta);
        return;
    }
    ke_metric_add(t->m_deltas, 1);
    json_t *j = base_message(t, NULL);
    json_object_set_new(j, "twin", twins_of(t, d, 0));
    json_object_set(j, "delta", delta);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (s) {
        char id[400], topic[512];
        device_topic(topic, sizeof(topic), d->name, "twin/update/delta");
        publish(t, topic, s, strlen(s));
        snprintf(id, sizeof(id), "%s/%s", d->ns, d->name);
        device_topic(topic, sizeof(topic), id, "twin/update/delta");
        publish(t, topic, s, strlen(s));
        free(s);
    }
    frame_desired(t, d, delta);
    json_decref(delta);
}

static int byname_count(const char *k, void *v, void *arg)
{
    (void)k;
    void **a = arg;
    dt_dev *d = v;
    if (strcmp(d->name, (const char *)a[0]) == 0) {
        a[1] = a[1] ? (void *)&ambiguous : (void *)d;
    }
    return 0;
}

/* byname_refresh recomputes the name index entry of name. */
static void byname_refresh(dt *t, const char *name)
{
    void *a[2] = {(void *)name, NULL};
    ke_map_each(t->devs, byname_count, a);
    if (a[1])
        ke_map_put(t->byname, name, a[1], NULL);
    else
        ke_map_del(t->byname, name);
}

static void dev_free(dt_dev *d)
{
    if (!d)
        return;
    json_decref(d->obj);
    json_decref(d->local);
    free(d);
}

/* dev_upsert takes the Device at key (obj: a reference is taken). announce:
 * tell mappers (membership, delta); off while loading at start. */
static void dev_upsert(dt *t, const char *key, json_t *obj, uint64_t rv, int announce)
{
    char ns[128], name[256], mk[400];
    if (sscanf(key + strlen(t->prefix), "%127[^/]/Device/%255s", ns, name) != 2)
        return;
    snprintf(mk, sizeof(mk), "%s/%s", ns, name);
    dt_dev *d = ke_map_get(t->devs, mk);
    if (!d) {
        d = calloc(1, sizeof(*d));
        if (!d) {
            ke_log_error(DT_MOD, "out of memory: device %s not served", mk);
            return;
        }
        snprintf(d->ns, sizeof(d->ns), "%s", ns);
        snprintf(d->name, sizeof(d->name), "%s", name);
        snprintf(d->key, sizeof(d->key), "%s", key);
        snprintf(d->lkey, sizeof(d->lkey), "devicetwin/%s/%s", ns, name);
        uint8_t *content = NULL;
        size_t len = 0;
        int rc = edge_store_local_get(ke_rt_store(t->e), d->lkey, &content, &len);
        if (rc == 0)
            d->local = json_loadb((const char *)content, len, 0, NULL);
        else if (rc != KE_ENOTFOUND)
            ke_log_warn(DT_MOD, "cannot read the twins of %s: %s", mk, ke_strerror(rc));
        free(content);
        if (!json_is_object(d->local)) {
            json_decref(d->local);
            d->local = json_pack("{s:s,s:{}}", "state", "unknown", "twins");
        }
        if (edge_store_reported_rv(ke_rt_store(t->e), key, &d->last_rv) != 0)
            d->last_rv = 0;
        d->obj = json_incref(obj);
        d->obj_rv = rv;
        if (ke_map_put(t->devs, mk, d, NULL) != 0) {
            dev_free(d);
            return;
        }
        byname_refresh(t, name);
        if (announce) {
            ke_log_info(DT_MOD, "device added %s", mk);
            membership_updated(t, d, 1);
            send_delta(t, d);
        }
        return;
    }
    json_t *old = d->obj;
    d->obj = json_incref(obj);
    d->obj_rv = rv;
    int changed = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(json_object_get(obj, "spec"), "properties"), i, p) {
        const char *pn = ke_k8s_str(p, "name");
        const char *now = ke_k8s_str(p, "desired.value");
        json_t *op = ke_k8s_find_by(json_object_get(json_object_get(old, "spec"), "properties"),
                                    "name", pn ? pn : "");
        const char *was = op ? ke_k8s_str(op, "desired.value") : NULL;
        if (now && (!was || strcmp(now, was) != 0))
            changed = 1;
    }
    json_decref(old);
    if (announce && changed)
        send_delta(t, d);
}

static void dev_remove(dt *t, const char *key)
{
    char ns[128], name[256], mk[400];
    if (sscanf(key + strlen(t->prefix), "%127[^/]/Device/%255s", ns, name) != 2)
        return;
    snprintf(mk, sizeof(mk), "%s/%s", ns, name);
    dt_dev *d = ke_map_del(t->devs, mk);
    if (!d)
        return;
    byname_refresh(t, name);
    ke_log_info(DT_MOD, "device removed %s", mk);
    membership_updated(t, d, 0);
    int rc = edge_store_local_put(ke_rt_store(t->e), d->lkey, NULL, 0, NULL, NULL, NULL);
    if (rc != 0)
        ke_log_warn(DT_MOD, "cannot drop the twins of %s: %s", mk, ke_strerror(rc));
    dev_free(d);
}

/* object_changed: MetaManager passed on a change of the object at key. */
static void object_changed(dt *t, const char *key, int announce)
{
    const char *rest = key + strlen(t->prefix);
    const char *slash = strchr(rest, '/');
    if (!slash)
        return;
    int is_model = strncmp(slash + 1, "DeviceModel/", 12) == 0;
    int is_dev = !is_model && strncmp(slash + 1, "Device/", 7) == 0;
    if (!is_model && !is_dev)
        return;
    uint64_t rv = 0;
    uint8_t *content = NULL;
    size_t len = 0;
    json_t *obj = NULL;
    int rc = edge_store_get(ke_rt_store(t->e), key, &rv, &content, &len);
    if (rc == 0)
        obj = json_loadb((const char *)content, len, 0, NULL);
    free(content);
    if (rc != 0 && rc != KE_ENOTFOUND)
        ke_log_warn(DT_MOD, "cannot read %s: %s", key, ke_strerror(rc));
    if (is_model) {
        char mk[400];
        snprintf(mk, sizeof(mk), "%.*s/%s", (int)(slash - rest), rest, slash + 1 + 12);
        void *old = NULL;
        if (json_is_object(obj)) {
            if (ke_map_put(t->models, mk, json_incref(obj), &old) != 0)
                json_decref(obj);
        } else if (rc == KE_ENOTFOUND) {
            old = ke_map_del(t->models, mk);
        }
        json_decref(old);
    } else if (json_is_object(obj)) {
        dev_upsert(t, key, obj, rv, announce);
    } else if (rc == KE_ENOTFOUND) {
        dev_remove(t, key);
    }
    json_decref(obj);
}

static int load_one(const char *key, uint64_t rv, const void *content, size_t len, void *arg)
{
    (void)rv;
    (void)content;
    (void)len;
    object_changed(arg, key, 0);
    return 0;
}

static int drop_orphan(const char *key, const void *content, size_t len, void *arg)
{
    (void)content;
    (void)len;
    dt *t = arg;
    const char *mk = key + strlen("devicetwin/");
    if (!ke_map_get(t->devs, mk)) {
        int rc = edge_store_local_put(ke_rt_store(t->e), key, NULL, 0, NULL, NULL, NULL);
        if (rc != 0)
            ke_log_warn(DT_MOD, "cannot drop the twins of %s: %s", mk, ke_strerror(rc));
    }
    return 0;
}

/* find_dev resolves a topic's device id: "<name>" or "<ns>/<name>". */
static dt_dev *find_dev(dt *t, const char *id, dt_err *err)
{
    dt_dev *d = strchr(id, '/') ? ke_map_get(t->devs, id) : ke_map_get(t->byname, id);
    if (d == (void *)&ambiguous) {
        refuse(err, R_AMBIGUOUS,
               "device \"%s\" is in several namespaces of this node: use <namespace>/%s", id, id);
        return NULL;
    }
    if (!d)
        refuse(err, R_UNKNOWN_DEVICE, "device \"%s\" is not bound to this node", id);
    return d;
}

/* ---- reports ---- */

typedef struct dt_reading {
    const char *name, *value;
    int64_t ts;
} dt_reading;

static uint64_t next_rv(dt_dev *d)
{
    int64_t wall = ke_time_wall_ms();
    uint64_t rv = wall > 0 && (uint64_t)wall > d->last_rv ? (uint64_t)wall : d->last_rv + 1;
    return rv;
}

/* store_report writes local (the device's new edge part) and queues the
 * report content, one transaction; on success d->local becomes local. */
static int store_report(dt *t, dt_dev *d, json_t *local, json_t *content, dt_err *err)
{
    char *body = json_dumps(content, JSON_COMPACT);
    char *lbody = json_dumps(local, JSON_COMPACT);
    Ke__V1__Message *msg =
        body ? ke_rt_message_new(DT_MOD, "twin", KE__V1__OPERATION__OPERATION_UPDATE, d->key,
                                 body, strlen(body))
             : NULL;
    int rc = msg && lbody ? 0 : KE_ENOMEM;
    uint64_t rv = next_rv(d);
    if (rc == 0) {
        msg->header->resource_version = rv;
        msg->header->timestamp_ms = ke_time_wall_ms();
        rc = edge_store_local_put(ke_rt_store(t->e), d->lkey, lbody, strlen(lbody), msg, NULL,
                                  NULL);
    }
    if (msg)
        ke__v1__message__free_unpacked(msg, NULL);
    free(body);
    free(lbody);
    if (rc != 0)
        return refuse(err, R_STORE, "the edge cannot store it: %s", ke_strerror(rc));
    d->last_rv = rv;
    json_decref(d->local);
    d->local = json_incref(local);
    ke_metric_add(t->m_reports, 1);
    /* MetaManager tells EdgeHub the outbox grew */
    Ke__V1__Message *n =
        ke_rt_message_new(DT_MOD, "", KE__V1__OPERATION__OPERATION_UPLOAD, "meta/outbox", NULL, 0);
    if (n && ke_rt_send_to(t->e, "metamanager", n) != 0)
        ke__v1__message__free_unpacked(n, NULL); /* EdgeHub pumps on its timer too */
    return 0;
}

/* apply_reported checks readings whole, then records those that change
 * something. *changed gets the properties changed (a redelivered report
 * changes none). Returns 0 or -1 with err. */
static int apply_reported(dt *t, dt_dev *d, const dt_reading *r, size_t n, json_t *changed,
                          dt_err *err)
{
    const json_t *props = model_props(t, d);
    if (!props)
        return refuse(err, R_UNKNOWN_PROPERTY, "device %s/%s has no model on this node", d->ns,
                      d->name);
    for (size_t i = 0; i < n; i++) {
        const json_t *prop = ke_k8s_find_by(props, "name", r[i].name);
        if (!prop)
            return refuse(err, R_UNKNOWN_PROPERTY, "property \"%.64s\": not in the model of %s",
                          r[i].name, d->name);
        if (strlen(r[i].value) > DT_VALUE_MAX)
            return refuse(err, R_OVERSIZED, "property \"%s\": value longer than %d bytes",
                          r[i].name, DT_VALUE_MAX);
        char why[200];
        if (ke_k8s_twin_value_check(prop, r[i].value, 0, why, sizeof(why)) != 0)
            return refuse(err, R_TYPE, "%s", why);
        int64_t held = json_integer_value(json_object_get(local_twin(d, r[i].name), "timestamp"));
        if (r[i].ts < held)
            return refuse(err, R_STALE,
                          "property \"%s\": reading taken at %" PRId64 " is older than the one "
                          "held (%" PRId64 ")",
                          r[i].name, r[i].ts, held);
    }
    json_t *local = json_deep_copy(d->local);
    json_t *twins = json_object_get(local, "twins");
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *cur = json_object_get(twins, r[i].name);
        const char *cv = ke_k8s_str(cur, "value");
        if (cv && strcmp(cv, r[i].value) == 0 &&
            json_integer_value(json_object_get(cur, "timestamp")) == r[i].ts)
            continue; /* the same reading again */
        json_int_t version = json_integer_value(json_object_get(cur, "version")) + 1;
        json_object_set_new(twins, r[i].name,
                            json_pack("{s:s,s:I,s:I}", "value", r[i].value, "timestamp",
                                      (json_int_t)r[i].ts, "version", version));
        char ts[32];
        snprintf(ts, sizeof(ts), "%" PRId64, r[i].ts);
        /* a later reading of the same property in this report replaces it */
        size_t j;
        json_t *e;
        json_array_foreach(list, j, e) {
            if (strcmp(ke_k8s_str(e, "propertyName"), r[i].name) == 0) {
                json_array_remove(list, j);
                break;
            }
        }
        json_array_append_new(list, json_pack("{s:s,s:{s:s,s:{s:s}}}", "propertyName", r[i].name,
                                              "reported", "value", r[i].value, "metadata",
                                              "timestamp", ts));
        json_object_set_new(changed, r[i].name, json_true());
    }
    int rc = 0;
    if (json_array_size(list) > 0) {
        json_t *content = json_pack("{s:o}", "twins", json_incref(list));
        rc = store_report(t, d, local, content, err);
        json_decref(content);
    }
    json_decref(list);
    json_decref(local);
    return rc;
}

/* apply_state records the device's state; *came_online when it did. */
static int apply_state(dt *t, dt_dev *d, const char *state, int *came_online, dt_err *err)
{
    *came_online = 0;
    if (strcmp(state, "online") != 0 && strcmp(state, "offline") != 0 &&
        strcmp(state, "unknown") != 0)
        return refuse(err, R_TYPE, "state: \"%.40s\" is not online, offline or unknown", state);
    const char *was = ke_k8s_str(d->local, "state");
    if (was && strcmp(was, state) == 0)
        return 0;
    json_t *local = json_deep_copy(d->local);
    json_object_set_new(local, "state", json_string(state));
    if (strcmp(state, "online") == 0) {
        char ts[32];
        ke_time_rfc3339(ts, sizeof(ts), ke_time_wall_ms());
        json_object_set_new(local, "lastOnline", json_string(ts));
        *came_online = 1;
    }
    json_t *content = json_pack("{s:s}", "state", state);
    int rc = store_report(t, d, local, content, err);
    json_decref(content);
    json_decref(local);
    return rc;
}

static void count_refusal(dt *t, const char *topic, const dt_err *err)
{
    ke_metric_add(t->m_refused[err->reason], 1);
    char et[KE_LOG_ESC_SIZE(160)], ew[KE_LOG_ESC_SIZE(256)];
    ke_log_warn(DT_MOD, "refused topic=%s reason=%s: %s", ke_log_esc(topic, et, sizeof(et)),
                reason_names[err->reason], ke_log_esc(err->why, ew, sizeof(ew)));
}

/* ---- the JSON topics ---- */

static void json_error_result(dt *t, const char *topic, const char *event_id, const dt_err *err)
{
    json_t *j = base_message(t, event_id ? event_id : "");
    json_object_set_new(j, "code", json_integer(reason_codes[err->reason]));
    json_object_set_new(j, "reason", json_string(err->why));
    publish_json(t, topic, j);
}

static int64_t ts_field(const json_t *v, int64_t dflt, int *bad)
{
    if (!v)
        return dflt;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        *bad = 1;
        return 0;
    }
    return json_integer_value(v);
}

static void on_twin_update(dt *t, dt_dev *d, const char *id, json_t *in, dt_err *err)
{
    char rtopic[512], dtopic[512];
    device_topic(rtopic, sizeof(rtopic), id, "twin/update/result");
    device_topic(dtopic, sizeof(dtopic), id, "twin/update/document");
    const char *event_id = ke_k8s_str(in, "event_id");
    json_t *twin = json_object_get(in, "twin");
    dt_reading r[DT_READINGS_MAX];
    size_t n = 0;
    int bad = 0;
    int64_t msg_ts = ts_field(json_object_get(in, "timestamp"), 0, &bad);
    if (bad)
        refuse(err, R_TYPE, "timestamp: not a whole number of milliseconds");
    else if (!json_is_object(twin) || json_object_size(twin) == 0)
        refuse(err, R_MALFORMED, "twin: an object of properties is required");
    else if (json_object_size(twin) > DT_READINGS_MAX)
        refuse(err, R_OVERSIZED, "twin: more than %d properties", DT_READINGS_MAX);
    if (err->why[0]) {
        count_refusal(t, rtopic, err);
        json_error_result(t, rtopic, event_id, err);
        return;
    }
    int64_t now = ke_time_wall_ms();
    const char *k;
    json_t *v;
    json_object_foreach(twin, k, v) {
        const json_t *prop = ke_k8s_find_by(model_props(t, d), "name", k);
        const char *mode = prop ? ke_k8s_str(prop, "accessMode") : NULL;
        if (!json_is_object(v)) {
            refuse(err, R_MALFORMED, "twin.%.64s: an object is required", k);
        } else if (json_object_get(v, "expected")) {
            if (mode && strcmp(mode, "ReadOnly") == 0)
                refuse(err, R_READ_ONLY, "twin.%.64s: the property is ReadOnly", k);
            else
                refuse(err, R_DESIRED,
                       "twin.%.64s.expected: desired values are set in the cloud "
                       "(kectl twin set), not by the edge",
                       k);
        } else if (!json_is_object(json_object_get(v, "actual"))) {
            refuse(err, R_MALFORMED, "twin.%.64s.actual: required", k);
        } else if (!json_is_string(json_object_get(json_object_get(v, "actual"), "value"))) {
            refuse(err, R_TYPE, "twin.%.64s.actual.value: a string is required", k);
        } else {
            const json_t *a = json_object_get(v, "actual");
            r[n].name = k;
            r[n].value = json_string_value(json_object_get(a, "value"));
            r[n].ts = ts_field(json_object_get(json_object_get(a, "metadata"), "timestamp"),
                               msg_ts > 0 ? msg_ts : now, &bad);
            if (bad)
                refuse(err, R_TYPE, "twin.%.64s.actual.metadata.timestamp: not a whole number "
                       "of milliseconds", k);
            n++;
        }
        if (err->why[0])
            break;
    }
    json_t *changed = json_object(), *lasts = json_object();
    for (size_t i = 0; !err->why[0] && i < n; i++) {
        const json_t *prop = ke_k8s_find_by(model_props(t, d), "name", r[i].name);
        json_t *last = prop ? msg_twin(d, prop, 0) : NULL;
        if (last)
            json_object_set_new(lasts, r[i].name, last);
    }
    if (!err->why[0])
        apply_reported(t, d, r, n, changed, err);
    if (err->why[0]) {
        count_refusal(t, rtopic, err);
        json_error_result(t, rtopic, event_id, err);
        json_decref(changed);
        json_decref(lasts);
        return;
    }
    json_t *res = base_message(t, event_id ? event_id : "");
    json_t *tw = json_object();
    json_t *doc = base_message(t, event_id ? event_id : "");
    json_t *dtw = json_object();
    json_object_foreach(twin, k, v) {
        const json_t *prop = ke_k8s_find_by(model_props(t, d), "name", k);
        json_t *cur = prop ? msg_twin(d, prop, 1) : NULL;
        if (cur)
            json_object_set_new(tw, k, cur);
    }
    json_object_set_new(res, "twin", tw);
    publish_json(t, rtopic, res);
    if (json_object_size(changed) > 0) {
        json_object_foreach(changed, k, v) {
            const json_t *prop = ke_k8s_find_by(model_props(t, d), "name", k);
            json_t *cur = msg_twin(d, prop, 0);
            json_t *last = json_object_get(lasts, k);
            if (cur)
                json_object_set_new(dtw, k, json_pack("{s:O?,s:o}", "last", last,
                                                      "current", cur));
        }
        json_object_set_new(doc, "twin", dtw);
        publish_json(t, dtopic, doc);
    } else {
        json_decref(dtw);
        json_decref(doc);
    }
    json_decref(changed);
    json_decref(lasts);
}

static void on_twin_get(dt *t, dt_dev *d, const char *id, json_t *in)
{
    char topic[512];
    device_topic(topic, sizeof(topic), id, "twin/get/result");
    json_t *j = base_message(t, ke_k8s_str(in, "event_id") ? ke_k8s_str(in, "event_id") : "");
    json_object_set_new(j, "twin", twins_of(t, d, 0));
    publish_json(t, topic, j);
}

static void on_state_update(dt *t, dt_dev *d, const char *id, json_t *in, dt_err *err)
{
    char topic[512];
    device_topic(topic, sizeof(topic), id, "state/update/result");
    const char *event_id = ke_k8s_str(in, "event_id");
    const json_t *st = json_object_get(in, "state");
    int came_online = 0;
    if (!json_is_string(st))
        refuse(err, R_MALFORMED, "state: a string is required");
    else
        apply_state(t, d, json_string_value(st), &came_online, err);
    if (err->why[0]) {
        count_refusal(t, topic, err);
        json_error_result(t, topic, event_id, err);
        return;
    }
    json_t *j = base_message(t, event_id ? event_id : "");
    json_t *dev = json_pack("{s:s,s:s}", "name", d->name, "state", json_string_value(st));
    if (ke_k8s_str(d->local, "lastOnline"))
        json_object_set_new(dev, "last_online", json_string(ke_k8s_str(d->local, "lastOnline")));
    json_object_set_new(j, "device", dev);
    publish_json(t, topic, j);
    if (came_online)
        send_delta(t, d);
}

static int add_summary(const char *k, void *v, void *arg)
{
    (void)k;
    json_array_append_new(arg, device_summary(v));
    return 0;
}

static void on_membership_get(dt *t, json_t *in)
{
    char topic[256];
    snprintf(topic, sizeof(topic), "$hw/events/node/%s/membership/get/result", t->cfg->node_name);
    json_t *j = base_message(t, ke_k8s_str(in, "event_id") ? ke_k8s_str(in, "event_id") : "");
    json_t *devs = json_array();
    ke_map_each(t->devs, add_summary, devs);
    json_object_set_new(j, "devices", devs);
    publish_json(t, topic, j);
}

/* parse_json reads a device topic's payload: a JSON object (an empty
 * payload is {}), within the depth bound. */
static json_t *parse_json(const void *payload, size_t len, dt_err *err)
{
    if (len == 0)
        return json_object();
    json_error_t je;
    json_t *j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &je);
    char why[160];
    if (!json_is_object(j)) {
        refuse(err, R_MALFORMED, "not a JSON object%s%s", j ? "" : ": ", j ? "" : je.text);
        json_decref(j);
        return NULL;
    }
    if (ke_k8s_json_depth_check(j, DT_JSON_DEPTH, why, sizeof(why)) != 0) {
        refuse(err, R_MALFORMED, "%s", why);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* on_device_topic: $hw/events/device/<id>/<what>. */
static void on_device_topic(dt *t, const char *topic, const void *payload, size_t len)
{
    static const char *const whats[] = {"/twin/update", "/twin/get", "/state/update"};
    const char *rest = topic + strlen(DT_DEVICE_TOPIC);
    size_t rl = strlen(rest), w = 0, wl = 0;
    for (; w < 3; w++) {
        wl = strlen(whats[w]);
        if (rl > wl && strcmp(rest + rl - wl, whats[w]) == 0)
            break;
    }
    dt_err err = {0};
    char id[400], rtopic[512];
    if (w == 3 || rl - wl >= sizeof(id)) {
        refuse(&err, R_TOPIC, "not a device topic this node answers");
        count_refusal(t, topic, &err);
        return;
    }
    memcpy(id, rest, rl - wl);
    id[rl - wl] = '\0';
    snprintf(rtopic, sizeof(rtopic), "%s/result", topic);
    json_t *in = NULL;
    dt_dev *d = NULL;
    if (len > DT_PAYLOAD_MAX)
        refuse(&err, R_OVERSIZED, "payload of %zu bytes; at most %d", len, DT_PAYLOAD_MAX);
    else if ((in = parse_json(payload, len, &err)) != NULL)
        d = find_dev(t, id, &err);
    if (!d) {
        count_refusal(t, topic, &err);
        json_error_result(t, rtopic, in ? ke_k8s_str(in, "event_id") : NULL, &err);
        json_decref(in);
        return;
    }
    if (w == 0)
        on_twin_update(t, d, id, in, &err);
    else if (w == 1)
        on_twin_get(t, d, id, in);
    else
        on_state_update(t, d, id, in, &err);
    json_decref(in);
}

/* ---- the protobuf topics ---- */

static void frame_answer(dt *t, dt_dev *d, const char *id, uint32_t seq, const dt_err *err)
{
    Ke__Mapper__V1__MapperFrame f;
    Ke__Mapper__V1__Refusal r;
    ke__mapper__v1__mapper_frame__init(&f);
    if (err && err->why[0]) {
        ke__mapper__v1__refusal__init(&r);
        r.seq = seq;
        r.code = (uint32_t)reason_codes[err->reason];
        char reason[64];
        snprintf(reason, sizeof(reason), "%.63s", err->why); /* mapper.options bound */
        r.reason = reason;
        f.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_REFUSED;
        f.refused = &r;
        if (d) {
            frame_publish(t, d, &f);
        } else { /* no device: answered on the topic it wrote to */
            size_t len = ke__mapper__v1__mapper_frame__get_packed_size(&f);
            uint8_t buf[256];
            char topic[512];
            if (len <= sizeof(buf)) {
                ke__mapper__v1__mapper_frame__pack(&f, buf);
                snprintf(topic, sizeof(topic), DT_MAPPER_TOPIC "%s/down", id);
                publish(t, topic, buf, len);
            }
        }
        return;
    }
    f.body_case = KE__MAPPER__V1__MAPPER_FRAME__BODY_ACK;
    f.ack = seq;
    frame_publish(t, d, &f);
}

static void on_mapper_topic(dt *t, const char *topic, const void *payload, size_t len)
{
    const char *rest = topic + strlen(DT_MAPPER_TOPIC);
    size_t rl = strlen(rest);
    dt_err err = {0};
    char id[400];
    if (rl <= 3 || strcmp(rest + rl - 3, "/up") != 0 || rl - 3 >= sizeof(id)) {
        refuse(&err, R_TOPIC, "not a mapper topic this node answers");
        count_refusal(t, topic, &err);
        return;
    }
    memcpy(id, rest, rl - 3);
    id[rl - 3] = '\0';
    Ke__Mapper__V1__MapperFrame *f = NULL;
    dt_dev *d = NULL;
    if (len > DT_PAYLOAD_MAX)
        refuse(&err, R_OVERSIZED, "frame of %zu bytes; at most %d", len, DT_PAYLOAD_MAX);
    else if (!(f = ke__mapper__v1__mapper_frame__unpack(NULL, len, payload)))
        refuse(&err, R_MALFORMED, "not a ke.mapper.v1.MapperFrame");
    else
        d = find_dev(t, id, &err);
    uint32_t seq = f ? f->seq : 0;
    const char *named = NULL; /* the device the frame names */
    int came_online = 0;
    if (d) {
        switch (f->body_case) {
        case KE__MAPPER__V1__MAPPER_FRAME__BODY_REPORTED: {
            named = f->reported->device;
            dt_reading r[DT_READINGS_MAX];
            size_t n = f->reported->n_properties;
            int64_t now = ke_time_wall_ms();
            if (n == 0 || n > DT_READINGS_MAX) {
                refuse(&err, R_MALFORMED, "reported: 1 to %d properties", DT_READINGS_MAX);
                break;
            }
            for (size_t i = 0; i < n; i++) {
                const Ke__Mapper__V1__PropertyValue *pv = f->reported->properties[i];
                r[i].name = pv->name;
                r[i].value = pv->value;
                r[i].ts = pv->timestamp_ms > 0 ? pv->timestamp_ms : now;
            }
            json_t *changed = json_object();
            if (!named[0] || strcmp(named, d->name) == 0)
                apply_reported(t, d, r, n, changed, &err);
            json_decref(changed);
            break;
        }
        case KE__MAPPER__V1__MAPPER_FRAME__BODY_GET: {
            named = f->get->device;
            json_t *values = json_object();
            size_t i;
            json_t *prop;
            json_array_foreach(model_props(t, d), i, prop) {
                const char *pn = ke_k8s_str(prop, "name");
                const char *dv = pn ? desired(d, pn, NULL) : NULL;
                if (dv)
                    json_object_set_new(values, pn, json_string(dv));
            }
            if (!named[0] || strcmp(named, d->name) == 0)
                frame_desired(t, d, values);
            json_decref(values);
            break;
        }
        case KE__MAPPER__V1__MAPPER_FRAME__BODY_STATE: {
            named = f->state->device;
            const char *s = f->state->state == KE__MAPPER__V1__DEVICE_STATE__DEVICE_STATE_ONLINE
                                ? "online"
                            : f->state->state == KE__MAPPER__V1__DEVICE_STATE__DEVICE_STATE_OFFLINE
                                ? "offline"
                                : "unknown";
            if (!named[0] || strcmp(named, d->name) == 0)
                apply_state(t, d, s, &came_online, &err);
            break;
        }
        case KE__MAPPER__V1__MAPPER_FRAME__BODY_ACK:
            ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
            return; /* an ack of a frame we sent: nothing to answer */
        case KE__MAPPER__V1__MAPPER_FRAME__BODY_DESIRED:
            refuse(&err, R_DESIRED, "desired values are set in the cloud, not by the mapper");
            break;
        default:
            refuse(&err, R_MALFORMED, "a frame from a mapper carries reported, get or state");
            break;
        }
        if (!err.why[0] && named && named[0] && strcmp(named, d->name) != 0)
            refuse(&err, R_MALFORMED, "the frame names device \"%.64s\", the topic %s", named,
                   id);
    }
    if (err.why[0])
        count_refusal(t, topic, &err);
    frame_answer(t, d, id, seq, &err);
    if (came_online)
        send_delta(t, d);
    if (f)
        ke__mapper__v1__mapper_frame__free_unpacked(f, NULL);
}

/* ---- the module ---- */

size_t devicetwin_filters(const char *node_name, char (*out)[DEVICETWIN_FILTER_MAX], size_t cap)
{
    static const char *const filters[] = {
        DT_DEVICE_TOPIC "+/twin/update", DT_DEVICE_TOPIC "+/+/twin/update",
        DT_DEVICE_TOPIC "+/twin/get",    DT_DEVICE_TOPIC "+/+/twin/get",
        DT_DEVICE_TOPIC "+/state/update", DT_DEVICE_TOPIC "+/+/state/update",
        DT_MAPPER_TOPIC "+/up",          DT_MAPPER_TOPIC "+/+/up",
    };
    size_t n = 0;
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]) && n < cap; i++)
        snprintf(out[n++], DEVICETWIN_FILTER_MAX, "%s", filters[i]);
    if (n < cap)
        snprintf(out[n++], DEVICETWIN_FILTER_MAX, "$hw/events/node/%s/membership/get", node_name);
    return n;
}

static void dt_on_message(ke_module *m, Ke__V1__Message *msg)
{
    dt *t = ke_module_data(m);
    const char *res = msg->route ? msg->route->resource : NULL;
    const char *src = msg->route ? msg->route->source : NULL;
    if (!res) {
        ke__v1__message__free_unpacked(msg, NULL);
        return;
    }
    if (src && strcmp(src, "eventbus") == 0 &&
        msg->route->operation == KE__V1__OPERATION__OPERATION_PUBLISH) {
        const void *p = msg->content.data;
        size_t len = msg->content.len;
        if (strncmp(res, DT_DEVICE_TOPIC, strlen(DT_DEVICE_TOPIC)) == 0) {
            on_device_topic(t, res, p, len);
        } else if (strncmp(res, DT_MAPPER_TOPIC, strlen(DT_MAPPER_TOPIC)) == 0) {
            on_mapper_topic(t, res, p, len);
        } else {
            dt_err err = {0};
            json_t *in = len > DT_PAYLOAD_MAX ? NULL : parse_json(p, len, &err);
            char want[256];
            snprintf(want, sizeof(want), "$hw/events/node/%s/membership/get", t->cfg->node_name);
            if (in && strcmp(res, want) == 0) {
                on_membership_get(t, in);
            } else {
                if (!err.why[0])
                    refuse(&err, len > DT_PAYLOAD_MAX ? R_OVERSIZED : R_TOPIC,
                           "not a topic this node answers");
                count_refusal(t, res, &err);
            }
            json_decref(in);
        }
    } else if (strncmp(res, t->prefix, strlen(t->prefix)) == 0) {
        object_changed(t, res, 1);
    }
    ke__v1__message__free_unpacked(msg, NULL);
}

static int dt_start(ke_module *m)
{
    const devicetwin_config *cfg = ke_module_config(m);
    if (!cfg || !cfg->node_name)
        return KE_EINVAL;
    dt *t = calloc(1, sizeof(*t));
    if (!t)
        return KE_ENOMEM;
    t->m = m;
    t->e = ke_module_rt(m);
    t->cfg = cfg;
    t->devs = ke_map_new();
    t->byname = ke_map_new();
    t->models = ke_map_new();
    if (!t->devs || !t->byname || !t->models) {
        ke_map_free(t->devs);
        ke_map_free(t->byname);
        ke_map_free(t->models);
        free(t);
        return KE_ENOMEM;
    }
    snprintf(t->prefix, sizeof(t->prefix), "node/%s/", cfg->node_name);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&t->boot, sizeof(t->boot), 1, ur) != 1)
        t->boot = (uint64_t)ke_time_wall_ms() ^ ((uint64_t)getpid() << 32);
    if (ur)
        fclose(ur);
    ke_metrics_counter_new("ke_devicetwin_reports_total",
                           "reported values and states queued for the cloud", NULL, &t->m_reports);
    ke_metrics_counter_new("ke_devicetwin_deltas_total", "deltas sent to mappers", NULL,
                           &t->m_deltas);
    for (int r = 0; r < R_COUNT; r++) {
        const char *labels[] = {"reason", reason_names[r], NULL};
        ke_metrics_counter_new("ke_devicetwin_refused_total",
                               "messages on device topics refused, by reason", labels,
                               &t->m_refused[r]);
    }
    ke_module_set_data(m, t);
    int rc = edge_store_list(ke_rt_store(t->e), t->prefix, load_one, t);
    if (rc == 0)
        rc = edge_store_local_list(ke_rt_store(t->e), "devicetwin/", drop_orphan, t);
    if (rc != 0)
        ke_log_warn(DT_MOD, "cannot read devices from the store: %s (they come with the next "
                    "change)", ke_strerror(rc));
    ke_log_info(DT_MOD, "started devices=%zu models=%zu", ke_map_len(t->devs),
                ke_map_len(t->models));
    return 0;
}

static int dt_health(ke_module *m, char *detail, size_t cap)
{
    dt *t = ke_module_data(m);
    if (t)
        snprintf(detail, cap, "devices=%zu", ke_map_len(t->devs));
    return 0;
}

static int free_dev(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    dev_free(v);
    return 0;
}

static int free_model(const char *k, void *v, void *arg)
{
    (void)k;
    (void)arg;
    json_decref(v);
    return 0;
}

static void dt_destroy(ke_module *m)
{
    dt *t = ke_module_data(m);
    if (!t)
        return;
    ke_map_each(t->devs, free_dev, NULL);
    ke_map_each(t->models, free_model, NULL);
    ke_map_free(t->devs);
    ke_map_free(t->byname);
    ke_map_free(t->models);
    free(t);
    ke_module_set_data(m, NULL);
}

const ke_module_ops devicetwin_module = {
    .name = DT_MOD,
    .group = "devicetwin",
    .start = dt_start,
    .on_message = dt_on_message,
    .health = dt_health,
    .destroy = dt_destroy,
};
