//! The only place that touches tokio-uring sockets: read, vectored write of shared
//! buffers, shutdown, and fd hand-off. Keeping it thin lets the runtime be swapped.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use tokio_uring::net::TcpStream;

use crate::fanout::queue::MAX_IOVECS;

pub struct Conn {
    stream: TcpStream,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        // We batch writes ourselves (whole messages, coalescing budget); Nagle would only
        // add delay on top.
        let _ = stream.set_nodelay(true);
        Self { stream }
    }

    /// Lets the kernel merge small writes (Nagle), trading up to an RTT of delay for fewer
    /// segments when every frame is written as it arrives.
    pub fn set_nodelay(&self, on: bool) {
        let _ = self.stream.set_nodelay(on);
    }

    /// Adopts a socket handed over from another shard.
    pub fn from_fd(fd: OwnedFd) -> Self {
        let std = std::net::TcpStream::from(fd);
        Self::new(TcpStream::from_std(std))
    }

    pub async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.stream.read(buf).await
    }

    /// Writes every buffer, in order, however many partial writes it takes. Hands the
    /// (emptied) vector back so the caller can reuse its allocation.
    pub async fn writev_all(&self, mut bufs: Vec<Bytes>) -> (io::Result<()>, Vec<Bytes>) {
        while !bufs.is_empty() {
            let rest = if bufs.len() > MAX_IOVECS {
                bufs.split_off(MAX_IOVECS)
            } else {
                Vec::new()
            };
            let (res, mut sent) = self.stream.writev(bufs).await;
            let mut n = match res {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), sent),
                Ok(n) => n,
                Err(e) => return (Err(e), sent),
            };
            // Drop what went out, trim the partly written buffer, keep the rest in order.
            let mut first = 0;
            while first < sent.len() && n >= sent[first].len() {
                n -= sent[first].len();
                first += 1;
            }
            sent.drain(..first);
            if n > 0 {
                if let Some(b) = sent.first_mut() {
                    *b = Bytes::slice(b, n..);
                }
            }
            sent.extend(rest);
            bufs = sent;
        }
        (Ok(()), bufs)
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Closes both directions now; in-flight reads complete instead of pinning the fd.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Duplicates the fd for a hand-off and drops this stream. No op may be in flight.
    pub fn into_fd(self) -> io::Result<OwnedFd> {
        // SAFETY: fcntl on a valid fd we own; the result is a fresh fd we take ownership of.
        let dup = unsafe { libc::fcntl(self.stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dup` is a new, valid, owned descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(dup) })
    }
}
