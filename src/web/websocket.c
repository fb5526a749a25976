/* web/websocket.c: RFC 6455 framing for web/websocket.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "web/websocket.h"

/* RFC 6455 section 1.3: appended to the client's key before hashing. */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

static bool base64_char(char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '+' ||
               ch == '/';
}

int ws_accept_key(const char *key, char ret[WS_ACCEPT_LEN + 1]) {
        /* 16 bytes in base64: 22 characters and "==". */
        if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=')
                return -EINVAL;
        for (size_t i = 0; i < 22; i++)
                if (!base64_char(key[i]))
                        return -EINVAL;
        char text[24 + sizeof(WS_GUID)];
        memcpy(text, key, 24);
        memcpy(text + 24, WS_GUID, sizeof(WS_GUID));
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        if (EVP_Digest(text, strlen(text), digest, &n, EVP_sha1(), NULL) != 1 || n != 20)
                return -EIO;
        /* 20 bytes make 28 characters and the NUL. */
        if (EVP_EncodeBlock((unsigned char *) ret, digest, 20) != WS_ACCEPT_LEN)
                return -EIO;
        return 0;
}

static bool opcode_known(uint8_t op) {
        return op == WS_OP_CONTINUATION || op == WS_OP_TEXT || op == WS_OP_BINARY || op == WS_OP_CLOSE ||
               op == WS_OP_PING || op == WS_OP_PONG;
}

int ws_frame_parse(const uint8_t *data, size_t len, bool require_mask, uint64_t max_payload, struct ws_frame *ret,
                   uint16_t *ret_close) {
        if (len < 2)
                return -EAGAIN;
        struct ws_frame f = {
                .fin = data[0] & 0x80,
                .opcode = data[0] & 0x0f,
                .masked = data[1] & 0x80,
        };
        /* No extension was negotiated, so the reserved bits stay 0. */
        if ((data[0] & 0x70) || !opcode_known(f.opcode)) {
                *ret_close = WS_CLOSE_PROTOCOL;
                return -EPROTO;
        }
        uint64_t plen = data[1] & 0x7f;
        size_t head = 2;
        if (plen == 126) {
                if (len < 4)
                        return -EAGAIN;
                plen = (uint64_t) data[2] << 8 | data[3];
                head = 4;
        } else if (plen == 127) {
                if (len < 10)
                        return -EAGAIN;
                plen = 0;
                for (int i = 0; i < 8; i++)
                        plen = plen << 8 | data[2 + i];
                head = 10;
                /* The most significant bit must be 0. */
                if (plen >> 63) {
                        *ret_close = WS_CLOSE_PROTOCOL;
                        return -EPROTO;
                }
        }
        bool control = f.opcode & 0x8;
        if (control && (!f.fin || plen > WS_MAX_CONTROL)) {
                *ret_close = WS_CLOSE_PROTOCOL;
                return -EPROTO;
        }
        /* A client that does not mask lets a page steer the bytes on the
         * wire (the RFC's reason): refused. */
        if (require_mask && !f.masked) {
                *ret_close = WS_CLOSE_PROTOCOL;
                return -EPROTO;
        }
        /* Known from the head alone: no need to wait for the payload. */
        if (plen > max_payload) {
                *ret_close = WS_CLOSE_TOO_BIG;
                return -EMSGSIZE;
        }
        if (f.masked) {
                if (len < head + 4)
                        return -EAGAIN;
                memcpy(f.mask, data + head, 4);
                head += 4;
        }
        f.payload_len = plen;
        f.head_len = head;
        *ret = f;
        return 0;
}

void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset) {
        for (size_t i = 0; i < len; i++)
                data[i] ^= mask[(offset + i) & 3];
}

size_t ws_frame_head(uint8_t buf[WS_MAX_HEAD], bool fin, uint8_t opcode, uint64_t len) {
        buf[0] = (uint8_t) ((fin ? 0x80 : 0) | (opcode & 0x0f));
        if (len < 126) {
                buf[1] = (uint8_t) len;
                return 2;
        }
        if (len <= 0xffff) {
                buf[1] = 126;
                buf[2] = (uint8_t) (len >> 8);
                buf[3] = (uint8_t) len;
                return 4;
        }
        buf[1] = 127;
        for (int i = 0; i < 8; i++)
                buf[2 + i] = (uint8_t) (len >> (56 - 8 * i));
        return 10;
}

