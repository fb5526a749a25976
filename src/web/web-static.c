/* web/web-static.c: the static files of web/web-static.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/macro.h"
#include "web/http.h"
#include "web/server.h"
#include "web/web-static.h"

/* The page's files are small; a bigger one is refused, not buffered. */
#define WEB_STATIC_MAX (8u << 20)

/* Without openat2 (Linux before 5.6): one component at a time, each with
 * O_NOFOLLOW, which refuses a symlink in any position just as well; the
 * path has no ".." (http_path_decode()). */
static int open_by_components(int dir_fd, const char *relpath) {
        _cleanup_free_ char *copy = strdup(relpath);
        if (!copy)
                return -ENOMEM;
        int fd = dup(dir_fd);
        if (fd < 0)
                return negative_errno();
        char *save = NULL;
        char *part = strtok_r(copy, "/", &save);
        while (part) {
                char *next = strtok_r(NULL, "/", &save);
                int nfd = openat(fd, part, (next ? O_PATH | O_DIRECTORY : O_RDONLY) | O_NOFOLLOW | O_CLOEXEC);
                int r = nfd < 0 ? negative_errno() : 0;
                close(fd);
                if (r < 0)
                        return r;
                fd = nfd;
                part = next;
        }
        return fd;
}

int web_static_open(int dir_fd, const char *relpath) {
        struct open_how how = {
                .flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dir_fd, relpath, &how, sizeof(how));
        if (fd >= 0)
                return (int) fd;
        if (errno == ENOSYS)
                return open_by_components(dir_fd, relpath);
        return negative_errno();
}

void web_static_serve(struct web_conn *c, int dir_fd, const char *path) {
        static const char not_found[] = "{\"error\": \"No such file.\"}\n";
        const char *rel = streq(path, "/") ? "index.html" : path + 1;
        const char *type = http_mime_type(rel);
        _cleanup_close_ int fd = type ? web_static_open(dir_fd, rel) : -ENOENT;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > WEB_STATIC_MAX) {
                (void) web_conn_respond(c, 404, "application/json", NULL, not_found, sizeof(not_found) - 1, false);
                return;
        }
        size_t size = (size_t) st.st_size;
        _cleanup_free_ char *data = malloc(size ? size : 1);
        size_t got = 0;
        while (data && got < size) {
                ssize_t n = read(fd, data + got, size - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t) n;
        }
        if (!data || got != size) {
                static const char fail[] = "{\"error\": \"Cannot read the file.\"}\n";
                (void) web_conn_respond(c, 500, "application/json", NULL, fail, sizeof(fail) - 1, false);
                return;
        }
        /* The page always asks again: a new vmhost's files replace the old. */
        (void) web_conn_respond(c, 200, type, "Cache-Control: no-cache\r\n", data, size, false);
}
