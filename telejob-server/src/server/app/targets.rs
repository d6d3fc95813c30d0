//! Where notifications may go: webhooks reach the outside only. A target on loopback,
//! link-local (instance metadata), private, shared (CGNAT), unique-local or otherwise
//! non-global addresses is refused at save time when its host is an address, and at send time
//! after DNS resolution (a name that resolves to such an address), with redirects not
//! followed. `[notify] allow_private_targets = true` lifts it for operators whose hooks are
//! internal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (CGNAT), 100.64.0.0/10.
        || (a == 100 && (b & 0xc0) == 64)
        // IETF protocol assignments, 192.0.0.0/24, and benchmarking, 198.18.0.0/15.
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b & 0xfe) == 18)
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local, fc00::/7, and link-local, fe80::/10.
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32; NAT64 and 6to4 embed an IPv4 address of either kind.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        || s[0] == 0x2002)
}

/// Checks webhook `url` before it is saved: an `http(s)` URL whose host, when it is an
/// address or `localhost`, is public (names are checked again when they are resolved).
///
/// # Errors
///
/// Why the URL is refused, in words for the user.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{url:?}: use an http:// or https:// URL"));
    }
    if allow_private {
        return Ok(());
    }
    let refused = |what: &str| {
        Err(format!(
            "{what} is not on the public internet: webhooks go outside only (an operator may set [notify] allow_private_targets = true)"
        ))
    };
    let Some(host) = u.host_str() else {
        return Err(format!("{url:?} has no host"));
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) if !is_public(ip) => refused(&ip.to_string()),
        Ok(_) => Ok(()),
        Err(_) => {
            let d = bare.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                refused(&d)
            } else {
                Ok(())
            }
        }
    }
}

/// A DNS resolver for webhooks that answers public addresses only, so a name that resolves to
/// the server's own network is refused when the notification is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address ({}): webhooks go outside only",
                    all.iter()
                        .map(|a| a.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_networks_are_refused() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://localhost:9000/",
            "http://api.localhost/",
            "http://192.168.1.1/",
            "http://172.16.0.1/",
        ] {
            let e = check_url(url, false).expect_err(url);
            assert!(e.contains("not on the public internet"), "{url}: {e}");
            assert!(check_url(url, true).is_ok(), "the operator may allow {url}");
        }
        for url in [
            "https://hooks.example.com/x",
            "http://93.184.216.34/",
            "https://[2606:4700::1]/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        assert!(check_url("ftp://example.com/", true).is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_when_sent() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let e = PublicOnly.resolve(name).await.err().expect("refused");
        assert!(e.to_string().contains("no public address"), "{e}");
    }
}
