# cython: language_level=3, embedsignature=True, boundscheck=False, wraparound=False
"""Compiled core: copy one HTTP response body into a file at an offset.

Python decides (which URL, which range, retries); this module only moves bytes.
For a plain-TCP connection it reads straight from the socket fd into the caller's
reused buffer (``recv``) or moves pages socket -> pipe -> file (``splice``), and
``pwrite``s at the final offset, all with the GIL released. Other connections (TLS,
chunked bodies) go through ``http.client``'s ``readinto`` (which also releases the GIL
while it waits) with the ``pwrite`` still done here without the GIL.

The pure-Python twin is :mod:`dfrepo._fastio_py`; both raise the same errors.
"""

from libc.errno cimport errno, EINTR, EAGAIN, EINVAL

# EWOULDBLOCK == EAGAIN on Linux; only EAGAIN is tested.
from libc.string cimport strerror
from libc.stdint cimport int64_t

import socket

from dfrepo.errors import IncompleteDownloadError, TransferError

IMPLEMENTATION = "cython"

cdef extern from "<sys/types.h>":
    ctypedef long ssize_t
    ctypedef long off_t

cdef extern from "<unistd.h>" nogil:
    ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
    ssize_t read(int fd, void *buf, size_t count)
    int pipe2(int *fds, int flags)
    int close(int fd)

cdef extern from "<fcntl.h>" nogil:
    enum: O_CLOEXEC
    enum: O_NONBLOCK
    enum: F_SETPIPE_SZ
    int fcntl(int fd, int cmd, ...)
    ssize_t splice(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned int flags)
    enum: SPLICE_F_MOVE
    enum: SPLICE_F_NONBLOCK
    enum: SPLICE_F_MORE

cdef extern from "<sys/socket.h>" nogil:
    ssize_t recv(int sockfd, void *buf, size_t len, int flags)
    int setsockopt(int sockfd, int level, int optname, const void *optval, unsigned int optlen)
    enum: SOL_SOCKET
    enum: SO_RCVLOWAT

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN

#: SO_RCVLOWAT while a body streams: poll wakes once this much is buffered (or the body's
#: remainder, if smaller). Fewer wake-ups and larger writes cut the system time per byte
#: (benchmarks/results: loopback CPU-s/GiB); the socket is reset to 1 before it is reused.
DEF LOWAT_MAX = 262144
#: How long a wait for LOWAT_MAX bytes may take before any byte will do (a slow sender
#: must not look like a stalled one; a stall still takes the full read timeout).
DEF LOWAT_WAIT_MS = 20

# Result codes of the nogil helpers (negative values are -errno).
cdef enum:
    R_EOF = -100000
    R_TIMEOUT = -100001

MODES = ("auto", "readinto", "recv", "splice")


cdef int _write_all(int fd, const char *buf, size_t n, off_t off) noexcept nogil:
    """pwrite until done; retries short writes and EINTR. Returns 0 or -errno."""
    cdef ssize_t w
    while n > 0:
        w = pwrite(fd, buf, n, off)
        if w < 0:
            if errno == EINTR:
                continue
            return -errno
        buf += w
        n -= <size_t>w
        off += w
    return 0


cdef int _wait_readable(int sock, int timeout_ms) noexcept nogil:
    cdef pollfd p
    cdef int r
    p.fd = sock
    p.events = POLLIN
    p.revents = 0
    while True:
        r = poll(&p, 1, timeout_ms)
        if r > 0:
            return 0
        if r == 0:
            return R_TIMEOUT
        if errno != EINTR:
            return -errno


cdef inline void _set_lowat(int sock, int *current, long long want) noexcept nogil:
    """Wake up only when *want* bytes (capped) can be read: fewer, larger reads and writes."""
    cdef int v = <int>(want if want < LOWAT_MAX else LOWAT_MAX)
    if v < 1:
        v = 1
    if v != current[0]:
        setsockopt(sock, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(int))
        current[0] = v


cdef int _wait_data(int sock, int timeout_ms, int *lowat) noexcept nogil:
    """Wait until the socket is readable: first for the low-water mark (briefly), then for
    any byte (up to the read timeout)."""
    cdef int r
    if lowat[0] > 1:
        r = _wait_readable(sock, LOWAT_WAIT_MS if timeout_ms < 0 or timeout_ms > LOWAT_WAIT_MS else timeout_ms)
        if r != R_TIMEOUT:
            return r
        _set_lowat(sock, lowat, 1)
    return _wait_readable(sock, timeout_ms)


