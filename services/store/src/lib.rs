//! `agl-store`: a LightningStore server the official Agent Lightning clients cannot tell
//! apart from the Python one.
//!
//! * [`model`]: the wire types (rollouts, attempts, workers, resources, spans);
//! * [`core`]: the semantics, written once: status machines, queue, retries, watchdog,
//!   sequence ids, waiting; [`clock`] gives it time;
//! * [`persist`]: the narrow seam to durable storage; [`sqlite`]: the SQLite backend;
//!   [`postgres`]: a database shared by several store processes; [`sql`]: the rollout
//!   queries' SQL, written once for both;
//! * [`span`] and [`validate`]: request validation with FastAPI-shaped 422 errors;
//! * [`stored_span`]: the compact in-memory form of a stored span; [`json`]: stored JSON
//!   text written straight from request bytes (the fast way in for common bodies);
//! * [`metrics`]: the store's Prometheus metrics, ours and upstream's names;
//! * [`otlp`]: decoding OTLP/HTTP trace payloads into spans;
//! * [`v1`]: upstream v1's shapes (rollouts, events, triplets) on the same rows;
//! * [`api`]: the HTTP protocols (`/v1/agl`, `/agl/v1`, flat 0.2.2, v1's `/api`) and
//!   `/v1/traces`;
//! * [`dashboard`]: the HTML pages at `/` and `/ui/` (overview, rollouts, spans, LLM
//!   calls, resources, workers, the API reference);
//! * [`server`]: configuration, binding, the watchdog ticker and graceful shutdown;
//!   [`upstream_cli`]: upstream v1's `host=… port=…` start-up form read as flags.

pub mod api;
pub mod clock;
pub mod core;
pub mod dashboard;
pub mod json;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod persist;
pub mod postgres;
pub mod server;
pub mod span;
pub mod sql;
pub mod sqlite;
pub mod stored_span;
pub mod upstream_cli;
pub mod v1;
pub mod validate;

pub use server::{App, StoreArgs, run};
