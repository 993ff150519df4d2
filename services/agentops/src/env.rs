//! The environment block agents export to talk to this server instead of AgentOps' cloud
//! (spec: `agentops-mock.md` §4, "minimal offline set").

use std::net::IpAddr;

/// A UUID-shaped dummy key: 0.4.13 – 0.4.18 insist on a UUID when the key is passed to
/// `init()`, and any key is accepted here.
pub const API_KEY: &str = "00000000-0000-0000-0000-000000000000";

/// The base URL agents use: `--public-url` if given, else `http://HOST:PORT` with a
/// loopback address standing in for an all-interfaces bind.
pub fn base_url(public_url: Option<&str>, host: &str, port: u16) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => "[::1]".to_owned(),
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_owned(),
    };
    format!("http://{host}:{port}")
}

/// `export NAME=VALUE` lines for a POSIX shell (`eval "$(agl agentops --print-env)"`).
/// `NO_PROXY` (and `no_proxy`, which Python prefers when both are set) keep an `HTTP_PROXY`
/// from capturing the SDK's calls to this server.
///
/// When the server requires a key (`keyed`) the dummy key is left out: agents set
/// `AGENTOPS_API_KEY` to one of the server's keys themselves (the block never prints a
/// secret).
pub fn block(base: &str, keyed: bool) -> String {
    let host = base
        .split_once("://")
        .map_or(base, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let mut no_proxy = vec!["127.0.0.1", "localhost"];
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if !bare.is_empty() && !no_proxy.contains(&bare) {
        no_proxy.push(bare);
    }
    let no_proxy = no_proxy.join(",");
    let vars = [
        ("AGENTOPS_API_KEY", API_KEY.to_owned()),
        ("AGENTOPS_API_ENDPOINT", base.to_owned()),
        ("AGENTOPS_EXPORTER_ENDPOINT", format!("{base}/v1/traces")),
        ("AGENTOPS_APP_URL", base.to_owned()),
        ("NO_PROXY", no_proxy.clone()),
        ("no_proxy", no_proxy),
    ];
    let mut out = String::new();
    if keyed {
        out.push_str("# AGENTOPS_API_KEY: set it to the server's key (--key-file / AGL_KEY)\n");
    }
    for (name, value) in &vars {
        if keyed && *name == "AGENTOPS_API_KEY" {
            continue;
        }
        out.push_str(&format!("export {name}={}\n", shell_quote(value)));
    }
    out
}

/// Quotes a value for a POSIX shell when it needs it.
fn shell_quote(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@%+=[]".contains(&b));
    if plain && !value.is_empty() {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_interfaces_are_reached_through_loopback() {
        assert_eq!(base_url(None, "0.0.0.0", 8002), "http://127.0.0.1:8002");
        assert_eq!(base_url(None, "::", 8002), "http://[::1]:8002");
        assert_eq!(base_url(None, "localhost", 1), "http://localhost:1");
        assert_eq!(
            base_url(Some("http://agentops.svc:8002/"), "0.0.0.0", 1),
            "http://agentops.svc:8002"
        );
    }

    #[test]
    fn the_block_exports_what_the_sdk_reads() {
        let block = block("http://127.0.0.1:8002", false);
        assert_eq!(
            block,
            "export AGENTOPS_API_KEY=00000000-0000-0000-0000-000000000000\n\
             export AGENTOPS_API_ENDPOINT=http://127.0.0.1:8002\n\
             export AGENTOPS_EXPORTER_ENDPOINT=http://127.0.0.1:8002/v1/traces\n\
             export AGENTOPS_APP_URL=http://127.0.0.1:8002\n\
             export NO_PROXY=127.0.0.1,localhost\n\
             export no_proxy=127.0.0.1,localhost\n"
        );
        assert!(
            super::block("http://agentops.svc:8002", false)
                .contains("NO_PROXY=127.0.0.1,localhost,agentops.svc\n")
        );
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }
}
