/* tools/fuzz/fuzz-json.c: libFuzzer target for the JSON parser
 * (src/base/json.c), which reads QMP replies and HTTP request bodies.
 * Besides memory safety it checks the parser's promises: on failure no
 * tree and an error message; on success the tree re-emits and re-parses
 * to the same text. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* Small limits so the fuzzer also walks the limit paths. */
        static const struct json_limits limits = {
                .max_depth = 32,
                .max_bytes = 64 * 1024,
                .max_string = 4096,
                .max_elements = 1000,
                .max_values = 10000,
        };
        struct json_value *v = NULL;
        struct vh_error err = {};

        int r = json_parse((const char *) data, size, &limits, &v, &err);
        if (r < 0) {
                if (v || err.code != r || (r != -ENOMEM && err.msg[0] == '\0'))
                        abort();
                return 0;
        }

        char *once = NULL;
        if (json_value_format(v, false, &once) == 0) {
                /* Doubles are printed with 6 digits, so only the second
                 * round trip must be a fixed point. */
                struct json_value *w = NULL;
                if (json_parse(once, strlen(once), NULL, &w, &err) < 0)
                        abort();
                char *twice = NULL;
                if (json_value_format(w, false, &twice) == 0) {
                        struct json_value *x = NULL;
                        char *thrice = NULL;
                        if (json_parse(twice, strlen(twice), NULL, &x, &err) < 0 ||
                            json_value_format(x, false, &thrice) < 0 || strcmp(twice, thrice) != 0)
                                abort();
                        free(thrice);
                        json_value_free(x);
                }
                free(twice);
                json_value_free(w);
        }
        free(once);
        json_value_free(v);
        return 0;
}
