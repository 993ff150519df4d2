//! Upstream v1's start-up form: `agl-server host=… port=… key=…` (Hydra overrides), read as
//! this store's flags so that a 1.0 deployment's scripts start agl-store unchanged
//! (`agl server port=8181 key="$AGL_KEY"`, or the image with those arguments). Upstream's
//! defaults come with the form: port 8080 unless `port=` or `AGL_SERVER_PORT` (which the
//! images set, and their health check reads) says otherwise. Flags (`--storage …`)
//! may be mixed in.
//!
//! `default_proxy.*` configures the capturing proxy under `/proxy/…` (`--proxy-*` flags).

/// The override keys upstream's `server.yaml` has.
const KNOWN: &[&str] = &[
    "host",
    "port",
    "key",
    "default_proxy.model_name",
    "default_proxy.include_log_probs",
    "default_proxy.include_routed_experts",
    "default_proxy.train.temperature",
    "default_proxy.val.temperature",
];

/// Upstream's port.
const DEFAULT_PORT: &str = "8080";

/// One `name=value` argument, without Hydra's `+`/`++` prefixes and the value's quotes.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('-') {
        return None;
    }
    let (name, value) = arg.split_once('=')?;
    let name = name.trim_start_matches('+');
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return None;
    }
    let value = ["'", "\""]
        .iter()
        .find_map(|q| value.strip_prefix(q).and_then(|v| v.strip_suffix(q)))
        .unwrap_or(value);
    Some((name, value))
}

/// Whether `args` (without the program name) use upstream's form.
pub fn is_upstream_form(args: &[String]) -> bool {
    args.iter().any(|a| split(a).is_some())
}

/// `args` with upstream's overrides turned into flags.
pub fn to_flags(args: &[String]) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    let mut port_given = false;
    for arg in args {
        let Some((name, value)) = split(arg) else {
            flags.push(arg.clone());
            continue;
        };
        let flag = match name {
            "host" => "--host",
            "port" => {
                port_given = true;
                "--port"
            }
            // Empty: authentication off, as upstream.
            "key" if value.is_empty() => continue,
            "key" => "--key",
            "default_proxy.model_name" => "--proxy-model-name",
            "default_proxy.include_log_probs" => "--proxy-include-log-probs",
            "default_proxy.include_routed_experts" => "--proxy-include-routed-experts",
            "default_proxy.train.temperature" => "--proxy-train-temperature",
            "default_proxy.val.temperature" => "--proxy-val-temperature",
            other => {
                return Err(format!(
                    "unknown setting {other:?}; upstream's server takes {}",
                    KNOWN.join(", ")
                ));
            }
        };
        // Hydra reads booleans in any case; the flags take lowercase.
        let value = if flag.starts_with("--proxy-include") {
            value.to_ascii_lowercase()
        } else {
            value.to_owned()
        };
        flags.extend([flag.to_owned(), value]);
    }
    // A port the environment sets (the image's `AGL_SERVER_PORT`, which its health check
    // probes) wins over upstream's default; `port=` wins over both.
    if !port_given && std::env::var_os("AGL_SERVER_PORT").is_none() {
        flags.extend(["--port".to_owned(), DEFAULT_PORT.to_owned()]);
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn upstreams_overrides_become_flags_with_upstreams_port() {
        let flags = to_flags(&args(&["host=127.0.0.1", "key='s3cret'"])).unwrap();
        assert_eq!(
            flags,
            args(&["--host", "127.0.0.1", "--key", "s3cret", "--port", "8080"])
        );
        let flags = to_flags(&args(&[
            "++port=8181",
            "--storage",
            "sqlite:/d/x.db",
            "key=",
        ]))
        .unwrap();
        assert_eq!(
            flags,
            args(&["--port", "8181", "--storage", "sqlite:/d/x.db"])
        );
        let flags = to_flags(&args(&[
            "default_proxy.model_name=Qwen/Qwen2.5-7B-Instruct",
            "default_proxy.include_log_probs=False",
            "default_proxy.val.temperature=0.7",
        ]))
        .unwrap();
        assert_eq!(
            flags,
            args(&[
                "--proxy-model-name",
                "Qwen/Qwen2.5-7B-Instruct",
                "--proxy-include-log-probs",
                "false",
                "--proxy-val-temperature",
                "0.7",
                "--port",
                "8080"
            ])
        );
        assert!(to_flags(&args(&["workers=4"])).is_err());
        assert!(is_upstream_form(&args(&["port=1"])));
        assert!(!is_upstream_form(&args(&[
            "--port",
            "1",
            "--storage=sqlite:x"
        ])));
    }
}
