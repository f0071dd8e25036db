/*
 * ke_modbus_config.c — Device (and DeviceModel) JSON → ke_modbus_config
 * (ke_modbus_config.h). Map: url_parse/link_from_fields for the protocol's
 * connection, point_parse for one property, model_apply for types and
 * access from the model.
 */
#include "ke_modbus_config.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(char *err, const char *f, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    vsnprintf(err, KE_MODBUS_ERR_MAX, f, ap);
    va_end(ap);
    return -1;
}

/* int_in parses a whole decimal integer in [lo, hi]. */
static int int_in(const char *s, size_t len, long lo, long hi, long *out)
{
    char buf[32];
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (*end != '\0' || errno != 0 || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static void link_defaults(ke_modbus_link *l)
{
    l->port = 502;
    l->baud = 9600;
    l->data_bits = 8;
    l->stop_bits = 1;
    l->parity = 'N';
}

/* rtu_option applies one key=value of an RTU URL's query. */
static int rtu_option(ke_modbus_link *l, const char *kv, size_t len, char *err)
{
    const char *eq = memchr(kv, '=', len);
    if (!eq)
        return fail(err, "url: option \"%.*s\" has no '='", (int)len, kv);
    size_t klen = (size_t)(eq - kv), vlen = len - klen - 1;
    const char *v = eq + 1;
    long n;
    if (klen == 6 && memcmp(kv, "parity", 6) == 0) {
        if (vlen != 1 || !strchr("NEO", v[0]))
            return fail(err, "url: parity must be N, E or O");
        l->parity = v[0];
        return 0;
    }
    struct {
        const char *key;
        long lo, hi;
        int *dst;
    } opts[] = {
        {"baud", 50, 4000000, &l->baud},
        {"data", 5, 8, &l->data_bits},
        {"stop", 1, 2, &l->stop_bits},
        {"slave", 0, 247, &l->slave},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        if (strlen(opts[i].key) == klen && memcmp(kv, opts[i].key, klen) == 0) {
            if (int_in(v, vlen, opts[i].lo, opts[i].hi, &n) != 0)
                return fail(err, "url: %s must be %ld..%ld", opts[i].key, opts[i].lo, opts[i].hi);
            *opts[i].dst = (int)n;
            return 0;
        }
    return fail(err, "url: unknown option \"%.*s\"", (int)klen, kv);
}

int ke_modbus_url_parse(const char *url, ke_modbus_link *l, char *err)
{
    int slave = l->slave;
    memset(l, 0, sizeof(*l));
    link_defaults(l);
    l->slave = slave;
    if (strncmp(url, "tcp://", 6) == 0) {
        const char *h = url + 6, *colon = strrchr(h, ':');
        size_t hlen = colon ? (size_t)(colon - h) : strlen(h);
        long port = 502;
        if (colon && int_in(colon + 1, strlen(colon + 1), 1, 65535, &port) != 0)
            return fail(err, "url %s: the port must be 1..65535", url);
        if (hlen == 0 || hlen > KE_MODBUS_HOST_MAX)
            return fail(err, "url %s: a host of 1..%d bytes", url, KE_MODBUS_HOST_MAX);
        l->mode = KE_MODBUS_TCP;
        memcpy(l->host, h, hlen);
        l->host[hlen] = '\0';
        l->port = (int)port;
        return 0;
    }
    if (strncmp(url, "rtu://", 6) == 0) {
        const char *p = url + 6, *q = strchr(p, '?');
        size_t plen = q ? (size_t)(q - p) : strlen(p);
        if (plen == 0 || plen > KE_MODBUS_HOST_MAX || p[0] != '/')
            return fail(err, "url %s: rtu:// then an absolute device path", url);
        l->mode = KE_MODBUS_RTU;
        memcpy(l->host, p, plen);
        l->host[plen] = '\0';
        while (q && *q) {
            const char *kv = q + 1, *amp = strchr(kv, '&');
            size_t len = amp ? (size_t)(amp - kv) : strlen(kv);
            if (rtu_option(l, kv, len, err) != 0)
                return -1;
            q = amp;
        }
        return 0;
    }
    return fail(err, "url %s: must start with tcp:// or rtu://", url);
}

/* json_int_in reads an integer member (a JSON number, or a string of
 * digits as KubeEdge's configData often holds) in [lo, hi]; absent: def. */
static int json_int_in(const json_t *o, const char *key, long long lo, long long hi,
                       long long def, long long *out)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    long long n;
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == (double)(long long)json_real_value(v)) {
        n = (long long)json_real_value(v);
    } else if (json_is_string(v)) {
        char *end;
        errno = 0;
        n = strtoll(json_string_value(v), &end, 10);
        if (*end != '\0' || errno != 0 || end == json_string_value(v))
            return -1;
    } else {
        return -1;
    }
    if (n < lo || n > hi)
        return -1;
    *out = n;
    return 0;
}

/* link_from_fields: KubeEdge mapper-style connection fields. */
static int link_from_fields(const json_t *cd, ke_modbus_link *l, char *err)
{
    const char *ip = json_string_value(json_object_get(cd, "ip"));
    const char *serial = json_string_value(json_object_get(cd, "serialPort"));
    long long v;
    if (ip) {
        if (strlen(ip) == 0 || strlen(ip) > KE_MODBUS_HOST_MAX)
            return fail(err, "protocol.configData.ip: 1..%d bytes", KE_MODBUS_HOST_MAX);
        l->mode = KE_MODBUS_TCP;
        snprintf(l->host, sizeof(l->host), "%s", ip);
        if (json_int_in(cd, "port", 1, 65535, 502, &v) != 0)
            return fail(err, "protocol.configData.port: 1..65535");
        l->port = (int)v;
        return 0;
    }
    if (!serial)
        return fail(err, "protocol.configData: url, ip or serialPort required");
    if (strlen(serial) == 0 || strlen(serial) > KE_MODBUS_HOST_MAX)
        return fail(err, "protocol.configData.serialPort: 1..%d bytes", KE_MODBUS_HOST_MAX);
    l->mode = KE_MODBUS_RTU;
    snprintf(l->host, sizeof(l->host), "%s", serial);
    if (json_int_in(cd, "baudRate", 50, 4000000, 9600, &v) != 0)
        return fail(err, "protocol.configData.baudRate: 50..4000000");
    l->baud = (int)v;
    if (json_int_in(cd, "dataBits", 5, 8, 8, &v) != 0)
        return fail(err, "protocol.configData.dataBits: 5..8");
    l->data_bits = (int)v;
    if (json_int_in(cd, "stopBits", 1, 2, 1, &v) != 0)
        return fail(err, "protocol.configData.stopBits: 1 or 2");
    l->stop_bits = (int)v;
    const char *par = json_string_value(json_object_get(cd, "parity"));
    if (par) {
        /* "N"/"E"/"O", or KubeEdge's "none"/"even"/"odd" */
        char c = (char)(par[0] >= 'a' && par[0] <= 'z' ? par[0] - 32 : par[0]);
        if (!strchr("NEO", c) || c == '\0')
            return fail(err, "protocol.configData.parity: N, E or O");
        l->parity = c;
    }
    return 0;
}

static int link_parse(const json_t *protocol, ke_modbus_link *l, char *err)
{
    const char *pn = json_string_value(json_object_get(protocol, "protocolName"));
    if (!pn || strcasecmp(pn, "modbus") != 0)
        return fail(err, "spec.protocol.protocolName: \"modbus\" required (got %s)",
                    pn ? pn : "none");
    const json_t *cd = json_object_get(protocol, "configData");
    if (!json_is_object(cd))
        return fail(err, "spec.protocol.configData: required, an object");
    long long slave;
    if (json_int_in(cd, "slaveID", 0, 255, 1, &slave) != 0)
        return fail(err, "spec.protocol.configData.slaveID: 0..255");
    memset(l, 0, sizeof(*l));
    link_defaults(l);
    l->slave = (int)slave;
    const char *url = json_string_value(json_object_get(cd, "url"));
    if (url)
        return ke_modbus_url_parse(url, l, err);
    return link_from_fields(cd, l, err);
}

/* cycle_ms: a KubeEdge cycle (nanoseconds) in ms within the bounds. */
static int cycle_ms(const json_t *p, const char *key, uint32_t def, uint32_t *out)
{
    long long ns;
    if (json_int_in(p, key, 0, (long long)KE_MODBUS_CYCLE_MAX_MS * 1000000, 0, &ns) != 0)
        return -1;
    if (ns == 0) {
        *out = def;
        return 0;
    }
    long long ms = ns / 1000000;
    *out = ms < KE_MODBUS_CYCLE_MIN_MS ? KE_MODBUS_CYCLE_MIN_MS : (uint32_t)ms;
    return 0;
}

static int point_parse(const json_t *p, size_t i, ke_modbus_point *pt, bool *skip, char *err)
{
    *skip = false;
    const char *name = json_string_value(json_object_get(p, "name"));
    if (!name || !name[0] || strlen(name) > KE_MAPPER_TEXT_MAX)
        return fail(err, "spec.properties[%zu].name: 1..%d bytes", i, KE_MAPPER_TEXT_MAX);
    const json_t *vis = json_object_get(p, "visitors");
    const char *pn = json_string_value(json_object_get(vis, "protocolName"));
    const json_t *cd = json_object_get(vis, "configData");
    if (!json_is_object(cd) || (pn && strcasecmp(pn, "modbus") != 0)) {
        *skip = true; /* not served by this mapper */
        return 0;
    }
    memset(pt, 0, sizeof(*pt));
    snprintf(pt->name, sizeof(pt->name), "%s", name);
    ke_modbus_visitor *v = &pt->visitor;
    const char *reg = json_string_value(json_object_get(cd, "register"));
    if (ke_modbus_register_parse(reg, &v->reg) != 0)
        return fail(err,
                    "property %s: register \"%s\": CoilRegister, DiscreteInputRegister, "
                    "HoldingRegister or InputRegister",
                    name, reg ? reg : "");
    long long n;
    if (json_int_in(cd, "offset", 0, 65535, 0, &n) != 0)
        return fail(err, "property %s: offset must be 0..65535", name);
    v->offset = (uint16_t)n;
    if (json_int_in(cd, "limit", 1, KE_MODBUS_REGS_MAX, 1, &n) != 0)
        return fail(err, "property %s: limit must be 1..%d", name, KE_MODBUS_REGS_MAX);
    v->limit = (uint16_t)n;
    if ((unsigned)v->offset + v->limit > 65536)
        return fail(err, "property %s: offset + limit past register 65535", name);
    const json_t *sc = json_object_get(cd, "scale");
    v->scale = 1;
    if (sc && !json_is_number(sc))
        return fail(err, "property %s: scale must be a number", name);
    if (sc && json_number_value(sc) != 0)
        v->scale = json_number_value(sc);
    v->swap = json_is_true(json_object_get(cd, "isSwap"));
    v->register_swap = json_is_true(json_object_get(cd, "isRegisterSwap"));
    /* the type before the model says otherwise (ke_modbus_config.h) */
    pt->type = (v->reg == KE_MODBUS_COIL || v->reg == KE_MODBUS_DISCRETE_INPUT) ? KE_PROP_BOOL
               : v->scale == 1                                                ? KE_PROP_INT
                                                                               : KE_PROP_FLOAT;
    pt->access = ke_modbus_register_writable(v->reg) ? KE_PROP_READWRITE : KE_PROP_READ;
    if (cycle_ms(p, "collectCycle", KE_MODBUS_COLLECT_DEFAULT_MS, &pt->collect_ms) != 0)
        return fail(err, "property %s: collectCycle must be 0..%u ms in nanoseconds", name,
                    KE_MODBUS_CYCLE_MAX_MS);
    if (cycle_ms(p, "reportCycle", 0, &pt->report_ms) != 0)
        return fail(err, "property %s: reportCycle must be 0..%u ms in nanoseconds", name,
                    KE_MODBUS_CYCLE_MAX_MS);
    return 0;
}

/* model_apply sets each point's type and access from the DeviceModel. */
static int model_apply(const json_t *model, ke_modbus_config *c, char *err)
{
    const json_t *props = json_object_get(json_object_get(model, "spec"), "properties");
    if (!json_is_array(props))
        return fail(err, "model: spec.properties required, a list");
    for (size_t k = 0; k < c->n_points; k++) {
        ke_modbus_point *pt = &c->points[k];
        const json_t *mp = NULL, *p;
        size_t i;
        json_array_foreach(props, i, p) {
            const char *n = json_string_value(json_object_get(p, "name"));
            if (n && strcmp(n, pt->name) == 0)
                mp = p;
        }
        if (!mp)
            return fail(err, "property %s: not in the model", pt->name);
        const char *t = json_string_value(json_object_get(mp, "type"));
        if (t && strcasecmp(t, "int") == 0)
            pt->type = KE_PROP_INT;
        else if (t && (strcasecmp(t, "float") == 0 || strcasecmp(t, "double") == 0))
            pt->type = KE_PROP_FLOAT;
        else if (t && strcasecmp(t, "boolean") == 0)
            pt->type = KE_PROP_BOOL;
        else if (t && strcasecmp(t, "string") == 0)
            pt->type = KE_PROP_STRING;
        else
            return fail(err, "property %s: type %s: INT, FLOAT, DOUBLE, BOOLEAN or STRING",
                        pt->name, t ? t : "none");
        const char *am = json_string_value(json_object_get(mp, "accessMode"));
        bool rw = !am || strcmp(am, "ReadWrite") == 0;
        pt->access = rw && ke_modbus_register_writable(pt->visitor.reg) ? KE_PROP_READWRITE
                                                                        : KE_PROP_READ;
    }
    return 0;
}

int ke_modbus_config_parse(const char *device_json, const char *model_json, ke_modbus_config *c,
                           char *err)
{
    json_error_t je;
    json_t *dev = json_loads(device_json, 0, &je), *model = NULL;
    int rc = -1;
    memset(c, 0, sizeof(*c));
    if (!dev) {
        fail(err, "device: invalid JSON at line %d: %s", je.line, je.text);
        goto out;
    }
    const char *name = json_string_value(json_object_get(json_object_get(dev, "metadata"), "name"));
    if (!name || !name[0] || strlen(name) > KE_MAPPER_TEXT_MAX) {
        fail(err, "device: metadata.name required, at most %d bytes", KE_MAPPER_TEXT_MAX);
        goto out;
    }
    snprintf(c->device, sizeof(c->device), "%s", name);
    const json_t *spec = json_object_get(dev, "spec");
    if (link_parse(json_object_get(spec, "protocol"), &c->link, err) != 0)
        goto out;
    const json_t *props = json_object_get(spec, "properties"), *p;
    size_t i;
    json_array_foreach(props, i, p) {
        bool skip;
        if (c->n_points == KE_MAPPER_PROPS_MAX) {
            fail(err, "device: more than %d modbus properties", KE_MAPPER_PROPS_MAX);
            goto out;
        }
        if (point_parse(p, i, &c->points[c->n_points], &skip, err) != 0)
            goto out;
        if (!skip)
            c->n_points++;
    }
    if (c->n_points == 0) {
        fail(err, "device: no property with a modbus visitor");
        goto out;
    }
    if (model_json) {
        model = json_loads(model_json, 0, &je);
        if (!model) {
            fail(err, "model: invalid JSON at line %d: %s", je.line, je.text);
            goto out;
        }
        if (model_apply(model, c, err) != 0)
            goto out;
    }
    for (size_t k = 0; k < c->n_points; k++) {
        const char *why;
        if (ke_modbus_visitor_check(&c->points[k].visitor, c->points[k].type, &why) != 0) {
            fail(err, "property %s: %s", c->points[k].name, why);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(dev);
    json_decref(model);
    return rc;
}
