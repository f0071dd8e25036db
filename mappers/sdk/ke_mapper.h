/*
 * ke_mapper.h — the device SDK: what a mapper author uses.
 *
 * The author writes a property table and two callbacks:
 *
 *     static const ke_prop props[] = {
 *         {"temperature", KE_PROP_FLOAT, KE_PROP_READ, 10000, 500},
 *         {"setpoint",    KE_PROP_INT,   KE_PROP_READWRITE, 60000, 0},
 *     };
 *     static int rd(void *u, const ke_prop *p, char *value, size_t size);
 *     static int wr(void *u, const ke_prop *p, const char *value);
 *
 * and calls ke_mapper_start once and ke_mapper_poll(now_ms) from its main
 * loop. The SDK does the rest over a ke_transport (a UART, or MQTT on a
 * host): at start it sends StateReport{online} and TwinGet (DeviceTwin
 * answers with the desired values), reports every readable property, then
 * reports each one every period_ms and, sampling it every change_ms, when
 * its value changes; it applies DesiredUpdate frames through write()
 * (refusing read-only and unknown properties) and reports the property's
 * value read back afterwards. Frames go one at a time through ke_link
 * (acks, retransmission); what is waiting is kept as flags and a bitmask of
 * properties to report, never as a queue of frames, so nothing grows.
 *
 * Part of the SDK core: no malloc, no OS calls; all state in ke_mapper.
 */
#ifndef KE_MAPPER_H
#define KE_MAPPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ke_link.h"

#define KE_MAPPER_PROPS_MAX 32  /* properties per device (a 32-bit mask) */
#define KE_MAPPER_TEXT_MAX 31   /* bytes of a name or a value (mapper.options) */
#define KE_MAPPER_FRAME_PROPS 4 /* properties per ReportedUpdate (mapper.options) */
#define KE_MAPPER_RX_PER_POLL 8 /* received frames handled per ke_mapper_poll */

/* Property types, as in the device model; values travel as text. */
typedef enum { KE_PROP_INT, KE_PROP_FLOAT, KE_PROP_BOOL, KE_PROP_STRING } ke_prop_type;

/* Access: read() is called for readable properties, write() for writable. */
enum { KE_PROP_READ = 1, KE_PROP_WRITE = 2, KE_PROP_READWRITE = 3 };

/* ke_prop: one row of the author's property table (kept by pointer). */
typedef struct ke_prop {
    const char *name;   /* as in the device model, at most 31 bytes */
    ke_prop_type type;
    uint8_t access;     /* KE_PROP_READ, KE_PROP_WRITE or KE_PROP_READWRITE */
    uint32_t period_ms; /* report every period_ms (0: only at start and on change) */
    uint32_t change_ms; /* sample read() every change_ms, report on change (0: no) */
} ke_prop;

/* ke_read_fn writes prop's current value as text (NUL-terminated, at most
 * size - 1 bytes, size is KE_MAPPER_TEXT_MAX + 1) into value. Returns 0, or
 * negative when the value cannot be read now (nothing is reported). */
typedef int (*ke_read_fn)(void *user, const ke_prop *prop, char *value, size_t size);

/* ke_write_fn sets prop to value (text, NUL-terminated). Returns 0, or
 * negative when the device refuses the value. Either way the SDK reports
 * the value read back afterwards. */
typedef int (*ke_write_fn)(void *user, const ke_prop *prop, const char *value);

typedef struct ke_mapper_config {
    const char *device;         /* the device's name, at most 31 bytes */
    const ke_prop *props;       /* the table (borrowed) */
    size_t n_props;             /* 1..KE_MAPPER_PROPS_MAX */
    ke_read_fn read;            /* required */
    ke_write_fn write;          /* required when a property is writable */
    void *user;                 /* handed to read and write */
    const ke_transport *transport; /* borrowed */
    uint32_t retry_ms;          /* 0: KE_LINK_RETRY_MS */
    uint8_t retries;            /* 0: KE_LINK_RETRIES */
    uint32_t seq_start;         /* first seq (ke_link_init); vary it per boot */
} ke_mapper_config;

typedef struct ke_mapper_stats {
    uint32_t reports;         /* ReportedUpdate frames sent */
    uint32_t writes;          /* write() calls that succeeded */
    uint32_t writes_failed;   /* write() calls that returned an error */
    uint32_t writes_refused;  /* desired values of read-only properties */
    uint32_t unknown;         /* desired values of properties not in the table */
    uint32_t other_device;    /* DesiredUpdate frames naming another device */
    uint32_t reads_failed;    /* read() calls that returned an error */
    uint32_t frames_refused;  /* our frames the peer refused (Refusal) */
    uint32_t frames_lost;     /* our frames given up after the retries */
    uint32_t last_refusal_code; /* Refusal.code of the last refused frame (404: unknown device) */
} ke_mapper_stats;

/* ke_mapper: one device. Fields are private except stats and link.stats. */
typedef struct ke_mapper {
    ke_mapper_config cfg;
    ke_link link;
    bool need_state, need_get;
    bool offline;       /* the state to report (ke_mapper_set_online) */
    uint32_t dirty;     /* properties waiting to be reported */
    uint32_t in_flight; /* properties in the outstanding ReportedUpdate */
    uint8_t in_flight_kind; /* body tag of the outstanding frame (0: none) */
    uint32_t next_report[KE_MAPPER_PROPS_MAX];
    uint32_t next_sample[KE_MAPPER_PROPS_MAX];
    uint32_t last_hash[KE_MAPPER_PROPS_MAX]; /* of the value last reported */
    ke_mapper_v1_MapperFrame frame; /* scratch for one frame in or out */
    ke_mapper_stats stats;
} ke_mapper;

/* ke_mapper_start checks cfg (copied; what it points to is borrowed and
 * must outlive m) and starts m at now_ms: StateReport{online}, TwinGet and
 * a report of every readable property are then due. Returns 0, or -1 on a
 * bad config (no device, a name too long, no read callback, too many or
 * no properties, a writable property without write). */
int ke_mapper_start(ke_mapper *m, const ke_mapper_config *cfg, uint32_t now_ms);

/* ke_mapper_poll does everything due at now_ms: handles received frames
 * (desired values through write()), samples and reports properties, and
 * sends the next waiting frame when the link is free. Call it often (every
 * few ms, or when the transport has input) with a monotonic clock. */
void ke_mapper_poll(ke_mapper *m, uint32_t now_ms);

/* ke_mapper_set_online sets the device's health as the mapper sees it
 * (true at start): when it changes, a StateReport{online|offline} is due
 * and goes before anything else; if it changes again before that frame
 * leaves, only the current state is sent. For host mappers whose device is
 * behind a bus that can fail (a Modbus server gone, a serial line silent).
 * Returns 0, or -1 for a NULL m. */
int ke_mapper_set_online(ke_mapper *m, bool online);

/* ke_mapper_resync makes due again what ke_mapper_start did: a
 * StateReport of the current state, a TwinGet and a report of every
 * readable property. For a mapper whose frames were refused because the
 * peer did not know the device yet (stats.last_refusal_code 404: the
 * Device had not reached the edge): refused frames are never sent again
 * by themselves. Returns 0, or -1 for a NULL m. */
int ke_mapper_resync(ke_mapper *m);

/* ke_mapper_changed marks property index i (in the table) to be reported
 * at the next poll: for authors who know when a value changes (an
 * interrupt, a write from a local button). Returns 0, or -1 for a bad i. */
int ke_mapper_changed(ke_mapper *m, size_t i);

#endif
