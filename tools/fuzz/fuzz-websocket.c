/* tools/fuzz/fuzz-websocket.c: libFuzzer target for the websocket frame
 * reader (src/web/websocket.c), which reads whatever a browser (or
 * anything that got a ticket) sends on a console. The input is a byte
 * stream cut into frames as the server does it. Besides memory safety it
 * checks the reader's promises: it consumes no more than it was given and
 * only whole frames, a payload is within its limit, an error comes with a
 * close code the server may send, a text message is valid UTF-8, a close
 * event has a code; and a frame parsed from a prefix of the bytes never
 * disagrees with the same frame parsed from all of them. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "web/websocket.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 4 * (WS_MAX_FRAME + WS_MAX_HEAD))
                return 0;
        /* The reader unmasks in place: work on a copy. */
        uint8_t *buf = malloc(size ? size : 1);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        struct ws_reader r = {};
        size_t off = 0;
        for (int frames = 0; frames < 100000; frames++) {
                struct ws_event ev;
                size_t used = 0;
                uint16_t close = 0;
                struct ws_frame f;
                uint16_t c2;
                int head = ws_frame_parse(buf + off, size - off, true, WS_MAX_FRAME, &f, &c2);
                int k = ws_reader_next(&r, buf + off, size - off, &used, &ev, &close);
                if (k < 0) {
                        if (close != WS_CLOSE_PROTOCOL && close != WS_CLOSE_TOO_BIG && close != WS_CLOSE_BAD_DATA &&
                            close != WS_CLOSE_INTERNAL)
                                abort();
                        break;
                }
                if (used > size - off)
                        abort();
                if (used == 0) {
                        if (k != 0)
                                abort();
                        break;
                }
                /* What was consumed is exactly one frame, as its head says. */
                if (head != 0 || used != f.head_len + f.payload_len || f.payload_len > WS_MAX_FRAME)
                        abort();
                if (k == 1) {
                        if (ev.kind == WS_EVENT_MESSAGE) {
                                if (ev.len > WS_MAX_MESSAGE || (ev.opcode != WS_OP_TEXT && ev.opcode != WS_OP_BINARY))
                                        abort();
                                if (ev.opcode == WS_OP_TEXT && !ws_utf8_valid(ev.data, ev.len))
                                        abort();
                        } else if (ev.len > WS_MAX_CONTROL)
                                abort();
                        if (ev.kind == WS_EVENT_CLOSE && ev.close_code < 1000)
                                abort();
                }
                off += used;
        }
        ws_reader_done(&r);
        free(buf);
        return 0;
}
