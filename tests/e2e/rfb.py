#!/usr/bin/env python3
"""A small RFB (VNC) client for the e2e tests; python3 stdlib only.

  rfb.py HOST PORT [--password PW]    TCP
  rfb.py --unix PATH [--password PW]  unix socket

Speaks RFB 3.8: picks VNC authentication (type 2) when the server offers
it and a password was given, else None (type 1); then asks for one full
framebuffer update in Raw encoding and counts the pixels it received.
Prints one line "OK WIDTHxHEIGHT pixels=N name=..." and exits 0, or
prints why it failed on stderr and exits:
  2  the connection failed (refused, permission denied, closed early)
  3  the server refused authentication (it says why)
  4  the server offers no security type this client could use
  1  anything else (protocol error, short framebuffer)

VNC authentication encrypts the server's 16-byte challenge with DES, the
key being the password (first 8 bytes, zero-padded) with the bits of each
byte reversed. DES is written out below (FIPS 46-3) because Debian's
python3 has no DES of its own.
"""
import socket
import struct
import sys

# --- DES (FIPS 46-3), encryption of single 64-bit blocks -----------------
IP = [58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4,
      62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8,
      57, 49, 41, 33, 25, 17, 9, 1, 59, 51, 43, 35, 27, 19, 11, 3,
      61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7]
FP = [40, 8, 48, 16, 56, 24, 64, 32, 39, 7, 47, 15, 55, 23, 63, 31,
      38, 6, 46, 14, 54, 22, 62, 30, 37, 5, 45, 13, 53, 21, 61, 29,
      36, 4, 44, 12, 52, 20, 60, 28, 35, 3, 43, 11, 51, 19, 59, 27,
      34, 2, 42, 10, 50, 18, 58, 26, 33, 1, 41, 9, 49, 17, 57, 25]
E = [32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17,
     16, 17, 18, 19, 20, 21, 20, 21, 22, 23, 24, 25, 24, 25, 26, 27, 28, 29, 28, 29, 30, 31, 32, 1]
P = [16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10,
     2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25]
PC1 = [57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36,
       63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4]
PC2 = [14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2,
       41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34, 53, 46, 42, 50, 36, 29, 32]
SHIFTS = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1]
SBOX = [
    [14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8,
     4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10, 5, 0, 15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13],
    [15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5,
     0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3, 2, 15, 13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9],
    [10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1,
     13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10, 14, 7, 1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12],
    [7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9,
     10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2, 8, 4, 3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14],
    [2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6,
     4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3, 0, 14, 11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3],
    [12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8,
     9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13, 11, 6, 4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13],
    [4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6,
     1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5, 9, 2, 6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12],
    [13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2,
     7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3, 5, 8, 2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11],
]


def permute(value, table, width):
    """Bit i of the result (from the left, 1-based) is bit table[i] of value."""
    out = 0
    for pos in table:
        out = (out << 1) | ((value >> (width - pos)) & 1)
    return out


def des_subkeys(key):
    k = permute(int.from_bytes(key, 'big'), PC1, 64)
    c, d = k >> 28, k & 0xfffffff
    keys = []
    for s in SHIFTS:
        c = ((c << s) | (c >> (28 - s))) & 0xfffffff
        d = ((d << s) | (d >> (28 - s))) & 0xfffffff
        keys.append(permute((c << 28) | d, PC2, 56))
    return keys


def des_encrypt_block(key, block):
    subkeys = des_subkeys(key)
    v = permute(int.from_bytes(block, 'big'), IP, 64)
    left, right = v >> 32, v & 0xffffffff
    for k in subkeys:
        x = permute(right, E, 32) ^ k
        s = 0
        for i in range(8):
            six = (x >> (42 - 6 * i)) & 0x3f
            row = ((six >> 4) & 2) | (six & 1)
            s = (s << 4) | SBOX[i][row * 16 + ((six >> 1) & 0xf)]
        left, right = right, left ^ permute(s, P, 32)
    return permute((right << 32) | left, FP, 64).to_bytes(8, 'big')


def vnc_auth_response(password, challenge):
    key = password.encode()[:8].ljust(8, b'\0')
    key = bytes(int('{:08b}'.format(b)[::-1], 2) for b in key)
    return des_encrypt_block(key, challenge[:8]) + des_encrypt_block(key, challenge[8:])


