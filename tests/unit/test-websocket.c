/* tests/unit/test-websocket.c: the WebSocket framing (src/web/websocket.c):
 * the handshake's accept value (the RFC's own example), tables of client
 * frames with what the reader must make of them or the close code it must
 * give, fragments, the server's frame heads and UTF-8 checks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "web/web-console.h"
#include "web/web-jobs.h"
#include "web/websocket.h"

TEST(ws_accept_key_table) {
        static const struct {
                const char *key;
                int result;
                const char *accept;
        } cases[] = {
                /* RFC 6455 section 1.3. */
                { "dGhlIHNhbXBsZSBub25jZQ==", 0, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" },
                { "dGhlIHNhbXBsZSBub25jZQ=", -EINVAL, NULL },
                { "dGhlIHNhbXBsZSBub25jZQ===", -EINVAL, NULL },
                { "dGhlIHNhbXBsZSBub25j!Q==", -EINVAL, NULL },
                { "", -EINVAL, NULL },
                { NULL, -EINVAL, NULL },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char out[WS_ACCEPT_LEN + 1] = "";
                CHECK_EQ_INT(ws_accept_key(cases[i].key, out), cases[i].result);
                if (cases[i].accept)
                        CHECK_STREQ(out, cases[i].accept);
        }
}

/* A client frame: head bytes as given, then the payload masked with
 * 37 fa 21 3d (the RFC's example mask). */
static size_t client_frame(uint8_t *buf, uint8_t b0, uint64_t len, const uint8_t *payload, bool mask) {
        static const uint8_t m[4] = { 0x37, 0xfa, 0x21, 0x3d };
        size_t n = ws_frame_head(buf, false, 0, len);
        buf[0] = b0;
        if (mask) {
                buf[1] |= 0x80;
                memcpy(buf + n, m, 4);
                n += 4;
        }
        if (payload) {
                memcpy(buf + n, payload, (size_t) len);
                if (mask)
                        ws_unmask(buf + n, (size_t) len, m, 0);
                n += (size_t) len;
        }
        return n;
}

TEST(ws_reader_frames_table) {
        static const struct {
                const char *what;
                uint8_t b0;
                const char *payload;
                size_t len;       /* payload length announced (and sent when 'payload') */
                bool mask;
                int result;       /* of ws_reader_next */
                uint16_t close;   /* when result < 0 */
                int kind;         /* when result 1 */
        } cases[] = {
                { "text Hello", 0x81, "Hello", 5, true, 1, 0, WS_EVENT_MESSAGE },
                { "binary", 0x82, "\x01\x02\x03", 3, true, 1, 0, WS_EVENT_MESSAGE },
                { "empty binary", 0x82, "", 0, true, 1, 0, WS_EVENT_MESSAGE },
                { "ping", 0x89, "Hello", 5, true, 1, 0, WS_EVENT_PING },
                { "pong", 0x8a, "", 0, true, 1, 0, WS_EVENT_PONG },
                { "close no code", 0x88, "", 0, true, 1, 0, WS_EVENT_CLOSE },
                { "close 1000", 0x88, "\x03\xe8" "bye", 5, true, 1, 0, WS_EVENT_CLOSE },
                { "unmasked", 0x81, "Hello", 5, false, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "rsv1", 0xc1, "Hello", 5, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "opcode 3", 0x83, "x", 1, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "opcode 0xb", 0x8b, "x", 1, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "fragmented ping", 0x09, "x", 1, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "ping of 126", 0x89, NULL, 126, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "continuation first", 0x80, "x", 1, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "close of 1 byte", 0x88, "\x03", 1, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "close 1005 sent", 0x88, "\x03\xed", 2, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "close 999", 0x88, "\x03\xe7", 2, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "close bad reason", 0x88, "\x03\xe8\xff", 3, true, -EPROTO, WS_CLOSE_PROTOCOL, 0 },
                { "text not UTF-8", 0x81, "\xc0\xaf", 2, true, -EILSEQ, WS_CLOSE_BAD_DATA, 0 },
                { "text surrogate", 0x81, "\xed\xa0\x80", 3, true, -EILSEQ, WS_CLOSE_BAD_DATA, 0 },
                { "frame over the limit", 0x82, NULL, WS_MAX_FRAME + 1, true, -EMSGSIZE, WS_CLOSE_TOO_BIG, 0 },
                { "frame of 2^40", 0x82, NULL, 1ull << 40, true, -EMSGSIZE, WS_CLOSE_TOO_BIG, 0 },
                { "frame at the limit, head only", 0x82, NULL, WS_MAX_FRAME, true, 0, 0, 0 },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint8_t buf[64];
                size_t n = client_frame(buf, cases[i].b0, cases[i].len, (const uint8_t *) cases[i].payload,
                                        cases[i].mask);
                struct ws_reader r = {};
                struct ws_event ev = {};
                size_t used = 99;
                uint16_t close = 0;
                int k = ws_reader_next(&r, buf, n, &used, &ev, &close);
                if (k != cases[i].result)
                        test_fail(__FILE__, __LINE__, "%s: result %d, expected %d", cases[i].what, k, cases[i].result);
                if (k < 0 && close != cases[i].close)
                        test_fail(__FILE__, __LINE__, "%s: close %u, expected %u", cases[i].what, close,
                                  cases[i].close);
                if (k == 1) {
                        CHECK_EQ_INT((int) ev.kind, cases[i].kind);
                        CHECK_EQ_U64(used, n);
                        if (cases[i].payload && ev.kind != WS_EVENT_CLOSE) {
                                CHECK_EQ_U64(ev.len, cases[i].len);
                                CHECK(memcmp(ev.data, cases[i].payload, cases[i].len) == 0);
                        }
                }
                if (k == 0)
                        CHECK_EQ_U64(used, 0);
                ws_reader_done(&r);
        }
}

