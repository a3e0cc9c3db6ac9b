//! SO_REUSEPORT listeners, one per shard, all on the same address; the kernel spreads
//! incoming connections across them.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

pub fn bind_reuseport(addr: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(count);
    // Port 0 means "any": the first bind picks it, the rest must join that same port.
    let mut addr = addr;
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}
