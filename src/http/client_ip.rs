//! The client's IP address: the TCP peer, or, when the peer is one of `TRUSTED_PROXIES`, the
//! rightmost address of `Forwarded` (RFC 7239) or `X-Forwarded-For` that is not itself a trusted
//! proxy. Each proxy appends the address it got the request from, so the addresses a client can
//! forge are all to the left of the first one a trusted proxy wrote: reading from the right and
//! stopping at the first untrusted address never believes a forged one.
//!
//! Rate limits, sessions and log lines all use the address found here.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use crate::config::TrustedProxies;

/// Most forwarding hops read; a longer chain is cut at the client end (the head-size limit
/// bounds it anyway).
const MAX_HOPS: usize = 32;

/// The client's IP address, in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Middleware: finds the client IP and puts it in the request's extensions.
pub async fn resolve_client_ip(
    State(trusted): State<std::sync::Arc<TrustedProxies>>,
    mut req: Request,
    next: Next,
) -> Response {
    // The serve loop always provides the peer; a request without one (a test calling the
    // router directly) counts as coming from the unspecified address.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |info| info.0.ip());
    let ip = client_ip(peer, req.headers(), &trusted);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The client IP of a request from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.0.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    // `Forwarded` is the standard; when a proxy sends it, `X-Forwarded-For` is not read.
    let chain = if headers.contains_key("forwarded") {
        forwarded_for(headers)
    } else {
        x_forwarded_for(headers)
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

/// The `for=` of each element of every `Forwarded` field, left to right (`None` where an element
/// has no usable one).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .iter()
        .flat_map(|value| {
            let text = value.to_str().unwrap_or("");
            split_outside_quotes(text, ',')
                .into_iter()
                .map(|element| {
                    split_outside_quotes(element, ';')
                        .into_iter()
                        .filter_map(|pair| pair.split_once('='))
                        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                        .and_then(|(_, node)| parse_node(node))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every address of every `X-Forwarded-For` field, left to right.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| {
            value
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(parse_node)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Splits at `separator` except inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
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

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(nets.iter().map(|n| n.parse().expect("cidr")).collect())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let forged = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("forwarded", "for=198.51.100.1"),
        ]);
        let peer = ip("192.0.2.10");
        assert_eq!(client_ip(peer, &forged, &TrustedProxies::default()), peer);
        assert_eq!(client_ip(peer, &forged, &trusted(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_address_is_the_client() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        // The client forged the first entry; the trusted proxies appended the rest.
        let chain = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(client_ip(peer, &chain, &proxies), ip("198.51.100.7"));
        // Several fields are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7, 10.0.0.5"),
        ]);
        assert_eq!(client_ip(peer, &split, &proxies), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
        // Every hop trusted: the leftmost.
        let internal = headers(&[("x-forwarded-for", "10.1.1.1, 10.0.0.5")]);
        assert_eq!(client_ip(peer, &internal, &proxies), ip("10.1.1.1"));
    }

    #[test]
    fn forwarded_is_read_in_all_its_spellings_and_wins_over_x_forwarded_for() {
        let proxies = trusted(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for (value, want) in [
            ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
            (r#"for="[2001:db8:cafe::17]:4711""#, "2001:db8:cafe::17"),
            (r#"For="192.0.2.43:8080""#, "192.0.2.43"),
            ("for=192.0.2.43, for=198.51.100.17", "198.51.100.17"),
            (r#"for="_gazonk", for=198.51.100.17"#, "198.51.100.17"),
            (r#"proto=https;for="[::ffff:192.0.2.5]""#, "192.0.2.5"),
        ] {
            let map = headers(&[("forwarded", value), ("x-forwarded-for", "203.0.113.1")]);
            assert_eq!(client_ip(peer, &map, &proxies), ip(want), "{value}");
        }
    }

    #[test]
    fn an_unusable_hop_stops_at_the_nearest_trusted_one() {
        let proxies = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for value in ["1.2.3.4, unknown", "1.2.3.4, not-an-ip", "1.2.3.4, "] {
            let map = headers(&[("x-forwarded-for", value)]);
            assert_eq!(client_ip(peer, &map, &proxies), peer, "{value}");
        }
        let map = headers(&[("x-forwarded-for", "1.2.3.4, garbage, 10.0.0.9")]);
        assert_eq!(client_ip(peer, &map, &proxies), ip("10.0.0.9"));
        let map = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(peer, &map, &proxies), peer);
    }

    #[test]
    fn an_ipv4_mapped_peer_counts_as_ipv4() {
        let proxies = trusted(&["127.0.0.1/32"]);
        let map = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &map, &proxies),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_ip(
                ip("::ffff:192.0.2.8"),
                &HeaderMap::new(),
                &TrustedProxies::default()
            ),
            ip("192.0.2.8")
        );
    }
}
