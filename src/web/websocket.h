/* web/websocket.h: the WebSocket protocol (RFC 6455) as the server side
 * speaks it: the opening handshake's accept value, and a reader that cuts
 * the bytes a client sends into messages and control frames, with a limit
 * on every size. Pure functions over buffers, so that the consoles
 * (web/web-console.c), the unit tests and the fuzz target share them; the
 * event loop (web/server.h) moves the bytes.
 *
 * What a client must do, or the connection closes with the code given:
 * mask every frame (1002), use no extension bits, known opcodes only, no
 * continuation without a message begun nor a new message inside one
 * (1002), control frames of at most 125 bytes and never fragmented (1002),
 * frames of at most WS_MAX_FRAME and messages of at most WS_MAX_MESSAGE
 * bytes (1009), text in valid UTF-8 (1007), a close frame with no code or
 * a valid one (1002). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A frame's payload, and a message's (its frames together): the consoles
 * carry keys, mouse moves and short RFB messages from the browser, never
 * bulk data, so 64 KiB is ample and fits the server's read buffer. */
#define WS_MAX_FRAME (64 * 1024)
#define WS_MAX_MESSAGE (64 * 1024)
#define WS_MAX_CONTROL 125
/* The longest frame head: 2 bytes, 8 of length, 4 of mask. */
#define WS_MAX_HEAD 14
/* The accept value: base64 of a SHA-1, 28 characters. */
#define WS_ACCEPT_LEN 28

enum ws_opcode {
        WS_OP_CONTINUATION = 0x0,
        WS_OP_TEXT = 0x1,
        WS_OP_BINARY = 0x2,
        WS_OP_CLOSE = 0x8,
        WS_OP_PING = 0x9,
        WS_OP_PONG = 0xa,
};

enum ws_close_code {
        WS_CLOSE_NORMAL = 1000,
        WS_CLOSE_GOING_AWAY = 1001,
        WS_CLOSE_PROTOCOL = 1002,
        WS_CLOSE_BAD_DATA = 1007,
        WS_CLOSE_POLICY = 1008,
        WS_CLOSE_TOO_BIG = 1009,
        WS_CLOSE_INTERNAL = 1011,
};

/* Sec-WebSocket-Accept for a client's Sec-WebSocket-Key: base64 of the
 * SHA-1 of the key and the RFC's GUID. -EINVAL when the key is not the
 * base64 of 16 bytes (24 characters), as the RFC requires. */
int ws_accept_key(const char *key, char ret[WS_ACCEPT_LEN + 1]);

/* One frame head. */
struct ws_frame {
        bool fin;
        uint8_t opcode;
        bool masked;
        uint8_t mask[4];
        uint64_t payload_len;
        size_t head_len;
};

/* Parses the frame head at the start of 'data'. 0 with *ret filled, -EAGAIN
 * when more bytes are needed, -EPROTO (or -EMSGSIZE past 'max_payload')
 * with *ret_close the close code to send. Checks what a head alone can
 * tell: reserved bits, opcodes, control frame rules, the mask when
 * 'require_mask', the minimal length encoding is not required (the RFC
 * asks it of senders only). */
int ws_frame_parse(const uint8_t *data, size_t len, bool require_mask, uint64_t max_payload, struct ws_frame *ret,
                   uint16_t *ret_close);

/* XORs 'len' bytes with the mask, 'offset' bytes into the payload. */
void ws_unmask(uint8_t *data, size_t len, const uint8_t mask[4], uint64_t offset);

/* Writes a server frame head (never masked) for a payload of 'len' bytes
 * into 'buf'; returns its length (2, 4 or 10). */
size_t ws_frame_head(uint8_t buf[WS_MAX_HEAD], bool fin, uint8_t opcode, uint64_t len);

/* True when 'data' is valid UTF-8 (no overlongs, no surrogates, at most
 * U+10FFFF). */
bool ws_utf8_valid(const uint8_t *data, size_t len);

/* What the reader found. */
enum ws_event_kind {
        WS_EVENT_MESSAGE,  /* a whole text or binary message */
        WS_EVENT_PING,     /* answer with a pong of the same payload */
        WS_EVENT_PONG,
        WS_EVENT_CLOSE,    /* the client closes: answer with a close, then end */
};

struct ws_event {
        enum ws_event_kind kind;
        uint8_t opcode;           /* WS_EVENT_MESSAGE: WS_OP_TEXT or WS_OP_BINARY */
        const uint8_t *data;      /* the payload, unmasked; valid until the next call */
        size_t len;
        uint16_t close_code;      /* WS_EVENT_CLOSE: the client's code, 1005 when none was sent */
};

/* A reader keeps the message being assembled from fragments. */
struct ws_reader {
        uint8_t *msg;
        size_t msg_len, msg_cap;
        uint8_t msg_opcode;
        bool in_message;
};

/* Takes the next frame from 'data' when it is all there (a frame is at
 * most WS_MAX_HEAD + WS_MAX_FRAME bytes, so a caller's buffer of that
 * size always makes progress). Unmasks the payload in place. Returns 1
 * with *ret_event (a message complete, or a control frame), 0 when a
 * frame was consumed but nothing is complete yet (a fragment) or more
 * bytes are needed (*ret_used tells which: 0 means need more), or <0 with
 * *ret_close the code to close with. */
int ws_reader_next(struct ws_reader *r, uint8_t *data, size_t len, size_t *ret_used, struct ws_event *ret_event,
                   uint16_t *ret_close);
void ws_reader_done(struct ws_reader *r);
