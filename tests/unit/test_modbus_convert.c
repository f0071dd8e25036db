/*
 * test_modbus_convert.c — ke-modbus-mapper's rules (mappers/modbus):
 * registers ↔ text (scale, byte and register swaps, signed integers,
 * float32/float64 over 2/4 registers, booleans from coils, strings), the
 * visitor checks, the connection URL, and the Device/DeviceModel JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "ke_modbus_config.h"
#include "ke_modbus_convert.h"

#include <string.h>

static ke_modbus_visitor vis(ke_modbus_register reg, uint16_t limit, double scale, bool swap,
                             bool rswap)
{
    return (ke_modbus_visitor){reg, 0, limit, scale, swap, rswap};
}

static const char *dec(ke_modbus_visitor v, ke_prop_type t, const uint16_t *w, const uint8_t *b)
{
    static char out[KE_MAPPER_TEXT_MAX + 1];
    if (ke_modbus_decode(&v, t, w, b, out, sizeof(out)) != 0)
        return "<error>";
    return out;
}

static void test_scale_applies_to_an_input_register(void **state)
{
    (void)state;
    uint16_t w[1] = {215};
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 1, 0.1, 0, 0), KE_PROP_FLOAT, w, NULL), "21.5");
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 1, 0, 0, 0), KE_PROP_INT, w, NULL), "215");
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 1, 10, 0, 0), KE_PROP_INT, w, NULL), "2150");
    w[0] = 0xFFFF; /* signed: -1 */
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 1, 0.5, 0, 0), KE_PROP_FLOAT, w, NULL), "-0.5");
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 1, 1, 0, 0), KE_PROP_INT, w, NULL), "-1");
}

static void test_int32_and_int64_span_registers_most_significant_first(void **state)
{
    (void)state;
    uint16_t w2[2] = {0x0001, 0x0002}; /* 65538 */
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 2, 1, 0, 0), KE_PROP_INT, w2, NULL), "65538");
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 2, 1, 0, 1), KE_PROP_INT, w2, NULL), "131073");
    uint16_t w4[4] = {0x8000, 0, 0, 0};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 4, 1, 0, 0), KE_PROP_INT, w4, NULL),
                        "-9223372036854775808");
}

static void test_byte_swap_and_register_swap(void **state)
{
    (void)state;
    uint16_t w[1] = {0x3412};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 1, 1, 1, 0), KE_PROP_INT, w, NULL), "4660");
    /* 0x12345678 stored as CDAB (register swap) and as BADC (byte swap) */
    uint16_t cdab[2] = {0x5678, 0x1234}, badc[2] = {0x3412, 0x7856}, dcba[2] = {0x7856, 0x3412};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 2, 1, 0, 1), KE_PROP_INT, cdab, NULL),
                        "305419896");
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 2, 1, 1, 0), KE_PROP_INT, badc, NULL),
                        "305419896");
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 2, 1, 1, 1), KE_PROP_INT, dcba, NULL),
                        "305419896");
}

static void test_float32_over_two_registers(void **state)
{
    (void)state;
    uint16_t w[2] = {0x41BC, 0x0000}; /* 23.5f */
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 2, 1, 0, 0), KE_PROP_FLOAT, w, NULL), "23.5");
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 2, 2, 0, 0), KE_PROP_FLOAT, w, NULL), "47");
    uint16_t sw[2] = {0x0000, 0x41BC};
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 2, 1, 0, 1), KE_PROP_FLOAT, sw, NULL), "23.5");
    uint16_t nan[2] = {0x7FC0, 0x0000};
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 2, 1, 0, 0), KE_PROP_FLOAT, nan, NULL),
                        "<error>");
    uint16_t d[4] = {0x4037, 0x8000, 0, 0}; /* 23.5 as float64 */
    assert_string_equal(dec(vis(KE_MODBUS_INPUT, 4, 1, 0, 0), KE_PROP_FLOAT, d, NULL), "23.5");
}

