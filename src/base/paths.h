/* base/paths.h: where vmhost keeps things.
 *
 * State (definitions, images, the guest cache) lives in one directory:
 *   $VMHOST_HOME                     when set (tests, several homes per machine)
 *   /var/lib/vmhost                  for root
 *   $XDG_DATA_HOME/vmhost            otherwise (~/.local/share/vmhost)
 * Runtime files (sockets, pid files) live beside it:
 *   $VMHOST_HOME/run, /run/vmhost, $XDG_RUNTIME_DIR/vmhost (or state/run).
 * Two homes never share a file, so independent homes cannot see each other. */
#pragma once

/* Both return a new string, or NULL when out of memory. */
char *vh_state_dir(void);
char *vh_runtime_dir(void);

/* vh_state_dir()/sub, created (mode 0700 for new directories). */
int vh_state_subdir(const char *sub, char **ret_path);
int vh_runtime_subdir(const char *sub, char **ret_path);
