#!/usr/bin/env python3
"""test_qemu_boards — the board bring-up firmware (mappers/boards/demo/echo.c)
on every emulated board: QEMU runs the image with its first UART on a TCP
socket; the test reads the banner and the nanopb round trip, has bytes
echoed in order (every byte value, 0x00 and 0x01 included, and a 1 KiB
burst), checks that board_millis keeps real time, and prints the stack
high-water mark. Exits 77 (skipped) without qemu-system-arm or the images
(KE_FIRMWARE_DIR, set by tests/CMakeLists.txt)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

BOARDS = ["lm3s6965evb", "netduinoplus2"]
REPORT_SEQ = b"!HWM?"
REPORT_RE = re.compile(rb"\r\nhwm=(\d+) stack=(\d+) ms=(\d+)\r\n")
STEP_TIMEOUT = 10.0  # seconds for any one exchange (QEMU on a loaded machine)


class Board:
    """One QEMU process and the TCP connection to its UART."""

    def __init__(self, board, elf):
        self.board, self.elf, self.proc, self.sock = board, elf, None, None
        self.buf = b""

    def start(self):
        for _ in range(3):  # another process may take the free port first
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            probe.close()
            self.proc = subprocess.Popen(
                ["qemu-system-arm", "-M", self.board, "-nographic", "-monitor", "none",
                 "-kernel", self.elf, "-semihosting-config", "enable=on,target=native",
                 "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + STEP_TIMEOUT
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.sock = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                    self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    return
                except ConnectionRefusedError:
                    time.sleep(0.02)  # QEMU not listening yet: poll, bounded by the deadline
            err = self.stop()
            print(f"{self.board}: qemu did not accept on port {port}: {err}", file=sys.stderr)
        raise AssertionError(f"{self.board}: could not start qemu-system-arm")

    def stop(self):
        """Kills QEMU (it never exits by itself); returns its stderr."""
        if self.sock:
            self.sock.close()
            self.sock = None
        err = b""
        if self.proc:
            if self.proc.poll() is None:
                self.proc.kill()
            err = self.proc.communicate(timeout=10)[1]
            self.proc = None
        return err.decode(errors="replace").strip()

    def read_exact(self, n):
        deadline = time.monotonic() + STEP_TIMEOUT
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"{self.board}: {len(self.buf)} of {n} bytes before the deadline"
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            assert chunk, f"{self.board}: the UART connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_match(self, regex):
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            m = regex.match(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            assert left > 0, f"{self.board}: no {regex.pattern!r} in {self.buf[:200]!r}"
            self.sock.settimeout(left)
            chunk = self.sock.recv(4096)
            assert chunk, f"{self.board}: the UART connection closed"
            self.buf += chunk

    def echo(self, data):
        self.sock.sendall(data)
        got = self.read_exact(len(data))
        assert got == data, f"{self.board}: echo differs at byte " \
            f"{next(i for i in range(len(data)) if got[i] != data[i])}"

    def report(self):
        """Sends the report sequence; returns (hwm, stack, ms)."""
        self.echo(REPORT_SEQ)
        m = self.read_match(REPORT_RE)
        return int(m[1]), int(m[2]), int(m[3])


def check_board(board, elf):
    b = Board(board, elf)
    try:
        b.start()
        b.read_match(re.compile(rb"kubeedge-c echo on " + board.encode() + rb"\r\n"))
        nbytes = int(b.read_match(re.compile(rb"nanopb OK (\d+)\r\n"))[1])
        assert nbytes > 0

        b.echo(b"\x00\x01\x00\x01\x01\x00")
        b.echo(bytes(range(256)))
        burst = bytes((i * 37 + 11) & 0xFF for i in range(1024))
        assert REPORT_SEQ not in burst
        b.echo(burst)
        # The receive ring is 256 bytes: a burst larger than it, twice,
        # proves that back-pressure (the masked interrupt) loses nothing.
        b.echo(burst + bytes(reversed(burst)))

        hwm, stack, ms0 = b.report()
        t0 = time.monotonic()
        assert 0 < hwm < stack, f"{board}: high-water {hwm} of {stack}"
        # The tick against the host's clock: an interval to measure, not a
        # wait for something to happen.
        time.sleep(0.5)
        _, _, ms1 = b.report()
        host_ms = (time.monotonic() - t0) * 1000.0
        fw_ms = ms1 - ms0
        assert 0.5 * host_ms - 50 <= fw_ms <= 1.5 * host_ms + 50, \
            f"{board}: board_millis advanced {fw_ms} ms in {host_ms:.0f} ms of host time"
        print(f"{board}: banner ok, nanopb OK ({nbytes} B frame), echo ok "
              f"(every byte value, 2 x 1 KiB bursts), stack high-water {hwm} B of {stack} B "
              f"reserved, tick {fw_ms} ms over {host_ms:.0f} ms host")
    finally:
        b.stop()


def main():
    fw_dir = os.environ.get("KE_FIRMWARE_DIR", "")
    if not shutil.which("qemu-system-arm"):
        print("SKIP: qemu-system-arm is not installed (tools/deps.sh)")
        return 77
    elfs = {bd: os.path.join(fw_dir, bd, "echo.elf") for bd in BOARDS}
    missing = [e for e in elfs.values() if not os.path.isfile(e)]
    if not fw_dir or missing:
        print(f"SKIP: firmware images missing ({missing or 'KE_FIRMWARE_DIR unset'}): "
              "arm-none-eabi-gcc not installed?")
        return 77
    for bd in BOARDS:
        check_board(bd, elfs[bd])
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
