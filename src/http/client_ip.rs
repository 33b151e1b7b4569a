//! The client's IP address: the TCP peer, or, when the peer is one of `TRUSTED_PROXIES`, the
//! rightmost address of the forwarding header (`TRUSTED_PROXY_HEADER`: `X-Forwarded-For` or
//! RFC 7239 `Forwarded`) that is not itself a trusted proxy. Each proxy appends the address it got
//! the request from, so the addresses a client can forge are all to the left of the first one a
//! trusted proxy wrote: reading from the right and stopping at the first untrusted address never
//! believes a forged one. Only the configured header is read: a proxy that appends to one passes
//! a client's own copy of the other through untouched.
//!
//! Rate limits, sessions and log lines all use the address found here.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::{ProxyHeader, TrustedProxies};

/// Most forwarding hops read; a longer chain is cut at the client end (the head-size limit
/// bounds it anyway).
const MAX_HOPS: usize = 32;

/// The client's IP address, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Which proxies are trusted, and the header they write.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    /// `TRUSTED_PROXIES`.
    pub trusted: TrustedProxies,
    /// `TRUSTED_PROXY_HEADER`.
    pub header: ProxyHeader,
}

/// Middleware: finds the client IP and puts it in the request's extensions.
pub async fn resolve_client_ip(
    State(proxies): State<Arc<Proxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    // The serve loop always provides the peer; a request without one (a test calling the
    // router directly) counts as coming from the unspecified address.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    let ip = client_ip(peer, req.headers(), &proxies);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The client IP of a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &Proxies) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = &proxies.trusted;
    if trusted.0.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let chain = match proxies.header {
        ProxyHeader::XForwardedFor => x_forwarded_for(headers),
        ProxyHeader::Forwarded => forwarded_for(headers),
    };
    let mut client = peer;
    for hop in chain.iter().rev().take(MAX_HOPS) {
        match hop {
            Some(ip) => {
                client = ip.to_canonical();
                if !trusted.contains(client) {
                    return client;
                }
            }
            // `unknown`, an obfuscated name or garbage: the nearest trusted hop is the last
            // address known to be true.
            None => return client,
        }
    }
    client
}

/// The elements of every field `name`, left to right, split on every `,` as bytes: an element
/// that is not UTF-8, or opens a quote it never closes, spoils only itself, never the addresses
/// the proxies appended after it. (No address contains a comma; a quoted comma in some other
/// `Forwarded` parameter just makes its element unusable, which stops the walk at the nearest
/// trusted hop: the safe side.)
fn elements<'a>(headers: &'a HeaderMap, name: &str) -> Vec<Option<&'a str>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|element| std::str::from_utf8(element).ok())
        .collect()
}

/// The `for=` of each element of every `Forwarded` field, left to right (`None` where an element
/// has no usable one).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    elements(headers, "forwarded")
        .into_iter()
        .map(|element| {
            let element = element?;
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, node)| parse_node(node))
        })
        .collect()
}

/// Every address of every `X-Forwarded-For` field, left to right.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    elements(headers, "x-forwarded-for")
        .into_iter()
        .map(|element| element.and_then(parse_node))
        .collect()
}