static void test_booleans_from_coils_and_registers(void **state)
{
    (void)state;
    uint8_t on[1] = {1}, off[1] = {0};
    assert_string_equal(dec(vis(KE_MODBUS_COIL, 1, 1, 0, 0), KE_PROP_BOOL, NULL, on), "true");
    assert_string_equal(dec(vis(KE_MODBUS_DISCRETE_INPUT, 1, 1, 0, 0), KE_PROP_BOOL, NULL, off),
                        "false");
    uint16_t w[1] = {7};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 1, 1, 0, 0), KE_PROP_BOOL, w, NULL), "true");
}

static void test_strings_two_bytes_a_register(void **state)
{
    (void)state;
    uint16_t w[3] = {0x4142, 0x4300, 0x4444};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 3, 1, 0, 0), KE_PROP_STRING, w, NULL), "ABC");
    uint16_t bad[1] = {0x4101};
    assert_string_equal(dec(vis(KE_MODBUS_HOLDING, 1, 1, 0, 0), KE_PROP_STRING, bad, NULL),
                        "<error>");
    uint16_t out[3];
    ke_modbus_visitor v = vis(KE_MODBUS_HOLDING, 3, 1, 0, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_STRING, "hey", out, NULL), 0);
    assert_int_equal(out[0], 0x6865);
    assert_int_equal(out[1], 0x7900);
    assert_int_equal(out[2], 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_STRING, "toolong", out, NULL), -1);
}

/* every value encoded and decoded again comes back */
static void test_encode_then_decode_round_trips(void **state)
{
    (void)state;
    struct {
        ke_modbus_visitor v;
        ke_prop_type t;
        const char *text;
    } cases[] = {
        {vis(KE_MODBUS_HOLDING, 1, 1, 0, 0), KE_PROP_INT, "42"},
        {vis(KE_MODBUS_HOLDING, 1, 1, 1, 0), KE_PROP_INT, "-1234"},
        {vis(KE_MODBUS_HOLDING, 2, 1, 1, 1), KE_PROP_INT, "-2000000000"},
        {vis(KE_MODBUS_HOLDING, 4, 1, 0, 1), KE_PROP_INT, "123456789012"},
        {vis(KE_MODBUS_HOLDING, 1, 0.1, 0, 0), KE_PROP_FLOAT, "21.5"},
        {vis(KE_MODBUS_HOLDING, 2, 1, 0, 1), KE_PROP_FLOAT, "-3.25"},
        {vis(KE_MODBUS_HOLDING, 4, 1, 1, 1), KE_PROP_FLOAT, "0.1"},
        {vis(KE_MODBUS_HOLDING, 1, 1, 0, 0), KE_PROP_BOOL, "true"},
        {vis(KE_MODBUS_COIL, 1, 1, 0, 0), KE_PROP_BOOL, "false"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint16_t w[KE_MODBUS_REGS_MAX] = {0};
        uint8_t b[KE_MODBUS_BITS_MAX] = {0};
        assert_int_equal(ke_modbus_encode(&cases[i].v, cases[i].t, cases[i].text, w, b), 0);
        assert_string_equal(dec(cases[i].v, cases[i].t, w, b), cases[i].text);
    }
    /* a scaled write divides: 21.5 with scale 0.1 is the register 215 */
    uint16_t w[1];
    ke_modbus_visitor v = vis(KE_MODBUS_HOLDING, 1, 0.1, 0, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_FLOAT, "21.5", w, NULL), 0);
    assert_int_equal(w[0], 215);
    v = vis(KE_MODBUS_HOLDING, 1, 1, 1, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_INT, "4660", w, NULL), 0);
    assert_int_equal(w[0], 0x3412);
}

static void test_values_that_do_not_fit_are_refused(void **state)
{
    (void)state;
    uint16_t w[4];
    uint8_t b[1];
    ke_modbus_visitor v = vis(KE_MODBUS_HOLDING, 1, 1, 0, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_INT, "32768", w, NULL), -1);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_INT, "-32769", w, NULL), -1);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_INT, "12abc", w, NULL), -1);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_INT, "", w, NULL), -1);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_BOOL, "maybe", w, NULL), -1);
    v = vis(KE_MODBUS_HOLDING, 2, 1, 0, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_FLOAT, "1e300", w, NULL), -1); /* float32 */
    v = vis(KE_MODBUS_COIL, 1, 1, 0, 0);
    assert_int_equal(ke_modbus_encode(&v, KE_PROP_BOOL, "2", NULL, b), -1);
}

