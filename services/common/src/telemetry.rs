//! Logging and tracing set-up shared by every service.
//!
//! Logs go to stderr, as text or JSON. Spans are exported over OTLP/HTTP (protobuf) only
//! when the standard variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`
//! and `OTEL_TRACES_SAMPLER`/`_ARG` are read by the OpenTelemetry SDK itself.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::cli::{LogArgs, LogFormat};

/// Whether the `count`th occurrence of a repeated problem is logged: the 1st, then every
/// 100th, so that a dead receiver or a misconfigured client cannot flood the log (a counter
/// keeps every one).
pub fn worth_logging(count: u64) -> bool {
    count == 1 || count.is_multiple_of(100)
}

/// Keeps the exporter alive; call [`Telemetry::shutdown`] last, so buffered spans are sent.
#[must_use = "dropping the handle without shutdown() may lose buffered spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the span exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("failed to flush otlp spans: {err}");
        }
    }
}

/// Whether the environment asks for OTLP span export.
pub fn otlp_requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The URL spans are exported to, when export is on: the traces-specific variable, else
/// the generic one with `/v1/traces` appended (the OTLP/HTTP convention).
pub fn otlp_traces_endpoint() -> Option<String> {
    if !otlp_requested() {
        return None;
    }
    let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        get("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })
}

/// Installs the global subscriber for `service` (used as `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise).
/// Outbound TLS is configured first (`tls`), so that the span exporter and every client
/// built later trust the same roots.
pub fn init(
    service: &'static str,
    args: &LogArgs,
    tls: &crate::tls::ClientTlsArgs,
) -> anyhow::Result<Telemetry> {
    crate::tls::configure_outbound(tls)?;
    let default_directive = args.log_level.clone().unwrap_or_else(|| {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "info".to_owned())
    });
    let filter = EnvFilter::try_new(expand_level(&default_directive))
        .with_context(|| format!("invalid log level {default_directive:?}"))?;

    // Colour only for a person at a terminal: a file, a pipe or a container log gets plain
    // text, as the official server writes it (and `NO_COLOR` turns colour off anywhere).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match args.log_format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
    };
    // The per-request span exists for OpenTelemetry; the log layer would format its fields
    // on every request (about 8 % of the CPU of a span write) only to prefix the rare log
    // line written inside a handler, which carries its own fields.
    let fmt = fmt.with_filter(filter_fn(|meta| {
        !(meta.is_span() && meta.name() == crate::ops::REQUEST_SPAN)
    }));

    let provider = if otlp_requested() {
        // The exporter's client trusts what every other client does, plus the standard
        // variable's CA file.
        let ca = [
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ]
        .into_iter()
        .find_map(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
        .map(std::path::PathBuf::from);
        let client = crate::tls::blocking_http_client(ca.as_deref())?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .build()
            .context("failed to build the otlp span exporter")?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(service);
        }
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("failed to install the tracing subscriber")?;
    Ok(Telemetry { provider })
}

/// Accepts Python-style level names (`INFO`, `WARNING`) as upstream's `--log-level` does.
fn expand_level(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        l @ ("error" | "warn" | "info" | "debug" | "trace" | "off") => l.to_owned(),
        _ => level.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::expand_level;

    #[test]
    fn python_level_names_map_to_tracing_levels() {
        assert_eq!(expand_level("WARNING"), "warn");
        assert_eq!(expand_level("DEBUG"), "debug");
        assert_eq!(expand_level("CRITICAL"), "error");
        assert_eq!(expand_level("agl_store=debug"), "agl_store=debug");
    }
}