TEST(ws_reader_close_code) {
        uint8_t buf[32];
        size_t n = client_frame(buf, 0x88, 4, (const uint8_t *) "\x0f\xa0hi", true);
        struct ws_reader r = {};
        struct ws_event ev;
        size_t used;
        uint16_t close;
        CHECK_EQ_INT(ws_reader_next(&r, buf, n, &used, &ev, &close), 1);
        CHECK_EQ_INT(ev.close_code, 4000);
        ws_reader_done(&r);
}

/* Every prefix of a frame is "need more", and never consumes. */
TEST(ws_reader_prefixes) {
        uint8_t buf[400];
        uint8_t payload[300];
        memset(payload, 'a', sizeof(payload));
        size_t n = client_frame(buf, 0x81, sizeof(payload), payload, true);
        for (size_t cut = 0; cut < n; cut++) {
                uint8_t copy[400];
                memcpy(copy, buf, n);
                struct ws_reader r = {};
                struct ws_event ev;
                size_t used = 1;
                uint16_t close = 0;
                CHECK_EQ_INT(ws_reader_next(&r, copy, cut, &used, &ev, &close), 0);
                CHECK_EQ_U64(used, 0);
                ws_reader_done(&r);
        }
}

/* The RFC's fragmented "Hel" "lo" with a ping between the fragments; then
 * a new message inside a fragmented one is refused, and a message past
 * WS_MAX_MESSAGE from fragments within the frame limit closes with 1009. */
