"""Wake-ups for SQLite: waiters of this process at once, and waiters of other processes on the same file.

Why: SQLite has no LISTEN/NOTIFY, so a worker in another process used to notice new jobs only when its poll
interval ran out (half a second on average at the default 1 s). The processes sharing a database file are on one
machine, so the kernel can carry the news instead: each process that waits for jobs binds a Unix datagram socket
in a directory beside the database (`<db>-wake/`, next to SQLite's own `-wal` and `-shm`), and a process that made
jobs claimable sends one tiny datagram to every other socket there, after its commit. A thread blocked in `recv`
turns each datagram into a LocalWaker notify, so the worker wakes within a fraction of a millisecond, without any
polling while idle. docs/sqlite.md has the whole story; the points that shape this code:

* **One hub per database file per process** (`hub_for`): every SQLiteStore of the process on that file shares its
  LocalWaker and its socket. A socket is bound only while some store of the process waits (`listen` … `unlisten`),
  so processes that only enqueue (an API server, the CLI) cost senders nothing.
* **Sending is cheap and never blocks**: the listing of the directory is cached; a sender looks at the directory
  (one `stat`) at most every CHECK_NS, and reads it again only when it changed (inode or mtime) or changed so
  recently that the file system's coarse timestamps could hide a second change. A socket bound just after a look
  is therefore not told about commits of the next CHECK_NS: its process's waits end by `horizon` (twice that after
  the bind) instead, and the claims that follow find those jobs. Sends go through one socket connected to each
  peer, non-blocking; a full receive queue (EAGAIN) means that process already has a wake-up pending, and the
  datagram is dropped.
* **Stale sockets** of processes that died without closing answer ECONNREFUSED; the sender removes them.
* **Nothing breaks without it**: no AF_UNIX datagram sockets (Windows), a wake path that cannot be created, or any
  OSError while setting up → logged once, and this process's waiters poll exactly as before.
* **sun_path is short** (108 bytes on Linux, 104 on macOS): when `<db>-wake/<name>` would not fit, every process
  uses a directory under the temp dir named after a hash of the database's real path instead (the choice depends
  only on that path, so all processes agree).
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import logging
import os
import re
import secrets
import socket
import stat
import tempfile
import threading
import time

from conveyor.store.wake import LocalWaker

__all__ = ["WakeHub", "hub_for", "remove_wake_directory", "wake_directory"]

log = logging.getLogger("conveyor.store.sqlite")

SUFFIX = "-wake"
# The longest socket address every Unix accepts (macOS: 104 bytes of sun_path with the NUL), so that the choice
# between the directory beside the database and the temp-dir fallback is the same on every platform.
MAX_ADDRESS = 103
# A socket's name: `<pid>-<8 hex>.sock`; at most 24 characters with a 10-digit pid.
_NAME = re.compile(r"\d{1,10}-[0-9a-f]{8}\.sock")
_NAME_MAX = 24
# A listing taken soon after the directory's mtime may miss a later change that gets the same mtime (file times come
# from a coarse clock, one kernel tick of at most 10 ms; some file systems keep whole or even seconds): until that
# window has passed, list again at every look. Whole-second mtimes are taken for a coarse file system.
RACY_NS = 50_000_000
RACY_COARSE_NS = 2_000_000_000
# How long a sender trusts its cached listing before it looks at the directory again. Looking costs a `stat`
# (several µs on the writer thread, a noticeable part of a single enqueue); the price of trusting is that a socket
# bound meanwhile hears nothing for that long, which `WakeHub.horizon` makes up for on the receiving side.
CHECK_NS = 25_000_000
_WAKE = b"w"
_DONTWAIT: int = getattr(socket, "MSG_DONTWAIT", 0)
_POLLING_HERE = "workers of this process find jobs enqueued by other processes when their poll interval runs out"


def _supported() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "SOCK_DGRAM")


def wake_directory(db_path: str) -> str | None:
    """Where the processes on `db_path` (a real path) put their wake sockets; None where Unix datagram sockets do
    not exist. Depends only on the path (and the temp dir), so every process on the file picks the same one."""
    if not _supported():
        return None
    beside = db_path + SUFFIX
    if len(os.fsencode(beside)) + 1 + _NAME_MAX <= MAX_ADDRESS:
        return beside
    digest = hashlib.sha256(os.fsencode(db_path)).hexdigest()[:20]
    fallback = os.path.join(tempfile.gettempdir(), f"conveyor-wake-{digest}")
    if len(os.fsencode(fallback)) + 1 + _NAME_MAX <= MAX_ADDRESS:
        return fallback
    return None


class _Receiver:
    """The bound socket of this process and the thread that reads it.

    Why a thread rather than `loop.add_reader`: waiters may sit on several event loops (a worker's, the sync API's
    home loop), which come and go; a thread blocked in `recv` serves all of them through LocalWaker (thread-safe)
    and needs no loop to stay alive. Only the thread closes the socket (after `stop`), so no other thread can ever
    act on a closed and reused descriptor."""

    def __init__(self, sock: socket.socket, address: str, waker: LocalWaker) -> None:
        self.sock = sock
        self.address = address
        self._waker = waker
        self._lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="conveyor-sqlite-wake", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sock = self.sock
        try:
            while not self._stopping:
                sock.recv(16)  # blocks; any datagram (even an empty one) is a wake-up
                if self._stopping:
                    break
                if _DONTWAIT:  # several senders or commits: one notify for all that queued up
                    try:
                        while True:
                            sock.recv(16, _DONTWAIT)
                    except OSError:
                        pass
                self._waker.notify()
        except OSError as exc:
            if not self._stopping:
                log.info("SQLite wake-up socket %s failed (%s); %s", self.address, exc, _POLLING_HERE)
        finally:
            with self._lock:
                self._closed = True
                sock.close()

    def stop(self) -> None:
        """End the thread (shutdown wakes its `recv` on Linux; the datagram to itself does elsewhere)."""
        self._stopping = True
        with self._lock:
            if self._closed:
                return
            if _DONTWAIT:
                try:
                    self.sock.sendto(_WAKE, _DONTWAIT, self.address)
                except OSError:
                    pass  # a full queue wakes it just as well
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def forget(self) -> None:
        """In a forked child: the thread is not there, the socket belongs to the parent. Drop our copy of the
        descriptor without touching the parent's file."""
        self._stopping = self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class WakeHub:
    """Wake-ups for one database file in this process: `local` (LocalWaker) for this process, a socket for others.

    `notify` is called after a commit that made jobs claimable, from the store's writer thread; `listen` /
    `unlisten` by stores whose callers wait for jobs."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path
        self.local = LocalWaker()
        self.directory = wake_directory(db_path)
        self._shared_dir = self.directory is not None and self.directory != db_path + SUFFIX  # the temp fallback
        self._lock = threading.Lock()
        self._listeners = 0
        self._receiver: _Receiver | None = None
        # Other processes' sockets, each with a socket of ours connected to it (see _connect).
        self._peers: dict[str, socket.socket] = {}
        self._listed: tuple[int, int] | None = None  # (inode, mtime_ns) of the directory when listed
        self._racy = False
        self._checked = time.monotonic_ns() - CHECK_NS  # when the directory was last looked at
        self._warned = False
        #: Until this `time.monotonic()`, senders may not know this process's socket yet (see CHECK_NS): waits
        #: must end by then, so that the claim after them finds what those senders committed.
        self.horizon = 0.0

    @property
    def address(self) -> str | None:
        """This process's socket, while it listens."""
        receiver = self._receiver
        return None if receiver is None else receiver.address

    # ---- receiving --------------------------------------------------------------------------------------------

    def listen(self) -> bool:
        """A store of this process starts waiting: make sure the socket is bound. True when other processes can
        now wake this one; False when waiters here must poll (see the module docstring)."""
        with self._lock:
            self._listeners += 1
            if self._receiver is not None:
                return True
            if self.directory is None:
                self._warn("no Unix datagram sockets on this platform, or no room for their address", _POLLING_HERE)
                return False
            try:
                sock, address = self._bind(self.directory)
            except OSError as exc:
                self._warn(f"cannot bind a socket in {self.directory}: {exc}", _POLLING_HERE)
                return False
            self._receiver = _Receiver(sock, address, self.local)
            self.horizon = time.monotonic() + 2 * CHECK_NS / 1e9
            log.debug("SQLite wake-up socket %s for %s", address, self.path)
            return True

    def unlisten(self) -> None:
        """A store that listened closes: the last one removes this process's socket (and the directory if empty)."""
        with self._lock:
            self._listeners = max(0, self._listeners - 1)
            receiver = self._receiver
            if self._listeners or receiver is None:
                return
            self._receiver = None
            receiver.stop()
            _unlink(receiver.address)
            if self.directory is not None:
                try:
                    os.rmdir(self.directory)  # fails while other processes have sockets there: fine
                except OSError:
                    pass

    def _bind(self, directory: str) -> tuple[socket.socket, str]:
        try:
            db = os.stat(self.path)
            mode: int | None = stat.S_IMODE(db.st_mode)
            owners = {os.geteuid(), db.st_uid}
        except OSError:
            mode, owners = None, {os.geteuid()}
        for _ in range(5):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # first: where that fails, leave no directory
            address = os.path.join(directory, f"{os.getpid()}-{secrets.token_hex(4)}.sock")
            try:
                created = _make_directory(directory, mode, owners if self._shared_dir else None)
                sock.bind(address)
            except FileNotFoundError:
                sock.close()  # the last waiter of another process removed the directory just now: again
                continue
            except BaseException:
                sock.close()
                raise
            if mode is not None:
                try:
                    os.chmod(address, mode & 0o666)  # connecting needs write permission on the socket file
                except OSError:
                    pass
            if created:
                log.debug("created the SQLite wake-up directory %s", directory)
            return sock, address
        raise OSError(errno.ENOENT, "the directory kept disappearing", directory)

    # ---- sending ------------------------------------------------------------------------------------------

    def notify(self) -> None:
        """Jobs may have become claimable (called after the commit): wake waiters here and in other processes."""
        self.local.notify()
        self.notify_others()

    def notify_others(self) -> None:
        """One datagram to each other process's socket; never blocks, never raises."""
        directory = self.directory
        if directory is None:
            return
        now = time.monotonic_ns()
        with self._lock:
            if now - self._checked >= CHECK_NS:
                self._checked = now  # taken before the look: trusted for CHECK_NS from a moment it was still true
                self._look(directory)
            if not self._peers:
                return
            gone: list[str] | None = None
            for address, sock in self._peers.items():
                try:
                    sock.send(_WAKE)
                except (BlockingIOError, InterruptedError):
                    pass  # its queue is full: a wake-up is already pending there
                except OSError as exc:
                    if exc.errno in (errno.ENOBUFS, errno.ENOMEM):
                        continue  # short of memory for a moment: the next notify tries again
                    # ECONNREFUSED: its process died without closing (or closed just now); EPIPE, ENOTCONN: it is
                    # closing. Either way it hears nothing more from this socket.
                    if exc.errno == errno.ECONNREFUSED:
                        _remove_stale(address)
                    gone = [*(gone or ()), address]
            for address in gone or ():
                _close(self._peers.pop(address))

    def _look(self, directory: str) -> None:
        """Refresh the peers if the directory changed (the stat comes first, so nothing newer is missed for good)."""
        try:
            st = os.stat(directory)
        except OSError:
            self._listed = None  # no directory: nobody listens
            self._drop_peers()
            return
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._listed and not self._racy:
            return
        try:
            names = os.listdir(directory)
        except OSError:
            names = []
        own = self.address
        current = {path for path in (os.path.join(directory, n) for n in names if _NAME.fullmatch(n)) if path != own}
        for address in [a for a in self._peers if a not in current]:
            _close(self._peers.pop(address))
        for address in current:
            if address not in self._peers:
                sock = _connect(address)
                if sock is not None:
                    self._peers[address] = sock
        self._listed = key
        mtime = key[1]
        self._racy = time.time_ns() - mtime < (RACY_COARSE_NS if mtime % 1_000_000_000 == 0 else RACY_NS)

    def _drop_peers(self) -> None:
        peers, self._peers = self._peers, {}
        for sock in peers.values():
            _close(sock)

    # ---- odds and ends ------------------------------------------------------------------------------------

    def _warn(self, reason: str, consequence: str) -> None:
        if not self._warned:
            self._warned = True
            log.info("SQLite cross-process wake-ups are off for %s (%s); %s", self.path, reason, consequence)

    def after_fork(self) -> None:
        """In a forked child: start from scratch (no socket, no waiters of the parent's loops, no lock held by a
        thread that is not here)."""
        self._lock = threading.Lock()
        self.local = LocalWaker()
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.forget()
        self._listeners = 0
        self._listed = None
        self._drop_peers()  # our copies only: the parent's sockets stay connected
        self._checked = time.monotonic_ns() - CHECK_NS

    def remove_own_socket(self) -> None:
        receiver = self._receiver
        if receiver is not None:
            _unlink(receiver.address)
        if self._lock.acquire(timeout=1):  # a writer thread may be sending right now; never hang the exit
            try:
                self._drop_peers()
            finally:
                self._lock.release()


