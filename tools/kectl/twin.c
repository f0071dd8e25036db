/*
 * twin.c — `kectl twin get DEVICE` (DeviceController.GetTwin, as a PROPERTY
 * DESIRED REPORTED UPDATED table) and `kectl twin set DEVICE PROPERTY
 * VALUE` (DeviceController.SetDesired). The twin table is shared with
 * describe.
 */
#include "kectl.h"

#include "devicecontroller.pb-c.h"
#include "ke_err.h"

#include <string.h>

typedef struct twin_opts {
    kectl_output out;
} twin_opts;

void kectl_help_twin(FILE *out)
{
    fputs("Read and set device twins: each property's desired value (set in the cloud,\n"
          "sent to the edge) and reported value (read by the mapper on the device).\n"
          "\n"
          "Usage:\n"
          "  kectl twin get DEVICE [-o json|yaml]\n"
          "  kectl twin set DEVICE PROPERTY VALUE\n"
          "\n"
          "twin get prints PROPERTY DESIRED REPORTED UPDATED (how long ago either value\n"
          "last changed). twin set checks VALUE against the property's type in the\n"
          "device's model; a VALUE that starts with '-' goes after --:\n"
          "  kectl twin set thermostat setpoint -- -5\n"
          "\n"
          "Flags:\n"
          "  -o, --output FORMAT   twin get: json or yaml instead of the table\n"
          "\n"
          "Examples:\n"
          "  kectl twin get thermometer -n plant-3\n"
          "  kectl twin set fan speed 1200\n"
          "\n",
          out);
    kectl_global_help(out);
}

static int twin_opt(void *ud, int c, const char *arg)
{
    twin_opts *o = ud;
    if (c == 'o' && (kectl_output_parse(arg, &o->out) != 0 ||
                     (o->out != KECTL_OUT_JSON && o->out != KECTL_OUT_YAML)))
        return kectl_usage_error("twin", "-o wants json or yaml, not \"%s\"", arg);
    return 0;
}

int kectl_twin_fetch(kectl *k, const char *ns, const char *name, Ke__V1__TwinReply **out,
                     ke_rpc_status *st)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)ns;
    ref.name = (char *)name;
    ProtobufCMessage *reply = NULL;
    int rc = kectl_call(k, &ke__v1__device_controller__descriptor, "GetTwin", &ref.base, &reply,
                        st);
    *out = (Ke__V1__TwinReply *)reply;
    return rc;
}

static const char *value_or_none(const Ke__V1__TwinValue *v)
{
    return v && v->value && v->value[0] ? v->value : "<none>";
}

void kectl_twin_table(FILE *out, const Ke__V1__TwinReply *r, const char *indent)
{
    static const char *const h[] = {"PROPERTY", "DESIRED", "REPORTED", "UPDATED"};
    kectl_table t;
    if (kectl_table_init(&t, h, 4) != 0)
        return;
    t.indent = indent;
    for (size_t i = 0; i < r->n_twins; i++) {
        const Ke__V1__Twin *tw = r->twins[i];
        int64_t last = 0;
        if (tw->desired && tw->desired->timestamp_ms > last)
            last = tw->desired->timestamp_ms;
        if (tw->reported && tw->reported->timestamp_ms > last)
            last = tw->reported->timestamp_ms;
        char age[32];
        kectl_age_ms(age, sizeof(age), last);
        kectl_row row = {.n = 0};
        kectl_row_add(&row, "%s", tw->property);
        kectl_row_add(&row, "%s", value_or_none(tw->desired));
        kectl_row_add(&row, "%s", value_or_none(tw->reported));
        kectl_row_add(&row, "%s", age);
        kectl_table_add_row(&t, &row);
    }
    kectl_table_print(&t, out, 0);
    kectl_table_free(&t);
}

static const char *state_name(Ke__V1__DeviceState s)
{
    switch (s) {
    case KE__V1__DEVICE_STATE__DEVICE_STATE_ONLINE: return "online";
    case KE__V1__DEVICE_STATE__DEVICE_STATE_OFFLINE: return "offline";
    default: return "unknown";
    }
}

static json_t *twin_value_json(const Ke__V1__TwinValue *v)
{
    if (!v)
        return json_null();
    return json_pack("{s:s, s:I}", "value", v->value ? v->value : "", "timestampMs",
                     (json_int_t)v->timestamp_ms);
}

/* twin_json is the reply as JSON, with the proto's field names in
 * lowerCamelCase as protobuf's JSON mapping writes them. */