TEST(ws_reader_fragments) {
        uint8_t buf[64];
        size_t n = client_frame(buf, 0x01, 3, (const uint8_t *) "Hel", true);
        n += client_frame(buf + n, 0x89, 1, (const uint8_t *) "p", true);
        n += client_frame(buf + n, 0x80, 2, (const uint8_t *) "lo", true);
        struct ws_reader r = {};
        struct ws_event ev;
        size_t used, off = 0;
        uint16_t close;
        CHECK_EQ_INT(ws_reader_next(&r, buf, n, &used, &ev, &close), 0);
        CHECK(used > 0);
        off += used;
        CHECK_EQ_INT(ws_reader_next(&r, buf + off, n - off, &used, &ev, &close), 1);
        CHECK_EQ_INT((int) ev.kind, WS_EVENT_PING);
        off += used;
        CHECK_EQ_INT(ws_reader_next(&r, buf + off, n - off, &used, &ev, &close), 1);
        CHECK_EQ_INT((int) ev.kind, WS_EVENT_MESSAGE);
        CHECK_EQ_INT(ev.opcode, WS_OP_TEXT);
        CHECK(ev.len == 5 && memcmp(ev.data, "Hello", 5) == 0);
        CHECK_EQ_U64(off + used, n);

        n = client_frame(buf, 0x01, 3, (const uint8_t *) "Hel", true);
        n += client_frame(buf + n, 0x81, 2, (const uint8_t *) "lo", true);
        CHECK_EQ_INT(ws_reader_next(&r, buf, n, &used, &ev, &close), 0);
        CHECK_EQ_INT(ws_reader_next(&r, buf + used, n - used, &used, &ev, &close), -EPROTO);
        CHECK_EQ_INT(close, WS_CLOSE_PROTOCOL);
        ws_reader_done(&r);

        size_t big = WS_MAX_FRAME / 3 + 1; /* three of them pass the message limit */
        uint8_t *frag = calloc(1, big + WS_MAX_HEAD);
        CHECK(frag != NULL);
        if (!frag)
                return;
        struct ws_reader r2 = {};
        size_t fn = client_frame(frag, 0x02, big, NULL, true) + big;
        CHECK_EQ_INT(ws_reader_next(&r2, frag, fn, &used, &ev, &close), 0);
        CHECK_EQ_U64(used, fn);
        fn = client_frame(frag, 0x00, big, NULL, true) + big;
        CHECK_EQ_INT(ws_reader_next(&r2, frag, fn, &used, &ev, &close), 0);
        CHECK_EQ_U64(used, fn);
        fn = client_frame(frag, 0x80, big, NULL, true) + big;
        CHECK_EQ_INT(ws_reader_next(&r2, frag, fn, &used, &ev, &close), -EMSGSIZE);
        CHECK_EQ_INT(close, WS_CLOSE_TOO_BIG);
        ws_reader_done(&r2);
        free(frag);
}

TEST(ws_frame_head_lengths) {
        static const struct {
                uint64_t len;
                size_t head;
                uint8_t b1;
        } cases[] = {
                { 0, 2, 0 }, { 125, 2, 125 }, { 126, 4, 126 }, { 65535, 4, 126 }, { 65536, 10, 127 },
                { 1ull << 32, 10, 127 },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint8_t h[WS_MAX_HEAD];
                CHECK_EQ_U64(ws_frame_head(h, true, WS_OP_BINARY, cases[i].len), cases[i].head);
                CHECK_EQ_INT(h[0], 0x82);
                CHECK_EQ_INT(h[1], cases[i].b1);
                /* The server's head parses back to the same length, unmasked. */
                struct ws_frame f;
                uint16_t close;
                CHECK_EQ_INT(ws_frame_parse(h, cases[i].head, false, UINT64_MAX >> 1, &f, &close), 0);
                CHECK_EQ_U64(f.payload_len, cases[i].len);
                CHECK(!f.masked);
        }
}