def _make_directory(directory: str, mode: int | None, owners: set[int] | None) -> bool:
    """Create the wake directory if needed; True if we created it. Raises OSError when it cannot be used.

    `mode` is the database file's permission bits: the directory and sockets get the same (SQLite does this for its
    -wal and -shm files), so that every user who may write the database may also wake its workers. `owners`, for
    the fallback in the shared temp dir: a directory there of another user is not ours to use."""
    try:
        os.mkdir(directory, 0o700 if mode is None else 0o700 | mode)
    except FileExistsError:
        st = os.lstat(directory)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory", directory) from None
        if owners is not None and st.st_uid not in owners:
            raise PermissionError(errno.EPERM, "owned by another user", directory) from None
        return False
    if mode is not None:
        try:
            os.chmod(directory, mode | ((mode & 0o444) >> 2))  # x wherever r: directories need it to be entered
        except OSError:
            pass
    return True


def _connect(address: str) -> socket.socket | None:
    """A non-blocking socket connected to a peer's socket, or None if it cannot be reached.

    Why connected, one per peer: a send then skips the path lookup, and the datagrams a peer has not read yet are
    charged to that peer's socket alone. (With one socket for all, two dozen stopped processes holding their ten
    unread datagrams each would use up its send buffer, and every wake-up would fail with EAGAIN.)"""
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        sock.setblocking(False)
        sock.connect(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ECONNREFUSED:
            _remove_stale(address)  # its process died without closing
        return None  # also: gone meanwhile, another user's socket (EACCES), a stream socket (EPROTOTYPE)
    return sock


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _remove_stale(path: str) -> None:
    """A socket nobody reads any more goes; anything else with such a name (a plain file answers ECONNREFUSED too)
    is not ours to delete."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_wake_directory(db_path: str) -> None:
    """`SQLiteStore.drop`: remove the wake directory of a database being deleted (its sockets, then the directory);
    anything in it that is not a wake socket stays, and so does the directory then."""
    directory = wake_directory(db_path)
    if directory is None or not os.path.isdir(directory):
        return
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if _NAME.fullmatch(name):
            _remove_stale(os.path.join(directory, name))
    try:
        os.rmdir(directory)
    except OSError:
        pass


_hubs: dict[str, WakeHub] = {}
_hubs_lock = threading.Lock()


def hub_for(db_path: str) -> WakeHub:
    """The hub of a database file (its real path) in this process: every store on that file shares it."""
    with _hubs_lock:
        hub = _hubs.get(db_path)
        if hub is None:
            hub = _hubs[db_path] = WakeHub(db_path)
        return hub


def _reset_after_fork() -> None:
    global _hubs_lock
    _hubs_lock = threading.Lock()
    for hub in _hubs.values():
        hub.after_fork()


def _remove_own_sockets() -> None:
    """At exit, remove this process's sockets even if no store was closed (saves the next sender a cleanup)."""
    for hub in list(_hubs.values()):
        hub.remove_own_socket()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(_remove_own_sockets)