# --- RFB ------------------------------------------------------------------
class Failure(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def recv_exact(s, n):
    buf = b''
    while len(buf) < n:
        try:
            d = s.recv(n - len(buf))
        except OSError as e:
            raise Failure(2, 'read failed after %d/%d bytes: %s' % (len(buf), n, e))
        if not d:
            raise Failure(2, 'connection closed after %d/%d bytes' % (len(buf), n))
        buf += d
    return buf


def session(s, password):
    version = recv_exact(s, 12)
    if not version.startswith(b'RFB 003.'):
        raise Failure(1, 'not an RFB server: %r' % version)
    s.sendall(b'RFB 003.008\n')
    n = recv_exact(s, 1)[0]
    if n == 0:
        reason = recv_exact(s, struct.unpack('!I', recv_exact(s, 4))[0])
        raise Failure(3, 'server refused the connection: %s' % reason.decode(errors='replace'))
    types = list(recv_exact(s, n))
    if password is not None and 2 in types:
        s.sendall(b'\x02')
        challenge = recv_exact(s, 16)
        s.sendall(vnc_auth_response(password, challenge))
    elif 1 in types:
        s.sendall(b'\x01')
    else:
        raise Failure(4, 'server offers security types %s; this client has %s' %
                      (types, '[1, 2]' if password is not None else '[1] (no --password)'))
    result = struct.unpack('!I', recv_exact(s, 4))[0]
    if result != 0:
        try:
            reason = recv_exact(s, struct.unpack('!I', recv_exact(s, 4))[0]).decode(errors='replace').rstrip('\0')
        except Failure:
            reason = '(no reason given)'
        raise Failure(3, 'authentication failed (security types offered %s): %s' % (types, reason))
    s.sendall(b'\x01')  # ClientInit: shared
    w, h = struct.unpack('!HH', recv_exact(s, 4))
    recv_exact(s, 16)  # server pixel format
    name = recv_exact(s, struct.unpack('!I', recv_exact(s, 4))[0]).decode(errors='replace')
    # 32 bpp true colour, then Raw encoding only, then the whole screen.
    s.sendall(b'\x00\x00\x00\x00' + struct.pack('!BBBBHHHBBB3x', 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
    s.sendall(struct.pack('!BBHi', 2, 0, 1, 0))
    s.sendall(struct.pack('!BBHHHH', 3, 0, 0, 0, w, h))
    pixels = 0
    while pixels < w * h:
        kind = recv_exact(s, 1)[0]
        if kind == 0:  # FramebufferUpdate
            recv_exact(s, 1)
            for _ in range(struct.unpack('!H', recv_exact(s, 2))[0]):
                x, y, rw, rh, enc = struct.unpack('!HHHHi', recv_exact(s, 12))
                if enc != 0:
                    raise Failure(1, 'unexpected encoding %d' % enc)
                if x + rw > w or y + rh > h:
                    raise Failure(1, 'rectangle %dx%d+%d+%d outside %dx%d' % (rw, rh, x, y, w, h))
                recv_exact(s, rw * rh * 4)
                pixels += rw * rh
        elif kind == 1:  # SetColourMapEntries
            recv_exact(s, 3)
            recv_exact(s, struct.unpack('!H', recv_exact(s, 2))[0] * 6)
        elif kind == 2:  # Bell
            pass
        elif kind == 3:  # ServerCutText
            recv_exact(s, 3)
            recv_exact(s, struct.unpack('!I', recv_exact(s, 4))[0])
        else:
            raise Failure(1, 'unexpected server message %d' % kind)
    return w, h, pixels, name


def main():
    args = sys.argv[1:]
    password = None
    if '--password' in args:
        i = args.index('--password')
        password = args[i + 1]
        del args[i:i + 2]
    if args and args[0] == '--selftest':
        # FIPS 81 / the classic DES example: "Now is t" under 0123456789abcdef.
        got = des_encrypt_block(bytes.fromhex('0123456789abcdef'), b'Now is t').hex()
        print('DES', got)
        sys.exit(0 if got == '3fa40e8a984d4815' else 1)
    try:
        if args and args[0] == '--unix':
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            try:
                s.connect(args[1])
            except OSError as e:
                raise Failure(2, 'cannot connect to %s: %s' % (args[1], e))
        else:
            try:
                s = socket.create_connection((args[0], int(args[1])), timeout=15)
            except OSError as e:
                raise Failure(2, 'cannot connect to %s:%s: %s' % (args[0], args[1], e))
        with s:
            w, h, pixels, name = session(s, password)
        print('OK %dx%d pixels=%d name=%s' % (w, h, pixels, name))
    except Failure as f:
        print('rfb: %s' % f, file=sys.stderr)
        sys.exit(f.code)


if __name__ == '__main__':
    main()