cdef ssize_t _recv_fill(int sock, char *buf, size_t want, int timeout_ms, int *lowat) noexcept nogil:
    """Fill buf with up to want bytes from sock. Returns bytes read (>0), R_EOF, R_TIMEOUT or -errno.

    A partial fill is returned as success; EOF/errors are only reported when nothing
    was read in this call, so the caller always writes what it got first.
    """
    cdef size_t got = 0
    cdef ssize_t r
    cdef int w
    while got < want:
        r = recv(sock, buf + got, want - got, 0)
        if r > 0:
            got += <size_t>r
            continue
        if r == 0:
            return <ssize_t>got if got else R_EOF
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            if got:
                return <ssize_t>got
            w = _wait_data(sock, timeout_ms, lowat)
            if w != 0:
                return w
            continue
        return <ssize_t>got if got else -errno
    return <ssize_t>got


cdef ssize_t _splice_in(int sock, int pipe_w, size_t want, int timeout_ms, int *lowat) noexcept nogil:
    """Move up to want bytes socket -> pipe. Returns bytes moved (>0) or an error code."""
    cdef ssize_t r
    cdef int w
    w = _wait_data(sock, timeout_ms, lowat)  # one large splice rather than many small ones
    if w != 0:
        return w
    while True:
        r = splice(sock, NULL, pipe_w, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE)
        if r > 0:
            return r
        if r == 0:
            return R_EOF
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            w = _wait_data(sock, timeout_ms, lowat)
            if w != 0:
                return w
            continue
        return -errno


cdef ssize_t _splice_out(int pipe_r, int fd, off_t pos, ssize_t inpipe, char *buf, size_t bufsize,
                         bint *no_splice) noexcept nogil:
    """Move the *inpipe* bytes in the pipe into the file at pos. Returns inpipe or an error code.

    If the destination file system cannot splice (EINVAL), the bytes are drained through
    *buf* with read + pwrite and *no_splice* is set, so the caller continues with recv.
    """
    cdef ssize_t r
    cdef ssize_t moved = 0
    while moved < inpipe:
        r = splice(pipe_r, NULL, fd, &pos, <size_t>(inpipe - moved), SPLICE_F_MOVE)
        if r > 0:
            moved += r
            continue
        if r < 0 and errno == EINTR:
            continue
        if r < 0 and errno == EINVAL:
            no_splice[0] = True
            return _drain_pipe(pipe_r, fd, pos, <size_t>(inpipe - moved), buf, bufsize, moved)
        return -errno if r < 0 else -5  # EIO: the pipe cannot be drained
    return moved


cdef ssize_t _drain_pipe(int pipe_r, int fd, off_t pos, size_t left, char *buf, size_t bufsize,
                         ssize_t moved) noexcept nogil:
    cdef ssize_t r
    cdef int w
    while left > 0:
        r = read(pipe_r, buf, left if left < bufsize else bufsize)
        if r < 0 and errno == EINTR:
            continue
        if r <= 0:
            return -errno if r < 0 else -5
        w = _write_all(fd, buf, <size_t>r, pos)
        if w:
            return w
        pos += r
        left -= <size_t>r
        moved += r
    return moved


cdef class _Pipe:
    """A per-thread pipe for splice, grown towards the buffer size as far as the kernel allows."""
    cdef int r
    cdef int w
    cdef readonly Py_ssize_t size

    def __cinit__(self, Py_ssize_t size):
        cdef int fds[2]
        cdef int got
        self.r = -1
        self.w = -1
        if pipe2(fds, O_CLOEXEC) != 0:
            raise OSError(errno, strerror(errno).decode())
        self.r = fds[0]
        self.w = fds[1]
        self.size = 65536
        while size >= 65536:
            got = fcntl(self.w, F_SETPIPE_SZ, <int>size)
            if got > 0:
                self.size = got
                break
            size //= 2  # unprivileged processes are capped by /proc/sys/fs/pipe-max-size

    def __dealloc__(self):
        if self.r >= 0:
            close(self.r)
            close(self.w)


cdef object _pipes = None


def _thread_pipe(Py_ssize_t size):
    global _pipes
    import threading
    if _pipes is None:
        _pipes = threading.local()
    p = getattr(_pipes, "pipe", None)
    if p is None:
        p = _Pipe(size)
        _pipes.pipe = p
    return p


cdef _raise_code(ssize_t code, object url, object rng, long long expected, long long received):
    if code == R_EOF:
        raise IncompleteDownloadError(
            f"connection closed after {received} of {expected} bytes",
            expected=expected, received=received, url=url, byte_range=rng)
    if code == R_TIMEOUT:
        raise socket.timeout("read timed out")
    raise OSError(-code, strerror(-code).decode())


cdef long long _advance(long long done, ssize_t got, int werr, object cursor,
                        object progress) except -1:
    """Account for one chunk of *got* bytes: raise the pwrite error *werr*, else move
    ``cursor.written`` past it and report it to *progress*; returns the new total."""
    if werr:
        raise OSError(-werr, strerror(-werr).decode())
    done += got
    cursor.written = done
    if progress is not None:
        progress(got)
    return done