TEST(ws_utf8_table) {
        static const struct {
                const char *s;
                bool ok;
        } cases[] = {
                { "", true }, { "abc", true }, { "\xc3\xa9", true }, { "\xe2\x82\xac", true },
                { "\xf0\x9f\x98\x80", true }, { "\xf4\x8f\xbf\xbf", true },
                { "\xc3", false }, { "\xe2\x82", false }, { "\xc0\x80", false }, { "\xe0\x80\x80", false },
                { "\xf4\x90\x80\x80", false }, { "\xed\xbf\xbf", false }, { "\xff", false }, { "\x80", false },
                { "\xf8\x88\x80\x80\x80", false },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                if (ws_utf8_valid((const uint8_t *) cases[i].s, strlen(cases[i].s)) != cases[i].ok)
                        test_fail(__FILE__, __LINE__, "UTF-8 case %zu: expected %s", i,
                                  cases[i].ok ? "valid" : "invalid");
}

/* The console tickets (src/web/web-console.c): once, within 30 s, for the
 * session, VM and console they were made for; the clock is a parameter. */
TEST(ws_console_tickets) {
        struct web_consoles *cs = NULL;
        CHECK_EQ_INT(web_consoles_new(NULL, &cs), 0);
        if (!cs)
                return;
        char sa[65], sb[65];
        memset(sa, 'a', 64);
        memset(sb, 'b', 64);
        sa[64] = sb[64] = '\0';
        static const struct {
                const char *what;
                bool other_session, other_vm, other_kind;
                uint64_t after_ms;
                int result;
                bool other_host;
        } cases[] = {
                { "fresh", false, false, false, 0, 0, false },
                { "at 29.999 s", false, false, false, WEB_TICKET_TTL_MS - 1, 0, false },
                { "at 30 s", false, false, false, WEB_TICKET_TTL_MS, -EACCES, false },
                { "other session", true, false, false, 0, -EACCES, false },
                { "other VM", false, true, false, 0, -EACCES, false },
                { "other console", false, false, true, 0, -EACCES, false },
                /* VM vm1 of host b is not this host's vm1. */
                { "other host", false, false, false, 0, -EACCES, true },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char t[WEB_TICKET_HEX + 1];
                uint64_t now = 1000000;
                CHECK_EQ_INT(web_console_ticket_new(cs, sa, "", "vm1", WEB_CONSOLE_VNC, now, t), 0);
                CHECK_EQ_U64(strlen(t), WEB_TICKET_HEX);
                int r = web_console_ticket_take(cs, t, cases[i].other_session ? sb : sa,
                                                cases[i].other_host ? "b" : "", cases[i].other_vm ? "vm2" : "vm1",
                                                cases[i].other_kind ? WEB_CONSOLE_SERIAL : WEB_CONSOLE_VNC,
                                                now + cases[i].after_ms);
                if (r != cases[i].result)
                        test_fail(__FILE__, __LINE__, "ticket %s: %d, expected %d", cases[i].what, r,
                                  cases[i].result);
                /* Used up whatever the outcome. */
                CHECK_EQ_INT(web_console_ticket_take(cs, t, sa, "", "vm1", WEB_CONSOLE_VNC, now), -EACCES);
        }
        CHECK_EQ_INT(web_console_ticket_take(cs, NULL, sa, "", "vm1", WEB_CONSOLE_VNC, 0), -EACCES);
        CHECK_EQ_INT(web_console_ticket_take(cs, "", sa, "", "vm1", WEB_CONSOLE_VNC, 0), -EACCES);
        /* More than the table holds: the oldest make room, the newest work. */
        char last[WEB_TICKET_HEX + 1];
        for (int i = 0; i < WEB_MAX_TICKETS + 5; i++)
                CHECK_EQ_INT(web_console_ticket_new(cs, sa, "b", "vm1", WEB_CONSOLE_SERIAL, 2000000 + (uint64_t) i, last), 0);
        CHECK_EQ_INT(web_console_ticket_take(cs, last, sa, "b", "vm1", WEB_CONSOLE_SERIAL, 2000100), 0);
        web_consoles_free(cs);
}

/* Typing: every printable ASCII character has its keys, others none. */
TEST(ws_type_keys) {
        for (int ch = 1; ch < 128; ch++) {
                const char *keys[2] = {};
                int n = web_type_keys((char) ch, keys);
                bool typable = (ch >= 0x20 && ch < 0x7f) || ch == '\n' || ch == '\t';
                if (typable != (n > 0))
                        test_fail(__FILE__, __LINE__, "character 0x%02x: %d keys", ch, n);
                if (n == 2)
                        CHECK_STREQ(keys[0], "shift");
        }
        const char *keys[2];
        CHECK_EQ_INT(web_type_keys('A', keys), 2);
        CHECK_STREQ(keys[1], "a");
        CHECK_EQ_INT(web_type_keys('(', keys), 2);
        CHECK_STREQ(keys[1], "9");
        CHECK_EQ_INT(web_type_keys((char) 0xc3, keys), -EINVAL);
}
