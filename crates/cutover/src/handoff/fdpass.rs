//! Messages with file descriptors attached, over a unix stream socket (`SCM_RIGHTS`).
//!
//! One message is a frame: an 8-byte header (the body's length, then the number of fds, both
//! u32 big-endian) and the body. The fds ride on the frame's first `sendmsg`, so they arrive
//! with its first bytes. The kernel never hands out two sends' fds in one `recvmsg` on a stream
//! socket, and [`recv`] reads exactly one frame and nothing of the next, so fds cannot land in
//! the wrong message.
//!
//! Received fds are close-on-exec from the moment they exist (`MSG_CMSG_CLOEXEC`): the release
//! processes this daemon starts must not inherit the public sockets. When receiving fails (the
//! kernel truncated the fds, the count is not the announced one, the peer is gone mid-frame),
//! every fd that did arrive is closed: they are collected as `OwnedFd`s, dropped with the error.
//!
//! [`send`] and [`recv`] are not cancel safe: a future dropped mid-frame leaves the stream
//! between two halves of a frame, and nothing can be read from it sensibly afterwards.

use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrLike,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// The largest body one message may carry (the sockets' description is a few KiB of JSON).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The most fds one message may carry: the kernel's own limit for one `sendmsg` (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

const HEADER_BYTES: usize = 8;

/// One message as it arrived.
#[derive(Debug)]
pub struct Received {
    pub message: Vec<u8>,
    /// In the order they were sent; close-on-exec.
    pub fds: Vec<OwnedFd>,
}

/// Why a message was refused. It travels inside the `io::Error` (find it with
/// `err.get_ref()` and `downcast_ref`), whose kind is `InvalidInput` when sending and
/// `InvalidData` when receiving.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("a handoff message of {len} bytes is over the limit of {max} bytes", max = MAX_MESSAGE_BYTES)]
    MessageTooLarge { len: usize },
    #[error("{count} file descriptors in one handoff message is over the limit of {max}", max = MAX_FDS)]
    TooManyFds { count: usize },
    #[error("the handoff message announced {announced} file descriptors but {arrived} arrived")]
    FdCountMismatch { announced: usize, arrived: usize },
    #[error(
        "the kernel truncated the file descriptors of a handoff message ({arrived} arrived \
         and were closed): is this process out of file descriptors?"
    )]
    FdsTruncated { arrived: usize },
}

fn refused(kind: io::ErrorKind, why: FrameError) -> io::Error {
    io::Error::new(kind, why)
}