def copy_body(object body, int fd, long long offset, long long length, object buf,
              object cursor, object progress=None, str mode="auto", object url=None,
              object byte_range=None, object lock=None):
    """Copy *length* body bytes of *body* (a :class:`dfrepo.engine.body.Body`) into *fd* at *offset*.

    :param length: bytes the body must hold, or -1 to read to the end (no Content-Length).
    :param buf: the caller's reused buffer; its size is the chunk size.
    :param cursor: an object with an int attribute ``written``, advanced after every chunk
        so a caller can resume after an exception from the first unwritten byte.
    :param progress: optional callable(bytes) called once per chunk.
    :param mode: with ``body.sock_fd >= 0``, ``splice`` moves socket -> pipe -> file,
        anything else reads it with ``recv``; without a socket ``body.readinto`` is used.
    :param lock: held around every write into *fd* (``acquire``/``release``; the wait
        releases the GIL): the writers of one file take turns in user space instead of
        spinning on its inode lock in the kernel. Reading the socket is not serialized.
    :returns: bytes written. Raises :class:`IncompleteDownloadError` on a short body,
        ``socket.timeout``/``OSError`` from the socket, ``OSError`` from pwrite.
    """
    cdef unsigned char[::1] view = buf
    cdef char *cbuf = <char *>&view[0]
    cdef size_t bufsize = <size_t>view.shape[0]
    cdef long long done = 0
    cdef long long remaining
    cdef ssize_t got
    cdef int werr
    cdef int sockfd = body.sock_fd
    cdef int timeout_ms
    cdef off_t pos
    cdef int pipe_r = -1, pipe_w = -1
    cdef bint use_splice
    cdef bint no_splice = False
    cdef size_t chunk
    cdef size_t want
    cdef int lowat = 1

    if mode not in MODES:
        raise ValueError(f"unknown io mode {mode!r}")
    # Body bytes already read together with the response head come first.
    pre = body.buffered
    if pre:
        pos = <off_t>(offset)
        if lock is not None:
            lock.acquire()
        try:
            werr = _write_all(fd, <const char *>pre, len(pre), pos)
        finally:
            if lock is not None:
                lock.release()
        done = _advance(done, len(pre), werr, cursor, progress)

    if sockfd >= 0 and length > 0:
        use_splice = mode == "splice"
        chunk = bufsize
        if use_splice:
            p = _thread_pipe(<Py_ssize_t>bufsize)
            pipe_r = (<_Pipe>p).r
            pipe_w = (<_Pipe>p).w
            chunk = min(bufsize, <size_t>(<_Pipe>p).size)
        timeout = body.timeout
        timeout_ms = -1 if timeout is None else <int>(timeout * 1000)
        try:
            while done < length:
                remaining = length - done
                pos = <off_t>(offset + done)
                want = <size_t>min(remaining, <long long>(chunk if use_splice and not no_splice else bufsize))
                with nogil:
                    _set_lowat(sockfd, &lowat, min(remaining, <long long>chunk))
                    if use_splice and not no_splice:
                        got = _splice_in(sockfd, pipe_w, want, timeout_ms, &lowat)
                    else:
                        got = _recv_fill(sockfd, cbuf, want, timeout_ms, &lowat)
                if got <= 0:
                    _raise_code(got, url, byte_range, length, done)
                if lock is not None:
                    lock.acquire()
                try:
                    with nogil:
                        if use_splice and not no_splice:
                            got = _splice_out(pipe_r, fd, pos, got, cbuf, bufsize, &no_splice)
                            werr = 0 if got > 0 else <int>got
                        else:
                            werr = _write_all(fd, cbuf, <size_t>got, pos)
                finally:
                    if lock is not None:
                        lock.release()
                done = _advance(done, got, werr, cursor, progress)
        finally:
            if lowat != 1:
                _set_lowat(sockfd, &lowat, 1)
        return done

    # Generic path: http.client fills our buffer (GIL released inside recv), we pwrite nogil.
    readinto = body.readinto
    mv = memoryview(buf)
    while length < 0 or done < length:
        want = bufsize if length < 0 else <size_t>min(length - done, <long long>bufsize)
        got = readinto(mv[:want])
        if got == 0:
            if length < 0:
                break
            _raise_code(R_EOF, url, byte_range, length, done)
        pos = <off_t>(offset + done)
        if lock is not None:
            lock.acquire()
        try:
            with nogil:
                werr = _write_all(fd, cbuf, <size_t>got, pos)
        finally:
            if lock is not None:
                lock.release()
        done = _advance(done, got, werr, cursor, progress)
    return done