static json_t *twin_json(const Ke__V1__TwinReply *r, const char *ns, const char *name)
{
    json_t *twins = json_array();
    for (size_t i = 0; twins && i < r->n_twins; i++)
        json_array_append_new(twins, json_pack("{s:s, s:o, s:o}", "property",
                                               r->twins[i]->property, "desired",
                                               twin_value_json(r->twins[i]->desired), "reported",
                                               twin_value_json(r->twins[i]->reported)));
    return json_pack("{s:{s:s, s:s}, s:s, s:I, s:o}", "device", "namespace", ns, "name", name,
                     "state", state_name(r->state), "lastOnlineMs", (json_int_t)r->last_online_ms,
                     "twins", twins);
}

static int twin_get(kectl *k, const twin_opts *o, const char *name)
{
    Ke__V1__TwinReply *r = NULL;
    ke_rpc_status st;
    if (kectl_twin_fetch(k, k->ns, name, &r, &st) != 0)
        return KECTL_EXIT_ERROR;
    if (st.code != KE_RPC_OK) {
        kectl_report(k, &st, "", kectl_kind_of("Device"), name);
        return KECTL_EXIT_ERROR;
    }
    int status = KECTL_EXIT_OK;
    if (o->out == KECTL_OUT_JSON || o->out == KECTL_OUT_YAML) {
        json_t *j = twin_json(r, k->ns, name);
        if (!j || kectl_print_object(stdout, NULL, j, o->out) != 0)
            status = KECTL_EXIT_ERROR;
        json_decref(j);
    } else if (r->n_twins == 0) {
        fprintf(stderr, "No twin properties found for device \"%s\" in %s namespace.\n", name,
                k->ns);
    } else {
        kectl_twin_table(stdout, r, "");
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return status;
}

static int twin_set(kectl *k, const char *name, const char *prop, const char *value)
{
    Ke__V1__DeviceRef ref = KE__V1__DEVICE_REF__INIT;
    ref.namespace_ = (char *)k->ns;
    ref.name = (char *)name;
    Ke__V1__SetDesiredRequest req = KE__V1__SET_DESIRED_REQUEST__INIT;
    req.device = &ref;
    req.property = (char *)prop;
    req.value = (char *)value;
    ProtobufCMessage *reply = NULL;
    ke_rpc_status st;
    if (kectl_call(k, &ke__v1__device_controller__descriptor, "SetDesired", &req.base, &reply,
                   &st) != 0)
        return KECTL_EXIT_ERROR;
    if (st.code != KE_RPC_OK) {
        /* NOT_FOUND may be about the property: the server's words then */
        kectl_report(k, &st, "", st.message[0] ? NULL : kectl_kind_of("Device"), name);
        return KECTL_EXIT_ERROR;
    }
    const Ke__V1__Twin *tw = (const Ke__V1__Twin *)reply;
    const char *desired = tw->desired && tw->desired->value ? tw->desired->value : value;
    printf("device/%s property %s desired=%s\n", name, prop, desired);
    protobuf_c_message_free_unpacked(reply, NULL);
    return KECTL_EXIT_OK;
}

int kectl_cmd_twin(kectl *k, int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    static const kectl_verb_def def = {"twin", opts, "o:", twin_opt, kectl_help_twin};
    twin_opts o = {.out = KECTL_OUT_TABLE};
    const char *pos[KECTL_MAX_ARGS];
    size_t n_pos;
    int rc = kectl_parse(k, &def, &o, argc, argv, pos, &n_pos);
    if (rc != 0)
        return rc == KECTL_HELP_SHOWN ? 0 : rc;
    if (n_pos == 0)
        return kectl_usage_error("twin", "twin wants get or set");
    for (size_t i = 1; i < n_pos && i < 3; i++)
        if (!pos[i][0] || strlen(pos[i]) > KECTL_NAME_MAX)
            return kectl_usage_error("twin", "\"%s\" is not a device or property name", pos[i]);
    if (strcmp(pos[0], "get") == 0) {
        if (n_pos != 2)
            return kectl_usage_error("twin", "usage: kectl twin get DEVICE");
        return twin_get(k, &o, pos[1]);
    }
    if (strcmp(pos[0], "set") == 0) {
        if (n_pos != 4)
            return kectl_usage_error("twin", "usage: kectl twin set DEVICE PROPERTY VALUE");
        return twin_set(k, pos[1], pos[2], pos[3]);
    }
    return kectl_usage_error("twin", "unknown twin command \"%s\": get or set", pos[0]);
}
