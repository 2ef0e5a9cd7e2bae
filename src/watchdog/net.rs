//! Setting up the side channel: rank 0's listener, its address record,
//! and the other ranks' connections to it.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, ToSocketAddrs};

use super::{CONNECT_TIMEOUT, HOST_ENV, PORT_ENV, WRITE_TIMEOUT, wire};
use crate::error::{Error, Result};

/// The address rank 0 listens on: 127.0.0.1 when every rank is on its
/// host (nothing outside the host can connect then); else the address its
/// host name resolves to, which is where the other hosts connect; every
/// interface only when that is unknown or a loopback address (or when
/// `RINGTRAIN_WATCHDOG_HOST` names the address the others use).
pub(super) fn listen_ip(all_local: bool, host: &str) -> IpAddr {
    if all_local {
        return IpAddr::V4(Ipv4Addr::LOCALHOST);
    }
    let named = std::env::var(HOST_ENV).is_ok_and(|h| !h.trim().is_empty());
    let resolved = (!named)
        .then(|| (host, 0).to_socket_addrs().ok())
        .flatten()
        .into_iter()
        .flatten()
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback());
    resolved.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Rank 0's listener on `ip`: `RINGTRAIN_WATCHDOG_PORT`, or any free port.
pub(super) fn bind(ip: IpAddr) -> Result<TcpListener> {
    let port = match std::env::var(PORT_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<u16>()
            .map_err(|_| Error::Comm(format!("watchdog: {PORT_ENV}={v:?} is not a port number")))?,
        _ => 0,
    };
    TcpListener::bind((ip, port)).map_err(|e| {
        Error::Comm(format!(
            "watchdog: rank 0 cannot listen on TCP port {port}: {e} (set {PORT_ENV}, or turn \
             the watchdog off with --comm-timeout 0)"
        ))
    })
}

/// Connects to rank 0's watchdog (listening on `rec.ip`, port `rec.port`)
/// and says hello.
pub(super) fn connect(rec: &Record, my_host: &str, rank: usize) -> Result<TcpStream> {
    let (root_host, port, token) = (rec.host.as_str(), rec.port, rec.token);
    let host = match std::env::var(HOST_ENV) {
        Ok(h) if !h.trim().is_empty() => h.trim().to_string(),
        _ if !rec.ip.is_unspecified() => rec.ip.to_string(),
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

/// Where rank 0's watchdog listens, as every rank learns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub port: u16,
    pub token: u64,
    /// The address it is bound to (0.0.0.0: every interface).
    pub ip: IpAddr,
    /// Rank 0's host name.
    pub host: String,
}

impl Record {
    /// "port token ip host".
    pub fn encode(&self) -> String {
        format!("{} {} {} {}", self.port, self.token, self.ip, self.host)
    }

    pub fn parse(rec: &[u8]) -> Result<Record> {
        let end = rec.iter().position(|&b| b == 0).unwrap_or(rec.len());
        let text = String::from_utf8_lossy(&rec[..end]);
        let mut it = text.splitn(4, ' ');
        let parsed = (|| {
            Some(Record {
                port: it.next()?.parse().ok()?,
                token: it.next()?.parse().ok()?,
                ip: it.next()?.parse().ok()?,
                host: it.next()?.to_string(),
            })
        })();
        parsed.ok_or_else(|| {
            Error::Comm(format!(
                "watchdog: bad address record from rank 0: {text:?}"
            ))
        })
    }
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
        let r = Record {
            port: 41234,
            token: 987654321,
            ip: "10.77.0.1".parse().unwrap(),
            host: "node-17.cluster".into(),
        };
        let mut rec = [0u8; RECORD];
        let t = r.encode();
        rec[..t.len()].copy_from_slice(t.as_bytes());
        assert_eq!(Record::parse(&rec).unwrap(), r);
        assert!(Record::parse(&[0u8; RECORD]).is_err());
    }

    #[test]
    fn rank_0_listens_on_loopback_when_every_rank_is_local() {
        assert_eq!(listen_ip(true, "anything"), IpAddr::V4(Ipv4Addr::LOCALHOST));
        // "localhost" resolves to loopback only: every interface.
        assert!(listen_ip(false, "localhost").is_unspecified());
    }
}
