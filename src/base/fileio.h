/* base/fileio.h: whole-file reads with a size limit, atomic writes,
 * directory creation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct sockaddr_un;

/* Reads all of 'path' (at most 'max' bytes, else -EFBIG) into a new
 * NUL-terminated buffer. */
int read_full_file(const char *path, size_t max, char **ret_data, size_t *ret_len);

/* Reads the first line of 'path' (small sysfs/procfs files), stripped. */
int read_one_line_file(const char *path, char **ret_line);

/* Writes 'data' to 'path' through a temporary file, fsync and rename, so
 * readers see either the old or the new content, never a mix. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);

/* mkdir -p with 'mode' for the directories it creates. */
int mkdir_p(const char *path, mode_t mode);

bool file_exists(const char *path);

/* 'path' as a unix socket address in *ret; -ENAMETOOLONG when it is NULL or
 * does not fit in sun_path (108 bytes with its NUL). */
int unix_address(const char *path, struct sockaddr_un *ret);
