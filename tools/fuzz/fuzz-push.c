/* tools/fuzz/fuzz-push.c: libFuzzer target for the img push stream
 * decoder (src/host/push.c), the far side's parser of bytes that came
 * over the network. Besides memory safety it checks the decoder's
 * promises: every record it hands on lies within the declared size, after
 * the previous one, 1..PUSH_RECORD_MAX bytes long; a failure carries its
 * code and a message; on success the counts add up. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/push.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct input {
        const uint8_t *data;
        size_t len, pos;
        uint64_t size, next, total;
        bool sized;
};

static ssize_t in_read(void *buf, size_t len, void *userdata) {
        struct input *in = userdata;
        /* Short reads, as a pipe gives them. */
        size_t n = len < 333 ? len : 333;
        if (n > in->len - in->pos)
                n = in->len - in->pos;
        memcpy(buf, in->data + in->pos, n);
        in->pos += n;
        return (ssize_t) n;
}

static int in_size(uint64_t size, void *userdata) {
        struct input *in = userdata;
        if (in->sized)
                abort();
        in->sized = true;
        in->size = size;
        return 0;
}

static int in_data(uint64_t offset, const void *data, size_t len, void *userdata) {
        struct input *in = userdata;
        if (!in->sized || len == 0 || len > PUSH_RECORD_MAX || offset < in->next || offset > in->size ||
            len > in->size - offset)
                abort();
        /* Touch every byte, so ASan sees a short buffer. */
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < len; i++)
                sum ^= ((const uint8_t *) data)[i];
        (void) sum;
        in->next = offset + len;
        in->total += len;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > (1u << 20))
                return 0;
        struct input in = { .data = data, .len = size };
        struct vh_error err = {};
        struct push_decode_stats st = {};
        int r = push_decode(in_read, in_size, in_data, &in, 1ull << 40, &st, &err);
        if (r < 0) {
                if (r != -ENOMEM && (err.code != r || err.msg[0] == '\0'))
                        abort();
                return 0;
        }
        if (r != 0 || !in.sized || st.size != in.size || st.data_bytes != in.total || st.wire_bytes != size ||
            in.pos != size)
                abort();
        return 0;
}
