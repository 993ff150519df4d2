//! Upstream v1's start-up form: `agl-server host=… port=… key=…` (Hydra overrides), read as
//! this store's flags so that a 1.0 deployment's scripts start agl-store unchanged
//! (`agl server port=8181 key="$AGL_KEY"`, or the image with those arguments). Upstream's
//! defaults come with the form: port 8080 unless `port=` says otherwise. Flags (`--storage …`)
//! may be mixed in.
//!
//! `default_proxy.*` configures upstream's capturing proxy. It is read and checked, but the
//! store does not serve `/proxy/…` yet (issue 15): a warning says so at start.

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

/// `args` with upstream's overrides turned into flags, and the warnings to print.
pub fn to_flags(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut flags = Vec::new();
    let mut warnings = Vec::new();
    let mut port_given = false;
    for arg in args {
        let Some((name, value)) = split(arg) else {
            flags.push(arg.clone());
            continue;
        };
        match name {
            "host" => flags.extend(["--host".to_owned(), value.to_owned()]),
            "port" => {
                port_given = true;
                flags.extend(["--port".to_owned(), value.to_owned()]);
            }
            // Empty: authentication off, as upstream.
            "key" if value.is_empty() => {}
            "key" => flags.extend(["--key".to_owned(), value.to_owned()]),
            "default_proxy.include_log_probs" | "default_proxy.include_routed_experts" => {
                if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") {
                    return Err(format!("{name} must be true or false, not {value:?}"));
                }
                warnings.push(proxy_warning(name));
            }
            "default_proxy.train.temperature" | "default_proxy.val.temperature" => {
                if value.parse::<f64>().is_err() {
                    return Err(format!("{name} must be a number, not {value:?}"));
                }
                warnings.push(proxy_warning(name));
            }
            "default_proxy.model_name" => warnings.push(proxy_warning(name)),
            other => {
                return Err(format!(
                    "unknown setting {other:?}; upstream's server takes {}",
                    KNOWN.join(", ")
                ));
            }
        }
    }
    if !port_given {
        flags.extend(["--port".to_owned(), DEFAULT_PORT.to_owned()]);
    }
    warnings.dedup();
    Ok((flags, warnings))
}

fn proxy_warning(name: &str) -> String {
    format!(
        "{name} is accepted but not used yet: agl-store does not serve upstream's /proxy routes \
         (issue 15); point agents at agl-vllm's proxy meanwhile"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn upstreams_overrides_become_flags_with_upstreams_port() {
        let (flags, warnings) = to_flags(&args(&["host=127.0.0.1", "key='s3cret'"])).unwrap();
        assert_eq!(
            flags,
            args(&["--host", "127.0.0.1", "--key", "s3cret", "--port", "8080"])
        );
        assert!(warnings.is_empty());
        let (flags, _) = to_flags(&args(&[
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
        let (_, warnings) = to_flags(&args(&[
            "default_proxy.model_name=Qwen/Qwen2.5-7B-Instruct",
            "default_proxy.val.temperature=0.7",
        ]))
        .unwrap();
        assert_eq!(warnings.len(), 2);
        assert!(to_flags(&args(&["default_proxy.val.temperature=warm"])).is_err());
        assert!(to_flags(&args(&["workers=4"])).is_err());
        assert!(is_upstream_form(&args(&["port=1"])));
        assert!(!is_upstream_form(&args(&[
            "--port",
            "1",
            "--storage=sqlite:x"
        ])));
    }
}