/// Sends `message` with `fds` attached, as one frame, waiting for room in the socket as needed.
///
/// The fds stay open here: the receiver gets duplicates of them.
pub async fn send(sock: &UnixStream, message: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let refuse = |why| Err(refused(io::ErrorKind::InvalidInput, why));
    if message.len() > MAX_MESSAGE_BYTES {
        return refuse(FrameError::MessageTooLarge { len: message.len() });
    }
    if fds.len() > MAX_FDS {
        return refuse(FrameError::TooManyFds { count: fds.len() });
    }
    let header = encode_header(message.len(), fds.len());
    let raw_fds: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let total = HEADER_BYTES + message.len();
    let mut sent = 0;
    while sent < total {
        // Once any byte of the frame is out, the fds went with it.
        let attach: &[RawFd] = if sent == 0 { &raw_fds } else { &[] };
        let result = sock
            .async_io(Interest::WRITABLE, || {
                send_chunk(sock.as_raw_fd(), &header, message, sent, attach)
            })
            .await;
        match result {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the handoff socket accepted no bytes",
                ))
            }
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `sendmsg` of what is left of the frame after its first `sent` bytes.
fn send_chunk(
    sock: RawFd,
    header: &[u8; HEADER_BYTES],
    message: &[u8],
    sent: usize,
    fds: &[RawFd],
) -> io::Result<usize> {
    let (header_left, message_left) = match sent.checked_sub(HEADER_BYTES) {
        None => (&header[sent..], message),
        Some(body_sent) => (&[][..], &message[body_sent..]),
    };
    let iov = [IoSlice::new(header_left), IoSlice::new(message_left)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    // MSG_NOSIGNAL: a dead peer is an EPIPE for the caller, not a SIGPIPE for the process.
    Ok(socket::sendmsg::<()>(
        sock,
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?)
}

/// Receives one whole frame. The peer closing the socket before the frame is complete
/// (including before it began) is `UnexpectedEof`: that is how a crashed peer shows.
pub async fn recv(sock: &UnixStream) -> io::Result<Received> {
    recv_with_room(sock, MAX_FDS).await
}

/// [`recv`] with room for `fd_room` fds per `recvmsg` (less than [`MAX_FDS`] only in tests, to
/// make the kernel truncate).
async fn recv_with_room(sock: &UnixStream, fd_room: usize) -> io::Result<Received> {
    let mut fds = Vec::new();
    let mut header = [0; HEADER_BYTES];
    read_exact(sock, &mut header, fd_room, &mut fds).await?;
    let (len, announced) = decode_header(header)?;
    let mut message = vec![0; len];
    read_exact(sock, &mut message, fd_room, &mut fds).await?;
    if fds.len() != announced {
        let arrived = fds.len();
        return Err(refused(
            io::ErrorKind::InvalidData,
            FrameError::FdCountMismatch { announced, arrived },
        ));
    }
    Ok(Received { message, fds })
}

/// Fills `buf`, adding any fds that come with its bytes to `fds`.
async fn read_exact(
    sock: &UnixStream,
    buf: &mut [u8],
    fd_room: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let result = sock
            .async_io(Interest::READABLE, || {
                recv_chunk(sock.as_raw_fd(), &mut buf[filled..], fd_room, fds)
            })
            .await;
        match result {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the handoff peer closed the socket before a whole message arrived",
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One `recvmsg` into `buf` with room for `fd_room` fds, which are added to `fds`.
///
/// Written against libc rather than nix's `recvmsg`: nix refuses to decode a truncated control
/// area (`MSG_CTRUNC`), yet the fds the kernel did install in it are ours to close.
fn recv_chunk(
    sock: RawFd,
    buf: &mut [u8],
    fd_room: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    // SAFETY: CMSG_SPACE is arithmetic.
    let control_bytes =
        unsafe { libc::CMSG_SPACE((fd_room * mem::size_of::<RawFd>()) as libc::c_uint) } as usize;
    // In u64 words: the control area must be aligned for `cmsghdr`.
    let mut control = vec![0u64; control_bytes.div_ceil(mem::size_of::<u64>())];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data, and all zeros is an empty one.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_bytes as _;
    // SAFETY: msg points at `iov` (over `buf`) and `control`, which outlive the call and are as
    // long as msg says.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let before = fds.len();
    // SAFETY: the kernel has just filled msg's control area.
    unsafe { take_rights(&msg, fds) };
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        let arrived = fds.len() - before;
        return Err(refused(
            io::ErrorKind::InvalidData,
            FrameError::FdsTruncated { arrived },
        ));
    }
    Ok(n as usize)
}

/// Takes ownership of the fds in every `SCM_RIGHTS` message of `msg`'s control area.
///
/// # Safety
/// `msg` must have just been filled by `recvmsg`, so that its control area holds well-formed
/// messages and the fds in them belong to nobody yet.
unsafe fn take_rights(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY (all blocks): CMSG_FIRSTHDR and CMSG_NXTHDR return null or a header inside the
    // control area, whose data the kernel wrote; the fd numbers may be unaligned.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while let Some(header) = unsafe { cmsg.as_ref() } {
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            let data = unsafe { libc::CMSG_DATA(cmsg) }.cast::<RawFd>();
            // size_t with glibc but socklen_t with musl: the cast is not always a no-op.
            #[allow(clippy::unnecessary_cast)]
            let cmsg_len = header.cmsg_len as usize;
            let data_bytes = cmsg_len.saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
            for i in 0..data_bytes / mem::size_of::<RawFd>() {
                let fd = unsafe { data.add(i).read_unaligned() };
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
}

fn encode_header(len: usize, fd_count: usize) -> [u8; HEADER_BYTES] {
    // Both fit: `send` checked them against limits far below u32::MAX.
    let [a, b, c, d] = (len as u32).to_be_bytes();
    let [e, f, g, h] = (fd_count as u32).to_be_bytes();
    [a, b, c, d, e, f, g, h]
}

/// The body's length and the number of fds announced, each within its limit.
fn decode_header(header: [u8; HEADER_BYTES]) -> io::Result<(usize, usize)> {
    let [a, b, c, d, e, f, g, h] = header;
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let fd_count = u32::from_be_bytes([e, f, g, h]) as usize;
    let refuse = |why| Err(refused(io::ErrorKind::InvalidData, why));
    if len > MAX_MESSAGE_BYTES {
        return refuse(FrameError::MessageTooLarge { len });
    }
    if fd_count > MAX_FDS {
        return refuse(FrameError::TooManyFds { count: fd_count });
    }
    Ok((len, fd_count))
}

/// A connected pair for handing sockets to a child process: the parent's end (close-on-exec,
/// non-blocking, registered with tokio, so call this inside the runtime) and the child's end,
/// which is *not* close-on-exec so that the child inherits it, and left blocking for it.
///
/// Drop the child's end in the parent as soon as the child is spawned: while the parent holds
/// it, the child's death does not close the peer and [`recv`] waits instead of reporting
/// `UnexpectedEof`. Until then, any other process spawned by this one inherits the child's end
/// too, with the same effect for as long as that process lives.
pub fn socketpair_for_child() -> io::Result<(UnixStream, OwnedFd)> {
    let (parent, child) = socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    fcntl(child.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    let parent = std::os::unix::net::UnixStream::from(parent);
    parent.set_nonblocking(true)?;
    Ok((UnixStream::from_std(parent)?, child))
}

/// The child's end of [`socketpair_for_child`], taken over in the child from the number its
/// parent passed on. It becomes close-on-exec (the releases this process starts must not
/// inherit it) and non-blocking; call this inside the runtime.
///
/// Anything but an open unix stream socket is refused and left open, so that a wrong number
/// fails here, naming it, rather than in the first `recv`. Otherwise the fd is owned by the
/// returned stream: call this once, with a number nothing else in the process uses.
pub fn from_inherited_fd(fd: RawFd) -> io::Result<UnixStream> {
    let refuse = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let failed = |what: &str, e: nix::Error| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("inherited handoff fd {fd}: {what}: {e}"),
        )
    };
    if fd < 0 {
        return Err(refuse(format!(
            "inherited handoff fd {fd} is not a valid number"
        )));
    }
    fcntl(fd, FcntlArg::F_GETFD).map_err(|e| failed("not open", e))?;
    // SAFETY: the number is open (checked just above) and only borrowed for the checks.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind =
        socket::getsockopt(&borrowed, sockopt::SockType).map_err(|e| failed("not a socket", e))?;
    let family = socket::getsockname::<SockaddrStorage>(fd)
        .map_err(|e| failed("reading its address", e))?
        .family();
    if kind != SockType::Stream || family != Some(AddressFamily::Unix) {
        return Err(refuse(format!(
            "inherited handoff fd {fd} is a {kind:?} socket of family {family:?}, \
             not a unix stream socket"
        )));
    }
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| failed("set close-on-exec", e))?;
    // SAFETY: a unix stream socket the parent passed for this use; the caller vouches that
    // nothing else owns it (see above).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let stream = std::os::unix::net::UnixStream::from(owned);
    stream.set_nonblocking(true)?;
    UnixStream::from_std(stream)
}

#[cfg(test)]
#[path = "fdpass_tests.rs"]
mod tests;
