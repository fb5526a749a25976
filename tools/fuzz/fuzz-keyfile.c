/* tools/fuzz/fuzz-keyfile.c: libFuzzer target for the "key = value" reader
 * (src/base/keyfile.c) under both dialects it serves: the strict one of
 * network definitions (unique keys, no empty key, bounded quotes) and the
 * lenient one of VM definitions, which no other target reaches. The first
 * byte picks the dialect. Besides memory safety it checks the reader's
 * promises: on failure an error code and a message; on success keys and
 * values are stripped and non-empty (keys only where the dialect says),
 * and writing the entries back as "key = value" lines reads back to the
 * same entries (a fixed point). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/keyfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const repeatable[] = { "tunnel", NULL };
/* Small limits so the fuzzer also walks the limit paths. */
static const struct keyfile_syntax dialects[] = {
        { .max_bytes = 4096, .max_line = 128, .repeatable = repeatable, .quote_line_max = 20, .quote_key_max = 10 },
        { .max_bytes = 4096, .max_line = 128, .allow_repeats = true, .allow_empty_key = true },
};

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_stripped(const char *s) {
        size_t n = strlen(s);
        return n == 0 || (!is_space(s[0]) && !is_space(s[n - 1]));
}

/* Reads 'text' and writes its entries as "key = value" lines; NULL when the
 * reader refused it. */
static char *read_entries(const char *text, const struct keyfile_syntax *syntax) {
        struct keyfile *kf = NULL;
        struct vh_error e = {};
        int r = keyfile_new(text, "fuzz.conf", syntax, &kf, &e);
        if (r < 0) {
                if (e.code != r || e.msg[0] == '\0')
                        abort();
                return NULL;
        }
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        if (!f)
                abort();
        const char *key, *value;
        unsigned last_line = 0;
        while ((r = keyfile_next(kf, &key, &value, &e)) > 0) {
                if (keyfile_line(kf) <= last_line || strchr(key, '=') || strchr(key, '\n') || strchr(value, '\n') ||
                    !is_stripped(key) || !is_stripped(value) || value[0] == '\0' ||
                    (key[0] == '\0' && !syntax->allow_empty_key))
                        abort();
                last_line = keyfile_line(kf);
                fprintf(f, "%s = %s\n", key, value);
        }
        if (fclose(f) != 0)
                abort();
        keyfile_free(kf);
        if (r < 0) {
                if (r != -ENOMEM && (e.code != r || e.msg[0] == '\0'))
                        abort();
                free(out);
                return NULL;
        }
        return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size < 1 || size > 8192)
                return 0;
        const struct keyfile_syntax *syntax = &dialects[data[0] % 2];
        char *text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';

        char *once = read_entries(text, syntax);
        if (once) {
                /* " = " makes a line longer than it was: re-read with room. */
                struct keyfile_syntax roomy = *syntax;
                roomy.max_bytes = 3 * syntax->max_bytes + 16;
                roomy.max_line = 2 * syntax->max_line + 4;
                char *twice = read_entries(once, &roomy);
                if (!twice || strcmp(once, twice) != 0)
                        abort();
                free(twice);
        }
        free(once);
        free(text);
        return 0;
}
