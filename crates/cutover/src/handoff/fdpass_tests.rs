use super::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, IntoRawFd};
use tokio::io::AsyncWriteExt;

fn is_cloexec(fd: &impl AsRawFd) -> bool {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFD).unwrap();
    FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
}

fn frame_error(err: &io::Error) -> Option<&FrameError> {
    err.get_ref()?.downcast_ref()
}

/// Close-on-exec, unlike `pipe()`: a child spawned by another test meanwhile must not hold
/// a write end open and make `all_writers_closed` wrong.
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// Whether every copy of a pipe's write end is closed (in this process and any other):
/// only then does a read of its read end see end of file rather than wait.
fn all_writers_closed(read_end: OwnedFd) -> bool {
    let flags = fcntl(read_end.as_raw_fd(), FcntlArg::F_GETFL).unwrap();
    let nonblocking = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    fcntl(read_end.as_raw_fd(), FcntlArg::F_SETFL(nonblocking)).unwrap();
    let mut byte = [0];
    match File::from(read_end).read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("nothing was written to the pipe"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("reading the pipe: {e}"),
    }
}

/// Writes raw bytes (with fds) as a peer that does not follow the framing would.
fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[RawFd]) {
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let n = socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(n, bytes.len());
}

#[tokio::test]
async fn passed_listeners_and_file_work_in_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Queued in the backlog before the handoff: the receiver must be able to accept it.
    let mut waiting_client = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
    waiting_client.write_all(b"ping").unwrap();
    let unix_path = dir.path().join("control.sock");
    let unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let file_path = dir.path().join("lock");
    std::fs::write(&file_path, "pid 42").unwrap();
    let file = File::open(&file_path).unwrap();

    let (a, b) = UnixStream::pair().unwrap();
    let description = br#"{"listeners":["web","control"],"lock":true}"#;
    send(&a, description, &[tcp.as_fd(), unix.as_fd(), file.as_fd()])
        .await
        .unwrap();
    // Only the received copies are left.
    drop((tcp, unix, file));
    let received = recv(&b).await.unwrap();

    assert_eq!(received.message, description);
    assert_eq!(received.fds.len(), 3);
    assert!(received.fds.iter().all(is_cloexec));
    let mut fds = received.fds.into_iter();

    let tcp = std::net::TcpListener::from(fds.next().unwrap());
    let (mut accepted, _) = tcp.accept().unwrap();
    let mut ping = [0; 4];
    accepted.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"ping");
    accepted.write_all(b"pong").unwrap();
    let mut pong = [0; 4];
    waiting_client.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"pong");

    let unix = std::os::unix::net::UnixListener::from(fds.next().unwrap());
    let mut client = std::os::unix::net::UnixStream::connect(&unix_path).unwrap();
    let (mut accepted, _) = unix.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut hello = [0; 5];
    accepted.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");

    let mut contents = String::new();
    File::from(fds.next().unwrap())
        .read_to_string(&mut contents)
        .unwrap();
    assert_eq!(contents, "pid 42");
}

#[tokio::test]
async fn a_message_larger_than_the_socket_buffer_arrives_whole() {
    let (a, b) = UnixStream::pair().unwrap();
    let big: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let (_, read_end) = pipe();
    let fds = [read_end.as_fd()];
    let (sent, received) = tokio::join!(send(&a, &big, &fds), recv(&b));
    sent.unwrap();
    let received = received.unwrap();
    assert!(
        received.message == big,
        "the 300 KiB body changed in transit"
    );
    assert_eq!(received.fds.len(), 1);
}

#[tokio::test]
async fn back_to_back_messages_keep_their_own_fds() {
    let (a, b) = UnixStream::pair().unwrap();
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    send(&a, b"first", &[w1.as_fd()]).await.unwrap();
    send(&a, b"", &[]).await.unwrap();
    send(&a, b"third", &[w2.as_fd(), w2.as_fd()]).await.unwrap();
    drop((w1, w2));

    let first = recv(&b).await.unwrap();
    assert_eq!(
        (first.message.as_slice(), first.fds.len()),
        (&b"first"[..], 1)
    );
    let second = recv(&b).await.unwrap();
    assert_eq!((second.message.as_slice(), second.fds.len()), (&b""[..], 0));
    let third = recv(&b).await.unwrap();
    assert_eq!(
        (third.message.as_slice(), third.fds.len()),
        (&b"third"[..], 2)
    );

    // Each message's fds are the ones sent with it: closing the first message's closes w1.
    drop(first);
    assert!(all_writers_closed(r1));
    assert!(!all_writers_closed(r2.try_clone().unwrap()));
    drop(third);
    assert!(all_writers_closed(r2));
}

#[tokio::test]
async fn the_most_fds_the_kernel_allows_all_arrive() {
    let (a, b) = UnixStream::pair().unwrap();
    let (_, w) = pipe();
    send(&a, b"many", &vec![w.as_fd(); MAX_FDS]).await.unwrap();
    let received = recv(&b).await.unwrap();
    assert_eq!(received.fds.len(), MAX_FDS);
    assert!(received.fds.iter().all(is_cloexec));
}