/// An address as a proxy writes it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`, optionally quoted.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let node = raw.trim();
    let node = node
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(node)
        .trim();
    if let Some(rest) = node.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return inside.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    node.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn proxies(nets: &[&str], header: ProxyHeader) -> Proxies {
        Proxies {
            trusted: TrustedProxies(nets.iter().map(|n| n.parse().expect("cidr")).collect()),
            header,
        }
    }

    fn xff(nets: &[&str]) -> Proxies {
        proxies(nets, ProxyHeader::XForwardedFor)
    }

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_bytes(value).expect("value"));
        }
        map
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let forged = headers(&[
            ("x-forwarded-for", b"203.0.113.9"),
            ("forwarded", b"for=198.51.100.1"),
        ]);
        let peer = ip("192.0.2.10");
        for header in [ProxyHeader::XForwardedFor, ProxyHeader::Forwarded] {
            assert_eq!(client_ip(peer, &forged, &proxies(&[], header)), peer);
            assert_eq!(
                client_ip(peer, &forged, &proxies(&["10.0.0.0/8"], header)),
                peer
            );
        }
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let proxies = xff(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        // The client forged the first entry; the trusted proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", b"1.2.3.4, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(client_ip(peer, &chain, &proxies), ip("198.51.100.7"));
        // Several fields are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", b"1.2.3.4"),
            ("x-forwarded-for", b"198.51.100.7, 10.0.0.5"),
        ]);
        assert_eq!(client_ip(peer, &split, &proxies), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
        // Every hop trusted: the leftmost.
        let internal = headers(&[("x-forwarded-for", b"10.1.1.1, 10.0.0.5")]);
        assert_eq!(client_ip(peer, &internal, &proxies), ip("10.1.1.1"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let peer = ip("127.0.0.1");
        // The proxy appended the peer it saw to X-Forwarded-For and passed the client's own
        // Forwarded through: believing it would let the client pick its address.
        let map = headers(&[
            ("forwarded", b"for=203.0.113.66"),
            ("x-forwarded-for", b"198.51.100.7"),
        ]);
        let by_xff = xff(&["127.0.0.1/32"]);
        assert_eq!(client_ip(peer, &map, &by_xff), ip("198.51.100.7"));
        let by_forwarded = proxies(&["127.0.0.1/32"], ProxyHeader::Forwarded);
        assert_eq!(client_ip(peer, &map, &by_forwarded), ip("203.0.113.66"));
        // With the header it trusts absent, the proxy is the client.
        let only_forwarded = headers(&[("forwarded", b"for=203.0.113.66")]);
        assert_eq!(client_ip(peer, &only_forwarded, &by_xff), peer);
    }

    #[test]
    fn forwarded_is_read_in_all_its_spellings() {
        let proxies = proxies(&["127.0.0.1/32"], ProxyHeader::Forwarded);
        let peer = ip("127.0.0.1");
        for (value, want) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (r#"For="192.0.2.43:8080""#, "192.0.2.43"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            (r#"for="_gazonk", for=198.51.100.17"#, "198.51.100.17"),
            (r#"proto=https;for="[::ffff:192.0.2.5]""#, "192.0.2.5"),
        ] {
            let map = headers(&[("forwarded", value.as_bytes())]);
            assert_eq!(client_ip(peer, &map, &proxies), ip(want), "{value}");
        }
    }

    #[test]
    fn an_unusable_hop_stops_at_the_nearest_trusted_one() {
        let proxies = xff(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for value in ["1.2.3.4, unknown", "1.2.3.4, not-an-ip", "1.2.3.4, "] {
            let map = headers(&[("x-forwarded-for", value.as_bytes())]);
            assert_eq!(client_ip(peer, &map, &proxies), peer, "{value}");
        }
        let map = headers(&[("x-forwarded-for", b"1.2.3.4, garbage, 10.0.0.9")]);
        assert_eq!(client_ip(peer, &map, &proxies), ip("10.0.0.9"));
        let forwarded = super::tests::proxies(&["10.0.0.0/8"], ProxyHeader::Forwarded);
        let map = headers(&[("forwarded", b"for=unknown")]);
        assert_eq!(client_ip(peer, &map, &forwarded), peer);
    }

    #[test]
    fn a_bad_byte_spoils_only_its_own_element() {
        let proxies = xff(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        // The client wrote a non-UTF-8 element; the proxy appended the address it saw.
        let map = headers(&[("x-forwarded-for", b"\xff\xfe, 198.51.100.7")]);
        assert_eq!(client_ip(peer, &map, &proxies), ip("198.51.100.7"));
        let forwarded = super::tests::proxies(&["127.0.0.1/32"], ProxyHeader::Forwarded);
        let map = headers(&[("forwarded", b"for=\"\xff\", for=198.51.100.8")]);
        assert_eq!(client_ip(peer, &map, &forwarded), ip("198.51.100.8"));
        // A quote the client opened and never closed does not swallow what the proxy appended.
        let map = headers(&[("x-forwarded-for", b"\"198.51.100.99, 198.51.100.9")]);
        assert_eq!(client_ip(peer, &map, &proxies), ip("198.51.100.9"));
        let map = headers(&[("forwarded", b"for=\"198.51.100.99, for=192.0.2.62")]);
        assert_eq!(client_ip(peer, &map, &forwarded), ip("192.0.2.62"));
    }

    #[test]
    fn an_ipv4_mapped_peer_counts_as_ipv4() {
        let proxies = xff(&["127.0.0.1/32"]);
        let map = headers(&[("x-forwarded-for", b"192.0.2.1")]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &map, &proxies),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.8"), &HeaderMap::new(), &xff(&[])),
            ip("192.0.2.8")
        );
    }
}
