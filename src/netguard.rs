//! Where a member may make berth connect: destinations on the public internet only.
//!
//! Webhooks, `git:sync` and a Dockerfile's `ADD <url>` make the host connect somewhere a member
//! chose. From the host, loopback reaches berth's own registry and metrics, link-local reaches
//! cloud metadata services, and private ranges reach the operator's internal network. For
//! members such destinations are refused, checked on the resolved addresses; the caller then
//! connects to the vetted address itself, so a name cannot resolve once to a public address for
//! the check and again to a private one for the connection. Admins are trusted, and the server
//! config may let members reach private receivers (`allow_private_destinations`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether a member may not reach `ip`: loopback, unspecified, link-local, RFC 1918, CGNAT,
/// ULA, multicast, broadcast, documentation, benchmarking and reserved ranges (and IPv4 mapped
/// or translated into IPv6 the same way).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its low bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return internal_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1)
                || (s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// The one refusal a member gets, whatever the address was: it must not tell an internal
/// port scanner more than "no".
pub fn refusal(host: &str) -> String {
    format!(
        "refused: {host} is not a public internet address (loopback, link-local and private networks are not reachable from here)"
    )
}

/// Resolves `host:port` and gives the addresses to connect to. With `allow_internal` false, a
/// name with any internal address is refused as a whole (one public and one private answer is
/// the DNS-rebinding shape).
pub async fn resolve(
    host: &str,
    port: u16,
    allow_internal: bool,
) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::net::lookup_host((bare, port)),
        )
        .await
        .map_err(|_| format!("cannot resolve {host}: no answer within 10s"))?
        .map_err(|_| format!("cannot resolve {host}"))?
        .collect(),
    };
    if addresses.is_empty() {
        return Err(format!("cannot resolve {host}"));
    }
    if !allow_internal && addresses.iter().any(|a| is_internal(a.ip())) {
        return Err(refusal(host));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_internal_and_public_ones_are_not() {
        for internal in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn names_and_literals_are_checked_after_resolving() {
        assert_eq!(
            resolve("localhost", 80, false).await.unwrap_err(),
            refusal("localhost")
        );
        assert!(resolve("[::1]", 80, false).await.is_err());
        assert!(resolve("127.0.0.1", 80, true).await.is_ok());
        assert_eq!(
            resolve("1.1.1.1", 443, false).await.unwrap(),
            vec!["1.1.1.1:443".parse().unwrap()]
        );
    }
}
