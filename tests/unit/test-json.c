/* tests/unit/test-json.c: unit tests for src/base/json.c: the grammar's
 * edges as tables of accepted and refused texts (each refusal with its
 * exact message), the limits, the accessors and re-emitting a tree. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "test.h"

/* Parses text and returns its compact re-emission, or NULL. */
static char *roundtrip(const char *text, size_t len, struct vh_error *err) {
        struct json_value *v = NULL;
        if (json_parse(text, len, NULL, &v, err) < 0)
                return NULL;
        char *out = NULL;
        int r = json_value_format(v, false, &out);
        json_value_free(v);
        return r < 0 ? NULL : out;
}

TEST(json_accepts_valid_documents) {
        static const struct {
                const char *in;
                const char *out; /* compact re-emission */
        } cases[] = {
                /* scalars at the top level (RFC 8259 allows any value) */
                { "null", "null" },
                { "true", "true" },
                { "false", "false" },
                { "0", "0" },
                { "-0", "0" },
                { "123", "123" },
                { "-123", "-123" },
                { "1.5", "1.5" },
                { "-1.5e3", "-1500" },
                { "1E2", "100" },
                { "1e+2", "100" },
                { "1e-2", "0.01" },
                { "0.5", "0.5" },
                { "1e308", "1e+308" },
                { "1e-400", "0" }, /* underflow is a value, overflow is not */
                { "9223372036854775807", "9223372036854775807" },
                { "-9223372036854775808", "-9223372036854775808" },
                { "18446744073709551615", "18446744073709551615" },
                { "18446744073709551616", "1.84467e+19" }, /* past uint64: a double */
                { "-9223372036854775809", "-9.22337e+18" },
                /* strings */
                { "\"\"", "\"\"" },
                { "\"abc\"", "\"abc\"" },
                { "\"\\\"\\\\\\/\"", "\"\\\"\\\\/\"" },
                { "\"\\b\\f\\n\\r\\t\"", "\"\\u0008\\u000c\\n\\r\\t\"" },
                { "\"\\u0041\\u00e9\\u00E9\"", "\"A\xc3\xa9\xc3\xa9\"" },
                { "\"\\u20ac\"", "\"\xe2\x82\xac\"" },
                { "\"\\uD83D\\uDE00\"", "\"\xf0\x9f\x98\x80\"" },       /* surrogate pair */
                { "\"\\udbff\\udfff\"", "\"\xf4\x8f\xbf\xbf\"" },       /* U+10FFFF */
                { "\"\\u001f\"", "\"\\u001f\"" },
                { "\"h\xc3\xa9\"", "\"h\xc3\xa9\"" },                  /* raw UTF-8, 2 bytes */
                { "\"\xe2\x82\xac\"", "\"\xe2\x82\xac\"" },            /* 3 bytes */
                { "\"\xf0\x9f\x98\x80\"", "\"\xf0\x9f\x98\x80\"" },    /* 4 bytes */
                { "\"\xf4\x8f\xbf\xbf\"", "\"\xf4\x8f\xbf\xbf\"" },    /* highest code point */
                { "\"\xef\xbf\xbf\"", "\"\xef\xbf\xbf\"" },            /* U+FFFF */
                { "\"\xed\x9f\xbf\"", "\"\xed\x9f\xbf\"" },            /* U+D7FF, just below surrogates */
                { "\"\x7f\"", "\"\x7f\"" },                            /* DEL needs no escape */
                /* containers */
                { "[]", "[]" },
                { "{}", "{}" },
                { "[[]]", "[[]]" },
                { "[{}]", "[{}]" },
                { "[1,2,3]", "[1,2,3]" },
                { " \t\r\n[ 1 , 2 ]\n", "[1,2]" },
                { "{\"b\":1,\"a\":2}", "{\"b\":1,\"a\":2}" },           /* key order kept */
                { "{\"\":1}", "{\"\":1}" },                             /* empty key */
                { "{ \"a\" : [ true , false , null ] , \"b\" : { \"c\" : \"d\" } }",
                  "{\"a\":[true,false,null],\"b\":{\"c\":\"d\"}}" },
                { "{\"a\":1,\"A\":2}", "{\"a\":1,\"A\":2}" },           /* keys are case-sensitive */
                { "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, \"id\": 2}\r\n",
                  "{\"return\":{\"status\":\"running\",\"singlestep\":false,\"running\":true},\"id\":2}" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vh_error err = {};
                char *out = roundtrip(cases[i].in, strlen(cases[i].in), &err);
                if (!out) {
                        test_fail(__FILE__, __LINE__, "case %zu (%s) refused: %s", i, cases[i].in, err.msg);
                        continue;
                }
                if (!streq(out, cases[i].out))
                        test_fail(__FILE__, __LINE__, "case %zu (%s): got %s, want %s", i, cases[i].in, out,
                                  cases[i].out);
                free(out);
        }
}

struct bad_case {
        const char *in;
        size_t len; /* 0: strlen(in) */
        int code;
        const char *msg;
};

static void check_bad_cases(const struct bad_case *cases, size_t n, const struct json_limits *limits) {
        for (size_t i = 0; i < n; i++) {
                struct json_value *v = NULL;
                struct vh_error err = {};
                size_t len = cases[i].len ? cases[i].len : strlen(cases[i].in);
                int r = json_parse(cases[i].in, len, limits, &v, &err);
                if (r >= 0) {
                        test_fail(__FILE__, __LINE__, "case %zu (%s) parsed but should fail", i, cases[i].in);
                        json_value_free(v);
                        continue;
                }
                CHECK(v == NULL);
                if (r != cases[i].code)
                        test_fail(__FILE__, __LINE__, "case %zu (%s): code %d, want %d (%s)", i, cases[i].in, r,
                                  cases[i].code, err.msg);
                if (err.code != r)
                        test_fail(__FILE__, __LINE__, "case %zu: err.code %d != %d", i, err.code, r);
                if (!streq(err.msg, cases[i].msg))
                        test_fail(__FILE__, __LINE__, "case %zu (%s):\n    got  \"%s\"\n    want \"%s\"", i,
                                  cases[i].in, err.msg, cases[i].msg);
        }
}

TEST(json_refuses_bad_grammar) {
        static const struct bad_case cases[] = {
                { "", 0, -EINVAL, "line 1, column 1: unexpected end of input, expected a value" },
                { "   ", 0, -EINVAL, "line 1, column 4: unexpected end of input, expected a value" },
                { "nul", 0, -EINVAL, "line 1, column 1: invalid literal (expected true, false or null)" },
                { "nulll", 0, -EINVAL, "line 1, column 5: unexpected 'l' after the JSON value" },
                { "True", 0, -EINVAL, "line 1, column 1: expected a value, got 'T'" },
                { "undefined", 0, -EINVAL, "line 1, column 1: expected a value, got 'u'" },
                { "'a'", 0, -EINVAL, "line 1, column 1: expected a value, got '''" },
                { "/* c */ 1", 0, -EINVAL, "line 1, column 1: expected a value, got '/'" },
                { "[1,]", 0, -EINVAL, "line 1, column 4: trailing comma before ']'" },
                { "[,1]", 0, -EINVAL, "line 1, column 2: expected a value, got ','" },
                { "[1 2]", 0, -EINVAL, "line 1, column 4: expected ',' or ']' in array, got '2'" },
                { "[1;2]", 0, -EINVAL, "line 1, column 3: expected ',' or ']' in array, got ';'" },
                { "[", 0, -EINVAL, "line 1, column 2: unexpected end of input, expected a value" },
                { "[1", 0, -EINVAL, "line 1, column 3: expected ',' or ']' in array, got end of input" },
                { "[1,", 0, -EINVAL, "line 1, column 4: unexpected end of input, expected a value" },
                { "]", 0, -EINVAL, "line 1, column 1: expected a value, got ']'" },
                { "[]]", 0, -EINVAL, "line 1, column 3: unexpected ']' after the JSON value" },
                { "{", 0, -EINVAL, "line 1, column 2: expected a '\"' to begin an object key, got end of input" },
                { "{\"a\":1,}", 0, -EINVAL, "line 1, column 8: trailing comma before '}'" },
                { "{\"a\" 1}", 0, -EINVAL, "line 1, column 6: expected ':' after object key, got '1'" },
                { "{\"a\"", 0, -EINVAL, "line 1, column 5: expected ':' after object key, got end of input" },
                { "{\"a\":}", 0, -EINVAL, "line 1, column 6: expected a value, got '}'" },
                { "{\"a\":1 \"b\":2}", 0, -EINVAL, "line 1, column 8: expected ',' or '}' in object, got '\"'" },
                { "{a:1}", 0, -EINVAL, "line 1, column 2: expected a '\"' to begin an object key, got 'a'" },
                { "{1:1}", 0, -EINVAL, "line 1, column 2: expected a '\"' to begin an object key, got '1'" },
                { "{\"a\":1", 0, -EINVAL, "line 1, column 7: expected ',' or '}' in object, got end of input" },
                { "{\"a\"::1}", 0, -EINVAL, "line 1, column 6: expected a value, got ':'" },
                { "{\"a\":1}}", 0, -EINVAL, "line 1, column 8: unexpected '}' after the JSON value" },
                { "{\"a\":1,\"a\":2}", 0, -EINVAL, "line 1, column 1: duplicate key \"a\" in object" },
                { "[{\"x\":{},\"y\":0,\"x\":[]}]", 0, -EINVAL, "line 1, column 2: duplicate key \"x\" in object" },
                /* numbers */
                { "01", 0, -EINVAL, "line 1, column 1: numbers must not have leading zeros" },
                { "-01", 0, -EINVAL, "line 1, column 1: numbers must not have leading zeros" },
                { "-", 0, -EINVAL, "line 1, column 2: expected a digit after '-', got end of input" },
                { "-a", 0, -EINVAL, "line 1, column 2: expected a digit after '-', got 'a'" },
                { "+1", 0, -EINVAL, "line 1, column 1: expected a value, got '+'" },
                { ".5", 0, -EINVAL, "line 1, column 1: expected a value, got '.'" },
                { "1.", 0, -EINVAL, "line 1, column 3: expected a digit after the decimal point, got end of input" },
                { "1.e5", 0, -EINVAL, "line 1, column 3: expected a digit after the decimal point, got 'e'" },
                { "1e", 0, -EINVAL, "line 1, column 3: expected a digit in the exponent, got end of input" },
                { "1e+", 0, -EINVAL, "line 1, column 4: expected a digit in the exponent, got end of input" },
                { "0x10", 0, -EINVAL, "line 1, column 2: unexpected 'x' after the JSON value" },
                { "1 2", 0, -EINVAL, "line 1, column 3: unexpected '2' after the JSON value" },
                { "NaN", 0, -EINVAL, "line 1, column 1: expected a value, got 'N'" },
                { "Infinity", 0, -EINVAL, "line 1, column 1: expected a value, got 'I'" },
                { "-Infinity", 0, -EINVAL, "line 1, column 2: expected a digit after '-', got 'I'" },
                { "1e400", 0, -ERANGE, "line 1, column 1: number 1e400 is out of range" },
                { "[-1e400]", 0, -ERANGE, "line 1, column 2: number -1e400 is out of range" },
                /* strings */
                { "\"abc", 0, -EINVAL, "line 1, column 1: unterminated string (end of input before the closing '\"')" },
                { "\"\\", 0, -EINVAL, "line 1, column 3: unexpected end of input in escape sequence" },
                { "\"\\x\"", 0, -EINVAL, "line 1, column 2: invalid escape '\\' followed by 'x' in string" },
                { "\"\\U0041\"", 0, -EINVAL, "line 1, column 2: invalid escape '\\' followed by 'U' in string" },
                { "\"\\'\"", 0, -EINVAL, "line 1, column 2: invalid escape '\\' followed by ''' in string" },
                { "\"\\u12\"", 0, -EINVAL, "line 1, column 6: \\u escape needs 4 hex digits" },
                { "\"\\u00G0\"", 0, -EINVAL, "line 1, column 6: \\u escape needs 4 hex digits" },
                { "\"\\u00", 0, -EINVAL, "line 1, column 6: unexpected end of input in \\u escape" },
                { "\"\\u0000\"", 0, -EINVAL, "line 1, column 2: \\u0000 (NUL) is not allowed in strings" },
                { "\"a\0b\"", 5, -EINVAL, "line 1, column 3: NUL byte in string" },
                { "\"a\tb\"", 0, -EINVAL,
                  "line 1, column 3: control character 0x09 in string must be escaped (e.g. \\n or \\u0009)" },
                { "\"a\nb\"", 0, -EINVAL,
                  "line 1, column 3: control character 0x0A in string must be escaped (e.g. \\n or \\u000A)" },
                { "\"\\uD800\"", 0, -EINVAL,
                  "line 1, column 2: high surrogate \\uD800 not followed by a \\u low surrogate" },
                { "\"\\uD800x\"", 0, -EINVAL,
                  "line 1, column 2: high surrogate \\uD800 not followed by a \\u low surrogate" },
                { "\"\\uD800\\n\"", 0, -EINVAL,
                  "line 1, column 2: high surrogate \\uD800 not followed by a \\u low surrogate" },
                { "\"\\uD800\\u0041\"", 0, -EINVAL,
                  "line 1, column 8: high surrogate \\uD800 followed by \\u0041, which is not a low surrogate" },
                { "\"\\uD800\\uD800\"", 0, -EINVAL,
                  "line 1, column 8: high surrogate \\uD800 followed by \\uD800, which is not a low surrogate" },
                { "\"\\uDC00\"", 0, -EINVAL, "line 1, column 2: unpaired low surrogate \\uDC00 in string" },
                { "\"\\uDFFF\\uD800\"", 0, -EINVAL, "line 1, column 2: unpaired low surrogate \\uDFFF in string" },
                /* invalid UTF-8 */
                { "\"\x80\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0x80)" },
                { "\"\xbf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xBF)" },
                { "\"\xc0\xaf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xC0)" }, /* overlong '/' */
                { "\"\xc1\xbf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xC1)" },
                { "\"\xe0\x80\xaf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xE0)" }, /* overlong */
                { "\"\xe0\x9f\xbf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xE0)" },
                { "\"\xed\xa0\x80\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xED)" }, /* U+D800 */
                { "\"\xed\xbf\xbf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xED)" }, /* U+DFFF */
                { "\"\xf0\x8f\xbf\xbf\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xF0)" }, /* overlong */
                { "\"\xf4\x90\x80\x80\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xF4)" }, /* > U+10FFFF */
                { "\"\xf5\x80\x80\x80\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xF5)" },
                { "\"\xfe\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xFE)" },
                { "\"\xff\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xFF)" },
                { "\"\xc3\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xC3)" },   /* truncated */
                { "\"\xe2\x82\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xE2)" },
                { "\"\xe2\x82", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xE2)" }, /* at end */
                { "\"\xf0\x9f\x98\"", 0, -EINVAL, "line 1, column 2: invalid UTF-8 in string (byte 0xF0)" },
                { "\"ok\xc3\xa9\xc3(\"", 0, -EINVAL, "line 1, column 6: invalid UTF-8 in string (byte 0xC3)" },
                /* bytes outside strings */
                { "\xef\xbb\xbf" "1", 0, -EINVAL, "line 1, column 1: expected a value, got byte 0xEF" }, /* BOM */
                { "\0", 1, -EINVAL, "line 1, column 1: expected a value, got byte 0x00" },
                { "[1]\0", 4, -EINVAL, "line 1, column 4: unexpected byte 0x00 after the JSON value" },
                { "[1,\x0b" "2]", 0, -EINVAL, "line 1, column 4: expected a value, got byte 0x0B" }, /* VT is not white space */
                { "[1,\xc2\xa0" "2]", 0, -EINVAL, "line 1, column 4: expected a value, got byte 0xC2" }, /* NBSP neither */
                /* positions over several lines; columns count bytes */
                { "{\n  \"a\": 1,\n  \"b\" 2\n}", 0, -EINVAL, "line 3, column 7: expected ':' after object key, got '2'" },
                { "[\r\n1,\r\n\"\xc3\xa9\" x]", 0, -EINVAL, "line 3, column 6: expected ',' or ']' in array, got 'x'" },
        };
        check_bad_cases(cases, ELEMENTSOF(cases), NULL);
}

/* "[[[...]]]" nested n deep. */
static char *nested(size_t n, char open, char close) {
        char *s = malloc(2 * n + 1);
        if (!s)
                abort();
        memset(s, open, n);
        memset(s + n, close, n);
        s[2 * n] = '\0';
        return s;
}

TEST(json_depth_limit) {
        struct json_value *v = NULL;
        struct vh_error err = {};
        char *s = nested(64, '[', ']');
        CHECK_EQ_INT(json_parse(s, strlen(s), NULL, &v, &err), 0);
        v = json_value_free(v);
        free(s);

        s = nested(65, '[', ']');
        CHECK_EQ_INT(json_parse(s, strlen(s), NULL, &v, &err), -E2BIG);
        CHECK_STREQ(err.msg, "line 1, column 65: nesting deeper than 64 levels");
        CHECK(v == NULL);
        free(s);

        /* Objects count as levels too. */
        const char *objs = "{\"a\":{\"b\":{\"c\":1}}}";
        struct json_limits lim = { .max_depth = 2 };
        CHECK_EQ_INT(json_parse(objs, strlen(objs), &lim, &v, &err), -E2BIG);
        CHECK_STREQ(err.msg, "line 1, column 11: nesting deeper than 2 levels");
        lim.max_depth = 3;
        CHECK_EQ_INT(json_parse(objs, strlen(objs), &lim, &v, &err), 0);
        v = json_value_free(v);

        /* A caller asking for more than the hard maximum still gets a
         * bounded recursion: 200000 levels must not overflow the stack. */
        s = nested(200000, '[', ']');
        lim.max_depth = 1000000;
        lim.max_bytes = 1 << 20;
        CHECK_EQ_INT(json_parse(s, strlen(s), &lim, &v, &err), -E2BIG);
        CHECK_STREQ(err.msg, "line 1, column 1001: nesting deeper than 1000 levels");
        free(s);

        /* Unclosed deep nesting ends in an error, not a crash. */
        s = nested(60, '{', '}');
        CHECK_EQ_INT(json_parse(s, strlen(s), NULL, &v, &err), -EINVAL);
        CHECK_STREQ(err.msg, "line 1, column 2: expected a '\"' to begin an object key, got '{'");
        free(s);
}

TEST(json_size_limits) {
        static const struct bad_case cases[] = {
                { "\"12345678901\"", 0, -E2BIG, "line 1, column 1: string longer than 10 bytes" },
                { "{\"12345678901\":1}", 0, -E2BIG, "line 1, column 2: string longer than 10 bytes" },
                /* The limit is on decoded bytes: 6 x U+00E9 is 12 bytes. */
                { "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"", 0, -E2BIG,
                  "line 1, column 1: string longer than 10 bytes" },
                { "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"", 0, -E2BIG,
                  "line 1, column 1: string longer than 10 bytes" },
                { "[1,2,3,4,5]", 0, -E2BIG, "line 1, column 10: array has more than 4 items" },
                { "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5}", 0, -E2BIG,
                  "line 1, column 26: object has more than 4 members" },
                { "[[1,2],[3,4],[5,6]]", 0, -E2BIG, "line 1, column 15: more than 8 values in the document" },
        };
        struct json_limits lim = { .max_string = 10, .max_elements = 4, .max_values = 8 };
        check_bad_cases(cases, ELEMENTSOF(cases), &lim);

        static const struct bad_case too_long[] = {
                { "[\"this text is more than 32 bytes\"]", 0, -E2BIG,
                  "JSON text is 35 bytes, more than the limit of 32" },
        };
        struct json_limits lim_bytes = { .max_bytes = 32 };
        check_bad_cases(too_long, ELEMENTSOF(too_long), &lim_bytes);

        /* At the limits exactly: accepted. */
        static const char *const ok[] = {
                "\"1234567890\"",
                "\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\"",
                "[1,2,3,4]",
                "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}",
                "[[1,2],[3,4],[]]",
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                struct json_value *v = NULL;
                struct vh_error err = {};
                if (json_parse(ok[i], strlen(ok[i]), &lim, &v, &err) < 0)
                        test_fail(__FILE__, __LINE__, "ok case %zu (%s) refused: %s", i, ok[i], err.msg);
                json_value_free(v);
        }
        struct json_value *v = NULL;
        struct vh_error err = {};
        const char *exactly = "   [1,2,3,4]                    "; /* 32 bytes */
        CHECK_EQ_INT(json_parse(exactly, strlen(exactly), &lim_bytes, &v, &err), 0);
        v = json_value_free(v);

        /* A number too long to be worth converting. */
        char big[1100];
        memset(big, '1', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        CHECK_EQ_INT(json_parse(big, strlen(big), NULL, &v, &err), -E2BIG);
        CHECK_STREQ(err.msg, "line 1, column 1: number longer than 1024 characters");
        /* 400 digits: beyond even double's range... */
        big[400] = '\0';
        CHECK_EQ_INT(json_parse(big, strlen(big), NULL, &v, &err), -ERANGE);
        /* ...while 300 digits still fit a double (not an integer). */
        big[300] = '\0';
        CHECK_EQ_INT(json_parse(big, strlen(big), NULL, &v, &err), 0);
        if (v) {
                CHECK(!v->number.is_int && !v->number.is_uint);
                CHECK(v->number.d > 1e299 && v->number.d < 1e301);
        }
        v = json_value_free(v);
}

TEST(json_duplicate_keys_in_large_objects) {
        /* Objects past 16 members take the sorting path. */
        char text[4096];
        size_t n = 0;
        n += (size_t) snprintf(text + n, sizeof(text) - n, "{");
        for (int i = 0; i < 100; i++)
                n += (size_t) snprintf(text + n, sizeof(text) - n, "%s\"k%d\":%d", i ? "," : "", i, i);
        snprintf(text + n, sizeof(text) - n, "}");
        struct json_value *v = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(json_parse(text, strlen(text), NULL, &v, &err), 0);
        CHECK_EQ_INT(v ? v->object.n : 0, 100);
        int64_t i64 = -1;
        CHECK_EQ_INT(json_get_int(json_object_get(v, "k57"), &i64), 0);
        CHECK_EQ_INT(i64, 57);
        v = json_value_free(v);

        /* Now with "k42" twice. */
        text[n] = '\0';
        snprintf(text + n, sizeof(text) - n, ",\"k42\":0}");
        CHECK_EQ_INT(json_parse(text, strlen(text), NULL, &v, &err), -EINVAL);
        CHECK_STREQ(err.msg, "line 1, column 1: duplicate key \"k42\" in object");
        CHECK(v == NULL);

        /* A key with a newline is quoted without it in the message. */
        const char *nl = "{\"a\\nb\":1,\"a\\nb\":2}";
        CHECK_EQ_INT(json_parse(nl, strlen(nl), NULL, &v, &err), -EINVAL);
        CHECK_STREQ(err.msg, "line 1, column 1: duplicate key \"a?b\" in object");
}

TEST(json_accessors) {
        const char *text = "{\"s\":\"hi\",\"i\":-42,\"u\":18446744073709551615,\"d\":2.5,\"b\":true,"
                           "\"n\":null,\"a\":[10,\"x\",{}],\"o\":{\"k\":\"v\"},\"big\":1e19,\"e\":\"\"}";
        struct json_value *v = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(json_parse(text, strlen(text), NULL, &v, &err), 0);
        if (!v)
                return;
        CHECK_EQ_INT(v->type, JSON_OBJECT);
        CHECK_EQ_INT(v->object.n, 10);
        CHECK_STREQ(v->object.members[0].key, "s");
        CHECK_STREQ(v->object.members[9].key, "e");

        const char *s = NULL;
        CHECK_EQ_INT(json_get_string(json_object_get(v, "s"), &s), 0);
        CHECK_STREQ(s, "hi");
        CHECK_EQ_INT(json_get_string(json_object_get(v, "e"), &s), 0);
        CHECK_STREQ(s, "");
        CHECK_EQ_INT(json_get_string(json_object_get(v, "i"), &s), -EINVAL);
        CHECK_EQ_INT(json_get_string(json_object_get(v, "missing"), &s), -ENOENT);
        CHECK_EQ_INT(json_get_string(NULL, &s), -ENOENT);

        int64_t i = 0;
        CHECK_EQ_INT(json_get_int(json_object_get(v, "i"), &i), 0);
        CHECK_EQ_INT(i, -42);
        CHECK_EQ_INT(json_get_int(json_object_get(v, "d"), &i), -ERANGE);
        CHECK_EQ_INT(json_get_int(json_object_get(v, "u"), &i), -ERANGE);
        CHECK_EQ_INT(json_get_int(json_object_get(v, "big"), &i), -ERANGE);
        CHECK_EQ_INT(json_get_int(json_object_get(v, "s"), &i), -EINVAL);
        CHECK_EQ_INT(i, -42); /* untouched on failure */

        uint64_t u = 0;
        CHECK_EQ_INT(json_get_uint(json_object_get(v, "u"), &u), 0);
        CHECK_EQ_U64(u, UINT64_MAX);
        CHECK_EQ_INT(json_get_uint(json_object_get(v, "i"), &u), -ERANGE);
        CHECK_EQ_INT(json_get_uint(json_object_get(v, "b"), &u), -EINVAL);

        double d = 0;
        CHECK_EQ_INT(json_get_double(json_object_get(v, "d"), &d), 0);
        CHECK(d == 2.5);
        CHECK_EQ_INT(json_get_double(json_object_get(v, "i"), &d), 0);
        CHECK(d == -42.0);
        CHECK_EQ_INT(json_get_double(json_object_get(v, "n"), &d), -EINVAL);

        bool b = false;
        CHECK_EQ_INT(json_get_bool(json_object_get(v, "b"), &b), 0);
        CHECK(b);
        CHECK_EQ_INT(json_get_bool(json_object_get(v, "n"), &b), -EINVAL);
        CHECK_EQ_INT(json_object_get(v, "n")->type, JSON_NULL);

        struct json_value *a = json_object_get(v, "a");
        CHECK_EQ_INT(json_array_len(a), 3);
        CHECK_EQ_INT(json_get_int(json_array_at(a, 0), &i), 0);
        CHECK_EQ_INT(i, 10);
        CHECK_EQ_INT(json_get_string(json_array_at(a, 1), &s), 0);
        CHECK_STREQ(s, "x");
        CHECK_EQ_INT(json_array_at(a, 2)->type, JSON_OBJECT);
        CHECK(json_array_at(a, 3) == NULL);
        CHECK_EQ_INT(json_array_len(v), 0);        /* not an array */
        CHECK(json_array_at(v, 0) == NULL);
        CHECK_EQ_INT(json_array_len(NULL), 0);

        CHECK(json_object_get(a, "k") == NULL);    /* not an object */
        CHECK(json_object_get(NULL, "k") == NULL);
        CHECK_EQ_INT(json_get_string(json_object_get(json_object_get(v, "o"), "k"), &s), 0);
        CHECK_STREQ(s, "v");

        /* Steal keeps the rest intact and in order. */
        struct json_value *o = json_object_steal(v, "o");
        CHECK(o && o->type == JSON_OBJECT);
        CHECK(json_object_get(v, "o") == NULL);
        CHECK(json_object_steal(v, "o") == NULL);
        CHECK_EQ_INT(v->object.n, 9);
        CHECK_STREQ(v->object.members[7].key, "big");
        CHECK(json_object_steal(a, "x") == NULL);
        o = json_value_free(o);
        CHECK(o == NULL);

        CHECK_STREQ(json_type_to_string(JSON_OBJECT), "object");
        CHECK_STREQ(json_type_to_string(JSON_BOOL), "boolean");
        CHECK(json_value_free(v) == NULL);
        CHECK(json_value_free(NULL) == NULL);
}

TEST(json_numbers_keep_their_kind) {
        static const struct {
                const char *in;
                bool is_int, is_uint;
                int64_t i;
                double d;
        } cases[] = {
                { "0", true, true, 0, 0 },
                { "-0", true, true, 0, 0 },
                { "7", true, true, 7, 7 },
                { "-7", true, false, -7, -7 },
                { "7.0", false, false, 0, 7 },     /* a fraction makes it a double */
                { "7e0", false, false, 0, 7 },
                { "9223372036854775808", false, true, 0, 9223372036854775808.0 },
                { "-9223372036854775808", true, false, INT64_MIN, -9223372036854775808.0 },
                { "0.1", false, false, 0, 0.1 },
                { "1.7976931348623157e308", false, false, 0, 1.7976931348623157e308 },
                { "5e-324", false, false, 0, 5e-324 },
        };
        for (size_t k = 0; k < ELEMENTSOF(cases); k++) {
                struct json_value *v = NULL;
                struct vh_error err = {};
                if (json_parse(cases[k].in, strlen(cases[k].in), NULL, &v, &err) < 0) {
                        test_fail(__FILE__, __LINE__, "case %zu (%s): %s", k, cases[k].in, err.msg);
                        continue;
                }
                if (v->number.is_int != cases[k].is_int || v->number.is_uint != cases[k].is_uint ||
                    (cases[k].is_int && v->number.i != cases[k].i) || v->number.d != cases[k].d)
                        test_fail(__FILE__, __LINE__, "case %zu (%s): int %d/%" PRId64 " uint %d double %.17g", k,
                                  cases[k].in, v->number.is_int, v->number.i, v->number.is_uint, v->number.d);
                json_value_free(v);
        }
}

TEST(json_strings_decode) {
        /* Escapes decode to the exact bytes, and len counts them. */
        const char *text = "[\"a\\u00e9\\uD83D\\uDE00\\n\", \"\\/\\\"\"]";
        struct json_value *v = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(json_parse(text, strlen(text), NULL, &v, &err), 0);
        if (!v)
                return;
        struct json_value *s0 = json_array_at(v, 0), *s1 = json_array_at(v, 1);
        CHECK_STREQ(s0->string.s, "a\xc3\xa9\xf0\x9f\x98\x80\n");
        CHECK_EQ_INT(s0->string.len, 8);
        CHECK_STREQ(s1->string.s, "/\"");
        CHECK_EQ_INT(s1->string.len, 2);
        json_value_free(v);

        /* Input need not be NUL-terminated: only 'len' bytes are read. */
        char buf[8] = { '"', 'o', 'k', '"', 'X', 'X', 'X', 'X' };
        CHECK_EQ_INT(json_parse(buf, 4, NULL, &v, &err), 0);
        CHECK_STREQ(v ? v->string.s : NULL, "ok");
        v = json_value_free(v);
}

TEST(json_write_roundtrip) {
        const char *text = "{\"name\":\"vm\\u00e9\",\"cpus\":2,\"mem\":18446744073709551615,\"neg\":-5,"
                           "\"ratio\":0.25,\"on\":false,\"nothing\":null,\"tags\":[\"a\",\"b\\\"c\",[]],\"sub\":{}}";
        struct vh_error err = {};
        char *once = roundtrip(text, strlen(text), &err);
        CHECK(once != NULL);
        if (!once)
                return;
        CHECK_STREQ(once, "{\"name\":\"vm\xc3\xa9\",\"cpus\":2,\"mem\":18446744073709551615,\"neg\":-5,"
                          "\"ratio\":0.25,\"on\":false,\"nothing\":null,\"tags\":[\"a\",\"b\\\"c\",[]],\"sub\":{}}");
        char *twice = roundtrip(once, strlen(once), &err);
        CHECK_STREQ(twice, once);
        free(twice);
        free(once);

        /* Pretty output through the writer, and into an open writer. */
        struct json_value *v = NULL;
        const char *small = "{\"a\":[1,true]}";
        CHECK_EQ_INT(json_parse(small, strlen(small), NULL, &v, &err), 0);
        char *pretty = NULL;
        CHECK_EQ_INT(json_value_format(v, true, &pretty), 0);
        CHECK_STREQ(pretty, "{\n  \"a\": [\n    1,\n    true\n  ]\n}\n");
        free(pretty);

        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "execute", "x");
        json_key(&w, "arguments");
        CHECK_EQ_INT(json_value_write(&w, v), 0);
        json_object_end(&w);
        int r = 0;
        char *out = json_writer_finish(&w, &r);
        CHECK_STREQ(out, "{\"execute\":\"x\",\"arguments\":{\"a\":[1,true]}}");
        free(out);
        json_value_free(v);

        /* The writer nests at most 63 levels: a deeper (valid) tree fails
         * cleanly with -E2BIG rather than writing broken text. */
        char *s = nested(63, '[', ']');
        CHECK_EQ_INT(json_parse(s, strlen(s), NULL, &v, &err), 0);
        out = NULL;
        CHECK_EQ_INT(json_value_format(v, false, &out), 0);
        CHECK_STREQ(out, s);
        free(out);
        v = json_value_free(v);
        free(s);
        s = nested(64, '[', ']');
        CHECK_EQ_INT(json_parse(s, strlen(s), NULL, &v, &err), 0);
        out = NULL;
        CHECK_EQ_INT(json_value_format(v, false, &out), -E2BIG);
        CHECK(out == NULL);
        json_value_free(v);
        free(s);
}

TEST(json_error_is_null_safe) {
        /* No vh_error: still the right code, nothing written anywhere. */
        struct json_value *v = NULL;
        CHECK_EQ_INT(json_parse("[1,", 3, NULL, &v, NULL), -EINVAL);
        CHECK_EQ_INT(json_parse("1e999", 5, NULL, &v, NULL), -ERANGE);
        CHECK(v == NULL);
        CHECK_EQ_INT(json_parse(NULL, 0, NULL, &v, NULL), -EINVAL);
        CHECK_EQ_INT(json_parse(NULL, 5, NULL, &v, NULL), -EINVAL);
}