#[tokio::test]
async fn a_peer_gone_mid_message_is_unexpected_eof_and_its_fds_are_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    let (read_end, write_end) = pipe();
    // The header promises 100 bytes; 10 come, with the fd, and then the sender dies.
    let mut partial = encode_header(100, 1).to_vec();
    partial.extend([7; 10]);
    send_raw(&a, &partial, &[write_end.as_raw_fd()]);
    drop((a, write_end));

    let err = recv(&b).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(all_writers_closed(read_end), "the fd that arrived leaked");
}

#[tokio::test]
async fn a_peer_gone_before_sending_or_mid_header_is_unexpected_eof() {
    let (a, b) = UnixStream::pair().unwrap();
    drop(a);
    let err = recv(&b).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

    let (mut a, b) = UnixStream::pair().unwrap();
    a.write_all(&encode_header(5, 0)[..3]).await.unwrap();
    drop(a);
    let err = recv(&b).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}

#[tokio::test]
async fn fds_the_kernel_truncated_are_an_error_and_those_that_arrived_are_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    let (read_end, write_end) = pipe();
    let w = write_end.as_fd();
    send(&a, b"five", &[w, w, w, w, w]).await.unwrap();
    drop(write_end);

    // Room for one fd (two, with the control area's padding): the kernel installs what
    // fits, discards the rest and sets MSG_CTRUNC.
    let err = recv_with_room(&b, 1).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        matches!(frame_error(&err), Some(FrameError::FdsTruncated { arrived }) if *arrived > 0),
        "{err}"
    );
    assert!(all_writers_closed(read_end), "the fds that arrived leaked");
}

#[tokio::test]
async fn over_the_limits_is_refused_on_either_side() {
    let (a, b) = UnixStream::pair().unwrap();
    let (_, w) = pipe();
    let err = send(&a, b"", &vec![w.as_fd(); MAX_FDS + 1])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooManyFds { count: 254 })
    ));
    let err = send(&a, &vec![0; MAX_MESSAGE_BYTES + 1], &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::MessageTooLarge { .. })
    ));
    assert_eq!(
        err.to_string(),
        "a handoff message of 1048577 bytes is over the limit of 1048576 bytes"
    );

    // A peer that does not keep the limits: the header alone is refused.
    send_raw(&a, &encode_header(0, MAX_FDS + 1), &[]);
    let err = recv(&b).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooManyFds { count: 254 })
    ));

    let (a, b) = UnixStream::pair().unwrap();
    send_raw(&a, &encode_header(MAX_MESSAGE_BYTES + 1, 0), &[]);
    let err = recv(&b).await.unwrap_err();
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::MessageTooLarge { .. })
    ));
}

#[tokio::test]
async fn fds_other_than_announced_are_refused_and_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    let (read_end, write_end) = pipe();
    let mut frame = encode_header(2, 2).to_vec();
    frame.extend(b"hi");
    send_raw(&a, &frame, &[write_end.as_raw_fd()]);
    drop(write_end);

    let err = recv(&b).await.unwrap_err();
    assert!(
        matches!(
            frame_error(&err),
            Some(FrameError::FdCountMismatch {
                announced: 2,
                arrived: 1
            })
        ),
        "{err}"
    );
    assert!(all_writers_closed(read_end));
}

#[tokio::test]
async fn only_the_childs_end_is_inherited_and_the_childs_exit_is_eof() {
    let (parent, child) = socketpair_for_child().unwrap();
    assert!(is_cloexec(&parent));
    assert!(!is_cloexec(&child));

    // A real exec: the child sees its end and not the parent's.
    let script = format!(
        "[ -S /proc/self/fd/{child} ] && [ ! -e /proc/self/fd/{parent} ]",
        child = child.as_raw_fd(),
        parent = parent.as_raw_fd(),
    );
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the child did not inherit exactly its end"
    );

    // The child has exited; once the parent drops its copy, nothing holds the peer open.
    drop(child);
    let err = recv(&parent).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
}

#[tokio::test]
async fn the_inherited_end_carries_messages_and_is_close_on_exec() {
    let (parent, child) = socketpair_for_child().unwrap();
    let child = from_inherited_fd(child.into_raw_fd()).unwrap();
    assert!(is_cloexec(&child));

    let file = tempfile::tempfile().unwrap();
    send(&parent, b"sockets", &[file.as_fd()]).await.unwrap();
    let received = recv(&child).await.unwrap();
    assert_eq!(received.message, b"sockets");
    send(&child, b"ready", &[]).await.unwrap();
    assert_eq!(recv(&parent).await.unwrap().message, b"ready");
}

#[tokio::test]
async fn an_inherited_number_that_is_not_a_unix_stream_socket_is_refused_and_left_open() {
    let mut file = tempfile::tempfile().unwrap();
    let err = from_inherited_fd(file.as_raw_fd()).unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    file.write_all(b"still open").unwrap();

    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = from_inherited_fd(tcp.as_raw_fd()).unwrap_err();
    assert!(
        err.to_string().contains("not a unix stream socket"),
        "{err}"
    );
    tcp.local_addr().unwrap();

    // Far above any number this process has open (or could: RLIMIT_NOFILE is lower).
    let err = from_inherited_fd(1 << 30).unwrap_err();
    assert!(err.to_string().contains("not open"), "{err}");
}
