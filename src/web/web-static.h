/* web/web-static.h: the page's files, served from one directory that no
 * request can leave: the decoded path has no "." or ".." segment
 * (http_path_decode()), and the file is opened below the directory's
 * descriptor with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), so that
 * neither a symlink nor a race gets out. What is not a regular file with
 * a known type (http_mime_type()) is 404. */
#pragma once

struct web_conn;

/* Answers a GET or HEAD for 'path' ("/" is "/index.html") from the
 * directory 'dir_fd'. */
void web_static_serve(struct web_conn *c, int dir_fd, const char *path);

/* Opens 'relpath' (no leading '/') below 'dir_fd' for reading, following
 * no symlink anywhere on the way; -errno (-ELOOP for a symlink, -EXDEV
 * for a way out). */
int web_static_open(int dir_fd, const char *relpath);