bool ws_utf8_valid(const uint8_t *s, size_t len) {
        size_t i = 0;
        while (i < len) {
                uint8_t c = s[i];
                if (c < 0x80) {
                        i++;
                        continue;
                }
                size_t n;
                uint32_t cp, min;
                if ((c & 0xe0) == 0xc0) {
                        n = 2;
                        cp = c & 0x1f;
                        min = 0x80;
                } else if ((c & 0xf0) == 0xe0) {
                        n = 3;
                        cp = c & 0x0f;
                        min = 0x800;
                } else if ((c & 0xf8) == 0xf0) {
                        n = 4;
                        cp = c & 0x07;
                        min = 0x10000;
                } else
                        return false;
                if (len - i < n)
                        return false;
                for (size_t k = 1; k < n; k++) {
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (s[i + k] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n;
        }
        return true;
}

/* A close frame's payload: empty, or a code the RFC lets an endpoint send
 * (1000-1003, 1007-1011, 3000-4999) and a UTF-8 reason. */
static bool close_payload_valid(const uint8_t *p, size_t len, uint16_t *ret_code) {
        if (len == 0) {
                *ret_code = 1005;
                return true;
        }
        if (len == 1)
                return false;
        uint16_t code = (uint16_t) (p[0] << 8 | p[1]);
        bool ok = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) || (code >= 3000 && code <= 4999);
        if (!ok || !ws_utf8_valid(p + 2, len - 2))
                return false;
        *ret_code = code;
        return true;
}

int ws_reader_next(struct ws_reader *r, uint8_t *data, size_t len, size_t *ret_used, struct ws_event *ret_event,
                   uint16_t *ret_close) {
        *ret_used = 0;
        struct ws_frame f;
        int k = ws_frame_parse(data, len, true, WS_MAX_FRAME, &f, ret_close);
        if (k == -EAGAIN)
                return 0;
        if (k < 0)
                return k;
        if (len - f.head_len < f.payload_len)
                return 0;
        uint8_t *payload = data + f.head_len;
        size_t plen = (size_t) f.payload_len;
        ws_unmask(payload, plen, f.mask, 0);
        *ret_used = f.head_len + plen;

        if (f.opcode & 0x8) {
                struct ws_event ev = { .data = payload, .len = plen };
                if (f.opcode == WS_OP_CLOSE) {
                        ev.kind = WS_EVENT_CLOSE;
                        if (!close_payload_valid(payload, plen, &ev.close_code)) {
                                *ret_close = WS_CLOSE_PROTOCOL;
                                return -EPROTO;
                        }
                } else
                        ev.kind = f.opcode == WS_OP_PING ? WS_EVENT_PING : WS_EVENT_PONG;
                *ret_event = ev;
                return 1;
        }
        if (f.opcode == WS_OP_CONTINUATION ? !r->in_message : r->in_message) {
                /* A continuation of nothing, or a new message inside one. */
                *ret_close = WS_CLOSE_PROTOCOL;
                return -EPROTO;
        }
        if (f.opcode != WS_OP_CONTINUATION) {
                if (f.fin) {
                        /* Unfragmented, the common case: no copy. */
                        if (f.opcode == WS_OP_TEXT && !ws_utf8_valid(payload, plen)) {
                                *ret_close = WS_CLOSE_BAD_DATA;
                                return -EILSEQ;
                        }
                        *ret_event = (struct ws_event) { .kind = WS_EVENT_MESSAGE, .opcode = f.opcode,
                                                         .data = payload, .len = plen };
                        return 1;
                }
                r->in_message = true;
                r->msg_opcode = f.opcode;
                r->msg_len = 0;
        }
        if (r->msg_len + plen > WS_MAX_MESSAGE) {
                *ret_close = WS_CLOSE_TOO_BIG;
                return -EMSGSIZE;
        }
        if (r->msg_len + plen > r->msg_cap) {
                size_t cap = r->msg_len + plen;
                uint8_t *m = realloc(r->msg, cap ? cap : 1);
                if (!m) {
                        *ret_close = WS_CLOSE_INTERNAL;
                        return -ENOMEM;
                }
                r->msg = m;
                r->msg_cap = cap;
        }
        if (plen)
                memcpy(r->msg + r->msg_len, payload, plen);
        r->msg_len += plen;
        if (!f.fin)
                return 0;
        r->in_message = false;
        if (r->msg_opcode == WS_OP_TEXT && !ws_utf8_valid(r->msg, r->msg_len)) {
                *ret_close = WS_CLOSE_BAD_DATA;
                return -EILSEQ;
        }
        *ret_event = (struct ws_event) { .kind = WS_EVENT_MESSAGE, .opcode = r->msg_opcode, .data = r->msg,
                                         .len = r->msg_len };
        return 1;
}

void ws_reader_done(struct ws_reader *r) {
        free(r->msg);
        *r = (struct ws_reader) {};
}
