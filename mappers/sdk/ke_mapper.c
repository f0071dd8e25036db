/*
 * ke_mapper.c — the device SDK (ke_mapper.h): property table, reports,
 * desired values. Map: mapper_on_frame/on_desired take what the link
 * delivers; sample marks properties due; send_next builds the one frame
 * the link may carry (state, then TwinGet, then reports); on_done decides
 * what a lost or refused frame means.
 */
#include "ke_mapper.h"

#include <string.h>

#define BIT(i) ((uint32_t)1u << (i))

/* due tells whether the deadline t has come at now (wrap-safe). */
static bool due(uint32_t now, uint32_t t)
{
    return (int32_t)(now - t) >= 0;
}

/* text_hash: FNV-1a of a value, to notice a change without keeping the
 * text (4 bytes a property, not 64). */
static uint32_t text_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static bool bounded(const char *s)
{
    return s && s[0] && memchr(s, '\0', KE_MAPPER_TEXT_MAX + 1) != NULL;
}

/* read_prop reads property i into value[KE_MAPPER_TEXT_MAX + 1]. */
static int read_prop(ke_mapper *m, size_t i, char *value)
{
    value[0] = '\0';
    if (m->cfg.read(m->cfg.user, &m->cfg.props[i], value, KE_MAPPER_TEXT_MAX + 1) != 0) {
        m->stats.reads_failed++;
        return -1;
    }
    value[KE_MAPPER_TEXT_MAX] = '\0';
    return 0;
}

static void on_done(void *ctx, uint32_t seq, ke_link_outcome outcome,
                    const ke_mapper_v1_Refusal *refusal)
{
    (void)seq;
    ke_mapper *m = ctx;
    uint8_t kind = m->in_flight_kind;
    m->in_flight_kind = 0;
    if (outcome == KE_LINK_REFUSED) {
        /* done, not accepted: sending it again would be refused again */
        m->stats.frames_refused++;
        if (refusal)
            m->stats.last_refusal_code = refusal->code;
    } else if (outcome == KE_LINK_GAVE_UP) {
        /* the peer is away: what the frame said is still owed */
        m->stats.frames_lost++;
        if (kind == ke_mapper_v1_MapperFrame_state_tag)
            m->need_state = true;
        else if (kind == ke_mapper_v1_MapperFrame_get_tag)
            m->need_get = true;
        else if (kind == ke_mapper_v1_MapperFrame_reported_tag)
            m->dirty |= m->in_flight;
    }
    m->in_flight = 0;
}

int ke_mapper_start(ke_mapper *m, const ke_mapper_config *cfg, uint32_t now_ms)
{
    if (!m || !cfg || !bounded(cfg->device) || !cfg->props || cfg->n_props == 0 ||
        cfg->n_props > KE_MAPPER_PROPS_MAX || !cfg->read || !cfg->transport ||
        !cfg->transport->send || !cfg->transport->recv)
        return -1;
    for (size_t i = 0; i < cfg->n_props; i++) {
        const ke_prop *p = &cfg->props[i];
        if (!bounded(p->name) || (p->access & ~KE_PROP_READWRITE) || !p->access ||
            ((p->access & KE_PROP_WRITE) && !cfg->write))
            return -1;
    }
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    ke_link_init(&m->link, cfg->transport, cfg->retry_ms, cfg->retries, cfg->seq_start, on_done,
                 m);
    m->need_state = true;
    m->need_get = true;
    for (size_t i = 0; i < cfg->n_props; i++) {
        if (cfg->props[i].access & KE_PROP_READ)
            m->dirty |= BIT(i);
        m->next_report[i] = now_ms + cfg->props[i].period_ms;
        m->next_sample[i] = now_ms + cfg->props[i].change_ms;
    }
    return 0;
}

int ke_mapper_set_online(ke_mapper *m, bool online)
{
    if (!m)
        return -1;
    if (m->offline == !online)
        return 0;
    m->offline = !online;
    m->need_state = true;
    return 0;
}

int ke_mapper_resync(ke_mapper *m)
{
    if (!m)
        return -1;
    m->need_state = true;
    m->need_get = true;
    for (size_t i = 0; i < m->cfg.n_props; i++)
        if (m->cfg.props[i].access & KE_PROP_READ)
            m->dirty |= BIT(i);
    return 0;
}

int ke_mapper_changed(ke_mapper *m, size_t i)
{
    if (!m || i >= m->cfg.n_props || !(m->cfg.props[i].access & KE_PROP_READ))
        return -1;
    m->dirty |= BIT(i);
    return 0;
}

static long find_prop(const ke_mapper *m, const char *name)
{
    for (size_t i = 0; i < m->cfg.n_props; i++)
        if (strcmp(m->cfg.props[i].name, name) == 0)
            return (long)i;
    return -1;
}

/* on_desired applies a DesiredUpdate: each value through write(), then the
 * property is due for a report of what it reads back. */