static void test_visitors_that_cannot_carry_the_type_are_refused(void **state)
{
    (void)state;
    const char *why;
    ke_modbus_visitor v = vis(KE_MODBUS_COIL, 1, 1, 0, 0);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_INT, &why), -1);
    assert_non_null(why);
    v = vis(KE_MODBUS_HOLDING, 3, 1, 0, 0);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_INT, &why), -1);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_FLOAT, &why), -1);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_STRING, &why), 0);
    v = vis(KE_MODBUS_HOLDING, 0, 1, 0, 0);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_INT, &why), -1);
    v = vis(KE_MODBUS_HOLDING, 32, 1, 0, 0);
    assert_int_equal(ke_modbus_visitor_check(&v, KE_PROP_STRING, &why), -1);
    assert_false(ke_modbus_register_writable(KE_MODBUS_INPUT));
    assert_false(ke_modbus_register_writable(KE_MODBUS_DISCRETE_INPUT));
    assert_true(ke_modbus_register_writable(KE_MODBUS_COIL));
    ke_modbus_register r;
    assert_int_equal(ke_modbus_register_parse("HoldingRegister", &r), 0);
    assert_int_equal(r, KE_MODBUS_HOLDING);
    assert_int_equal(ke_modbus_register_parse("holding", &r), -1);
}

static void test_connection_urls(void **state)
{
    (void)state;
    char err[KE_MODBUS_ERR_MAX];
    ke_modbus_link l = {.slave = 3};
    assert_int_equal(ke_modbus_url_parse("tcp://10.0.0.5:1502", &l, err), 0);
    assert_int_equal(l.mode, KE_MODBUS_TCP);
    assert_string_equal(l.host, "10.0.0.5");
    assert_int_equal(l.port, 1502);
    assert_int_equal(l.slave, 3);
    assert_int_equal(ke_modbus_url_parse("tcp://plc.local", &l, err), 0);
    assert_int_equal(l.port, 502);
    assert_int_equal(
        ke_modbus_url_parse("rtu:///dev/ttyUSB0?baud=19200&parity=E&data=7&stop=2&slave=9", &l,
                            err),
        0);
    assert_int_equal(l.mode, KE_MODBUS_RTU);
    assert_string_equal(l.host, "/dev/ttyUSB0");
    assert_int_equal(l.baud, 19200);
    assert_int_equal(l.parity, 'E');
    assert_int_equal(l.data_bits, 7);
    assert_int_equal(l.stop_bits, 2);
    assert_int_equal(l.slave, 9);
    assert_int_equal(ke_modbus_url_parse("rtu:///dev/ttyS0", &l, err), 0);
    assert_int_equal(l.baud, 9600);
    assert_int_equal(l.parity, 'N');
    assert_int_equal(ke_modbus_url_parse("tcp://h:0", &l, err), -1);
    assert_int_equal(ke_modbus_url_parse("rtu:///dev/x?parity=X", &l, err), -1);
    assert_int_equal(ke_modbus_url_parse("rtu:///dev/x?speed=1", &l, err), -1);
    assert_int_equal(ke_modbus_url_parse("udp://h:1", &l, err), -1);
    assert_true(strlen(err) > 0);
}

static const char *DEVICE_JSON =
    "{\"apiVersion\":\"devices.kubeedge.io/v1beta1\",\"kind\":\"Device\","
    "\"metadata\":{\"name\":\"plc-1\"},\"spec\":{\"deviceModelRef\":{\"name\":\"plc\"},"
    "\"nodeName\":\"edge-1\",\"protocol\":{\"protocolName\":\"modbus\",\"configData\":"
    "{\"url\":\"tcp://127.0.0.1:1502\",\"slaveID\":2}},\"properties\":["
    "{\"name\":\"temperature\",\"collectCycle\":500000000,\"reportCycle\":10000000000,"
    "\"visitors\":{\"protocolName\":\"modbus\",\"configData\":{\"register\":\"InputRegister\","
    "\"offset\":0,\"limit\":1,\"scale\":0.1}}},"
    "{\"name\":\"setpoint\",\"visitors\":{\"protocolName\":\"modbus\",\"configData\":"
    "{\"register\":\"HoldingRegister\",\"offset\":\"1\",\"limit\":1,\"isSwap\":true}}},"
    "{\"name\":\"note\"}]}}";

