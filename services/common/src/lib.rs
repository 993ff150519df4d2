//! Shared plumbing for every agl service.
//!
//! * [`telemetry`]: the tracing subscriber (terminal or JSON logs, level from flags or
//!   `RUST_LOG`) and the optional OTLP/HTTP span exporter driven by the standard `OTEL_*`
//!   variables.
//! * [`ops`]: per-request server spans and metrics, `/metrics`, `/livez`, `/readyz`, and
//!   the serve loop that drains on shutdown.
//! * [`probe`]: the `healthcheck` subcommand's HTTP probe (images have no curl).
//! * [`shutdown`]: the SIGINT/SIGTERM future services hand to `axum::serve`.
//! * [`http`]: JSON error bodies and the `application/json` helpers all services answer with.
//! * [`cli`]: flags every service binary shares (log level and format).
//! * [`otlp`]: reading OTLP/HTTP requests (content type, decompression with a bomb guard,
//!   protobuf and OTLP/JSON decoding) and answering them, attribute values as JSON.
//!
//! * [`fuzzing`]: case counts and seeds of the randomized tests (`AGL_FUZZ_SCALE`,
//!   `AGL_FUZZ_SEED`).
//! * [`auth`]: the shared-key check every service puts in front of its routes.
//! * [`serve`]: the serve loop (HTTP/1.1 and HTTP/2, optional TLS, connection and time
//!   limits, graceful drain).
//! * [`tls`]: outbound HTTPS roots for every client, and the reloading server certificate.
//! * [`ui`]: the dashboards' layout, embedded assets, formatting and span waterfall.
//!
//! Nothing service-specific lives here.

pub mod auth;
pub mod cli;
pub mod fuzzing;
pub mod http;
pub mod ops;
pub mod otlp;
pub mod probe;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod ui;
