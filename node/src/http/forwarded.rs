//! The client's address behind a load balancer: `[server] trusted_proxies` names the
//! proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed. Only when the
//! connection comes from one of them is the header read, from its right end (the hop
//! the trusted proxy saw) leftwards past every trusted hop; the first other address is
//! the client. Anyone else's header is ignored, so a client cannot name itself.

use axum::http::HeaderMap;
use std::net::IpAddr;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `1.2.3.4`, `10.0.0.0/8`, `::1`, `fd00::/8`; an error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|entry| {
                let bad = || format!("{entry:?} is not an IP address or CIDR block");
                let (ip, bits) = match entry.split_once('/') {
                    Some((ip, bits)) => (ip, Some(bits.parse::<u8>().map_err(|_| bad())?)),
                    None => (entry.as_str(), None),
                };
                let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits = bits.unwrap_or(max);
                if bits > max {
                    return Err(bad());
                }
                Ok((ip, bits))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|(net, bits)| within(ip, *net, *bits))
    }

    /// The client's address: `peer` unless `peer` is a trusted proxy that says whom it
    /// forwards for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.is_empty() || !self.trusts(peer) {
            return peer;
        }
        // Several headers are one list, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = hop_address(hop) else {
                // What a trusted proxy passed on is unreadable: the nearest known hop.
                return client;
            };
            client = ip;
            if !self.trusts(ip) {
                return ip;
            }
        }
        client
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

fn within(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        (IpAddr::V6(a), IpAddr::V4(b)) => match a.to_ipv4_mapped() {
            Some(a) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_trusted_hops_are_skipped() {
        let trusted =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "127.0.0.1".into()]).expect("parses");
        let lb = ip("10.1.2.3");
        assert_eq!(
            trusted.client(lb, &headers(&["203.0.113.7"])),
            ip("203.0.113.7")
        );
        // The client's own claim on the left is not believed past an untrusted hop.
        assert_eq!(
            trusted.client(lb, &headers(&["6.6.6.6, 198.51.100.9, 10.9.9.9"])),
            ip("198.51.100.9")
        );
        assert_eq!(
            trusted.client(lb, &headers(&["198.51.100.9:4711", "10.0.0.1"])),
            ip("198.51.100.9")
        );
        assert_eq!(
            trusted.client(lb, &headers(&["[2001:db8::5]:443"])),
            ip("2001:db8::5")
        );
        // No header, an unreadable hop, every hop trusted.
        assert_eq!(trusted.client(lb, &headers(&[])), lb);
        assert_eq!(trusted.client(lb, &headers(&["nonsense"])), lb);
        assert_eq!(
            trusted.client(lb, &headers(&["10.0.0.9, 127.0.0.1"])),
            ip("10.0.0.9")
        );
        // An untrusted peer's header is ignored.
        let stranger = ip("192.0.2.1");
        assert_eq!(
            trusted.client(stranger, &headers(&["203.0.113.7"])),
            stranger
        );
        assert_eq!(
            TrustedProxies::default().client(lb, &headers(&["203.0.113.7"])),
            lb
        );
        // An IPv4 proxy reached over an IPv4-mapped IPv6 socket.
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.2"), &headers(&["203.0.113.7"])),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn blocks_are_parsed_and_bad_entries_named() {
        let all = TrustedProxies::parse(&["0.0.0.0/0".into(), "::/0".into()]).expect("parses");
        assert!(all.trusts(ip("8.8.8.8")) && all.trusts(ip("2001:db8::1")));
        let one = TrustedProxies::parse(&["fd00::/8".into()]).expect("parses");
        assert!(one.trusts(ip("fd12::1")) && !one.trusts(ip("fe80::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0",
            "lb.internal",
            "10.0.0.0/x",
        ] {
            let e = TrustedProxies::parse(&[bad.into()]).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }
}
