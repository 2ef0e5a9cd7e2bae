//! Setting up the side channel: rank 0's listener, its address record,
//! and the other ranks' connections to it.

use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};

use super::{CONNECT_TIMEOUT, HOST_ENV, PORT_ENV, WRITE_TIMEOUT, wire};
use crate::error::{Error, Result};

/// Rank 0's listener: `RINGTRAIN_WATCHDOG_PORT`, or any free port.
pub(super) fn bind() -> Result<TcpListener> {
    let port = match std::env::var(PORT_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u16>()
            .map_err(|_| Error::Comm(format!("watchdog: {PORT_ENV}={v:?} is not a port number")))?,
        _ => 0,
    };
    TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        Error::Comm(format!(
            "watchdog: rank 0 cannot listen on TCP port {port}: {e} (set {PORT_ENV}, or turn \
             the watchdog off with --comm-timeout 0)"
        ))
    })
}

/// Connects to rank 0's watchdog and says hello.
pub(super) fn connect(
    root_host: &str,
    my_host: &str,
    port: u16,
    rank: usize,
    token: u64,
) -> Result<TcpStream> {
    let host = match std::env::var(HOST_ENV) {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ if root_host == my_host => "127.0.0.1".to_string(),
        _ => root_host.to_string(),
    };
    let err = |e: &dyn std::fmt::Display| {
        Error::Comm(format!(
            "watchdog: rank {rank} cannot connect to rank 0's watchdog at {host}:{port}: {e} \
             (set {HOST_ENV} to an address of rank 0's host that the other hosts reach, or \
             turn the watchdog off with --comm-timeout 0)"
        ))
    };
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| err(&e))?;
    let mut last: Option<std::io::Error> = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(mut st) => {
                let _ = st.set_nodelay(true);
                let _ = st.set_write_timeout(Some(WRITE_TIMEOUT));
                st.write_all(wire::Msg::Hello { rank, token }.encode().as_bytes())
                    .map_err(|e| err(&e))?;
                return Ok(st);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => err(&e),
        None => err(&"the name resolves to no address"),
    })
}

/// "port token host" from rank 0's record.
pub(super) fn parse_record(rec: &[u8]) -> Result<(u16, u64, String)> {
    let end = rec.iter().position(|&b| b == 0).unwrap_or(rec.len());
    let text = String::from_utf8_lossy(&rec[..end]);
    let mut it = text.splitn(3, ' ');
    let parsed = (|| {
        let port = it.next()?.parse().ok()?;
        let token = it.next()?.parse().ok()?;
        Some((port, token, it.next()?.to_string()))
    })();
    parsed.ok_or_else(|| {
        Error::Comm(format!(
            "watchdog: bad address record from rank 0: {text:?}"
        ))
    })
}

/// A value no other job's rank 0 will have chosen (not a secret; it keeps
/// stray connections out).
pub(super) fn token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::RECORD;
    use super::*;

    #[test]
    fn the_address_record_round_trips() {
        let mut rec = [0u8; RECORD];
        let t = b"41234 987654321 node-17.cluster";
        rec[..t.len()].copy_from_slice(t);
        assert_eq!(
            parse_record(&rec).unwrap(),
            (41234, 987654321, "node-17.cluster".to_string())
        );
        assert!(parse_record(&[0u8; RECORD]).is_err());
    }
}