static void test_device_json_maps_to_points(void **state)
{
    (void)state;
    static ke_modbus_config c;
    char err[KE_MODBUS_ERR_MAX];
    const char *model = "{\"spec\":{\"properties\":["
                        "{\"name\":\"temperature\",\"type\":\"FLOAT\",\"accessMode\":\"ReadOnly\"},"
                        "{\"name\":\"setpoint\",\"type\":\"INT\",\"accessMode\":\"ReadWrite\"}]}}";
    if (ke_modbus_config_parse(DEVICE_JSON, model, &c, err) != 0)
        fail_msg("%s", err);
    assert_string_equal(c.device, "plc-1");
    assert_int_equal(c.link.mode, KE_MODBUS_TCP);
    assert_int_equal(c.link.port, 1502);
    assert_int_equal(c.link.slave, 2);
    assert_int_equal(c.n_points, 2); /* "note" has no modbus visitor */
    assert_string_equal(c.points[0].name, "temperature");
    assert_int_equal(c.points[0].type, KE_PROP_FLOAT);
    assert_int_equal(c.points[0].access, KE_PROP_READ);
    assert_int_equal(c.points[0].collect_ms, 500);
    assert_int_equal(c.points[0].report_ms, 10000);
    assert_true(c.points[0].visitor.scale == 0.1);
    assert_int_equal(c.points[1].visitor.offset, 1);
    assert_true(c.points[1].visitor.swap);
    assert_int_equal(c.points[1].type, KE_PROP_INT);
    assert_int_equal(c.points[1].access, KE_PROP_READWRITE);
    assert_int_equal(c.points[1].collect_ms, KE_MODBUS_COLLECT_DEFAULT_MS);
    assert_int_equal(c.points[1].report_ms, 0);

    /* without a model: the type follows the register and the scale */
    assert_int_equal(ke_modbus_config_parse(DEVICE_JSON, NULL, &c, err), 0);
    assert_int_equal(c.points[0].type, KE_PROP_FLOAT);
    assert_int_equal(c.points[1].type, KE_PROP_INT);

    /* a model property the registers cannot carry, a bad register, no protocol */
    const char *bad_model = "{\"spec\":{\"properties\":["
                            "{\"name\":\"temperature\",\"type\":\"BYTES\"},"
                            "{\"name\":\"setpoint\",\"type\":\"INT\"}]}}";
    assert_int_equal(ke_modbus_config_parse(DEVICE_JSON, bad_model, &c, err), -1);
    assert_non_null(strstr(err, "temperature"));
    assert_int_equal(ke_modbus_config_parse("{\"metadata\":{\"name\":\"x\"},\"spec\":{}}", NULL,
                                            &c, err),
                     -1);
    assert_int_equal(
        ke_modbus_config_parse(
            "{\"metadata\":{\"name\":\"x\"},\"spec\":{\"protocol\":{\"protocolName\":\"modbus\","
            "\"configData\":{\"ip\":\"10.1.1.1\",\"port\":502}},\"properties\":[{\"name\":\"a\","
            "\"visitors\":{\"configData\":{\"register\":\"Holding\"}}}]}}",
            NULL, &c, err),
        -1);
    assert_non_null(strstr(err, "register"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scale_applies_to_an_input_register),
        cmocka_unit_test(test_int32_and_int64_span_registers_most_significant_first),
        cmocka_unit_test(test_byte_swap_and_register_swap),
        cmocka_unit_test(test_float32_over_two_registers),
        cmocka_unit_test(test_booleans_from_coils_and_registers),
        cmocka_unit_test(test_strings_two_bytes_a_register),
        cmocka_unit_test(test_encode_then_decode_round_trips),
        cmocka_unit_test(test_values_that_do_not_fit_are_refused),
        cmocka_unit_test(test_visitors_that_cannot_carry_the_type_are_refused),
        cmocka_unit_test(test_connection_urls),
        cmocka_unit_test(test_device_json_maps_to_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