static void on_desired(ke_mapper *m, const ke_mapper_v1_DesiredUpdate *d)
{
    if (d->device[0] && strcmp(d->device, m->cfg.device) != 0) {
        m->stats.other_device++;
        return;
    }
    pb_size_t n = d->properties_count;
    if (n > KE_MAPPER_FRAME_PROPS)
        n = KE_MAPPER_FRAME_PROPS; /* nanopb never decodes more */
    for (pb_size_t k = 0; k < n; k++) {
        const ke_mapper_v1_PropertyValue *pv = &d->properties[k];
        long i = find_prop(m, pv->name);
        if (i < 0) {
            m->stats.unknown++;
            continue;
        }
        const ke_prop *p = &m->cfg.props[i];
        if (!(p->access & KE_PROP_WRITE))
            m->stats.writes_refused++;
        else if (m->cfg.write(m->cfg.user, p, pv->value) == 0)
            m->stats.writes++;
        else
            m->stats.writes_failed++;
        if (p->access & KE_PROP_READ)
            m->dirty |= BIT(i); /* the twin learns the value the device holds */
    }
}

/* mapper_on_frame routes a data frame the link delivered. A mapper is sent
 * desired values only; anything else was acked by the link and is ignored. */
static void mapper_on_frame(ke_mapper *m, const ke_mapper_v1_MapperFrame *f)
{
    if (f->which_body == ke_mapper_v1_MapperFrame_desired_tag)
        on_desired(m, &f->body.desired);
}

/* sample marks the properties whose period came, or whose value changed. */
static void sample(ke_mapper *m, uint32_t now)
{
    char value[KE_MAPPER_TEXT_MAX + 1];
    for (size_t i = 0; i < m->cfg.n_props; i++) {
        const ke_prop *p = &m->cfg.props[i];
        if (!(p->access & KE_PROP_READ))
            continue;
        if (p->period_ms && due(now, m->next_report[i])) {
            m->dirty |= BIT(i);
            m->next_report[i] = now + p->period_ms;
        }
        if (p->change_ms && due(now, m->next_sample[i])) {
            m->next_sample[i] = now + p->change_ms;
            if (!(m->dirty & BIT(i)) && read_prop(m, i, value) == 0 &&
                text_hash(value) != m->last_hash[i])
                m->dirty |= BIT(i);
        }
    }
}

/* build_report fills m->frame with up to KE_MAPPER_FRAME_PROPS due
 * properties as read now. Returns how many. */
static pb_size_t build_report(ke_mapper *m)
{
    ke_mapper_v1_MapperFrame *f = &m->frame;
    ke_mapper_v1_ReportedUpdate *r = &f->body.reported;
    f->which_body = ke_mapper_v1_MapperFrame_reported_tag;
    memcpy(r->device, m->cfg.device, strlen(m->cfg.device) + 1);
    for (size_t i = 0; i < m->cfg.n_props && r->properties_count < KE_MAPPER_FRAME_PROPS; i++) {
        if (!(m->dirty & BIT(i)))
            continue;
        m->dirty &= ~BIT(i);
        ke_mapper_v1_PropertyValue *pv = &r->properties[r->properties_count];
        if (read_prop(m, i, pv->value) != 0)
            continue;
        memcpy(pv->name, m->cfg.props[i].name, strlen(m->cfg.props[i].name) + 1);
        pv->timestamp_ms = 0; /* the device has no wall clock; the edge stamps it */
        m->last_hash[i] = text_hash(pv->value);
        m->in_flight |= BIT(i);
        r->properties_count++;
    }
    return r->properties_count;
}

/* send_next sends the most urgent waiting frame when the link is free. */
static void send_next(ke_mapper *m, uint32_t now)
{
    if (ke_link_busy(&m->link) || !(m->need_state || m->need_get || m->dirty))
        return;
    ke_mapper_v1_MapperFrame *f = &m->frame;
    memset(f, 0, sizeof(*f));
    m->in_flight = 0;
    if (m->need_state) {
        m->need_state = false;
        f->which_body = ke_mapper_v1_MapperFrame_state_tag;
        memcpy(f->body.state.device, m->cfg.device, strlen(m->cfg.device) + 1);
        f->body.state.state = m->offline ? ke_mapper_v1_DeviceState_DEVICE_STATE_OFFLINE
                                         : ke_mapper_v1_DeviceState_DEVICE_STATE_ONLINE;
    } else if (m->need_get) {
        m->need_get = false;
        f->which_body = ke_mapper_v1_MapperFrame_get_tag;
        memcpy(f->body.get.device, m->cfg.device, strlen(m->cfg.device) + 1);
    } else if (m->dirty) {
        if (build_report(m) == 0)
            return;
        m->stats.reports++;
    } else {
        return;
    }
    m->in_flight_kind = (uint8_t)f->which_body;
    /* -2 (transport failed) leaves the frame outstanding: retransmitted on
     * time; -1 cannot happen for a frame within the bounds checked above */
    if (ke_link_send(&m->link, f, now, NULL) == -1)
        on_done(m, 0, KE_LINK_GAVE_UP, NULL);
}

void ke_mapper_poll(ke_mapper *m, uint32_t now_ms)
{
    for (int i = 0; i < KE_MAPPER_RX_PER_POLL && ke_link_poll(&m->link, now_ms, &m->frame) == 1;
         i++)
        mapper_on_frame(m, &m->frame);
    sample(m, now_ms);
    send_next(m, now_ms);
}
