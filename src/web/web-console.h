/* web/web-console.h: the consoles of the web page: the tickets that admit
 * a websocket, and the relays between websockets (web/websocket.h over
 * the raw connections of web/server.h) and a VM's VNC or serial console.
 *
 * - VNC: one connection to QEMU's VNC server per viewer, a socketpair
 *   handed to QEMU by the worker (web/web-jobs.h, WEB_JOB_CONSOLE); RFB
 *   bytes go both ways in binary messages.
 * - Serial: one connection per VM, owned here (the chardev serves one
 *   client at a time) and fanned out to every viewer; a new viewer first
 *   gets the end of the serial log (at most WEB_SERIAL_SCROLLBACK bytes of
 *   this boot's output). What any viewer sends goes to the guest. The
 *   connection closes with its last viewer, so 'vm console' can have it.
 * - A remote VM's console: the same, over a relay that its host's vmhost
 *   runs under ssh ('vm console-relay'; one relay per serial console here,
 *   whatever the number of viewers). Its scrollback is the end of what
 *   came through the relay (which starts with the end of the log there).
 *
 * Backpressure: a relay reads from QEMU only while the browser's backlog
 * is below WEB_CONSOLE_HIGH_WATER, and from the browser only while what
 * it sent can be buffered for QEMU (WEB_CONSOLE_UP_MAX); a serial viewer
 * that falls WEB_SERIAL_SLOW_VIEWER behind the others is closed (1008),
 * since holding back the guest's output for it would stall the others. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "web/server.h"
#include "web/web-jobs.h"

#define WEB_TICKET_HEX 64
#define WEB_TICKET_TTL_MS (30 * 1000)
#define WEB_MAX_TICKETS 64
#define WEB_CONSOLE_HIGH_WATER (256 * 1024)
#define WEB_CONSOLE_UP_MAX (256 * 1024)
#define WEB_SERIAL_SCROLLBACK (64 * 1024)

/* The end of this boot's output in the serial log 'log' (from 'offset',
 * where this boot began, at most WEB_SERIAL_SCROLLBACK bytes): its length,
 * the bytes in '*ret' (free()); 0 and NULL without a log. Shared by the
 * server's viewers and 'vm console-relay' on another host. */
size_t web_serial_log_tail(const char *log, uint64_t offset, uint8_t **ret);
#define WEB_SERIAL_SLOW_VIEWER (1u << 20)
/* 'vmhost web --serial-slow-viewer': how far behind the others a serial
 * viewer may fall (bytes queued for it here) before it is closed (1008).
 * Bounds: a new viewer gets its scrollback at once, and a viewer may not
 * take more memory than WEB_RAW_MAX_BACKLOG lets a connection queue. */
#define WEB_SERIAL_SLOW_VIEWER_MIN WEB_SERIAL_SCROLLBACK
#define WEB_CONSOLE_PING_MS (15 * 1000)

struct web_consoles;

int web_consoles_new(struct web_server *srv, struct web_consoles **ret);
/* Closes every console (their websockets get 1001). */
struct web_consoles *web_consoles_free(struct web_consoles *cs);
/* The limit of a serial viewer's backlog (WEB_SERIAL_SLOW_VIEWER when 0),
 * within WEB_SERIAL_SLOW_VIEWER_MIN and WEB_RAW_MAX_BACKLOG. */
void web_consoles_set_slow_viewer(struct web_consoles *cs, size_t bytes);

/* 'host' names the VM's host everywhere below: "" for this one, else a
 * registered host whose console comes through a relay over ssh (its fd is
 * that relay's socket; web/web-jobs.h, WEB_RELAY_READY).
 *
 * A ticket for one websocket of 'session' to VM 'name''s console 'kind',
 * valid WEB_TICKET_TTL_MS from 'now' and once. The oldest one makes room
 * past WEB_MAX_TICKETS. */
int web_console_ticket_new(struct web_consoles *cs, const char *session, const char *host, const char *name,
                           enum web_console_kind kind, uint64_t now, char ret[WEB_TICKET_HEX + 1]);
/* Uses the ticket up, whatever the outcome: 0 when it was issued for these
 * and has not expired, -EACCES otherwise. */
int web_console_ticket_take(struct web_consoles *cs, const char *ticket, const char *session, const char *host,
                            const char *name, enum web_console_kind kind, uint64_t now);

/* True when VM 'name''s serial console is open here already, so a new
 * viewer needs no worker. */
bool web_console_serial_open(const struct web_consoles *cs, const char *host, const char *name);

/* Answers the upgrade of 'c' with 101 ('accept', 'binary': echo that
 * subprotocol) and relays it to 'fd' (taken, even on failure; -1 for a
 * serial console already open). 'serial_log' and 'log_offset': the
 * scrollback's source for a serial console. */
int web_console_attach(struct web_consoles *cs, struct web_conn *c, const char *accept, bool binary,
                       enum web_console_kind kind, const char *host, const char *name, int fd,
                       const char *serial_log, uint64_t log_offset);

/* Pings every websocket now and then (a proxy or the browser would take
 * a quiet one for dead). */
void web_consoles_tick(struct web_consoles *cs, uint64_t now);
