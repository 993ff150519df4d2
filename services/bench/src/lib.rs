//! `agl-bench`: a load generator that measures LightningStore servers side by side, the
//! way runners, agents and algorithms use them.
//!
//! * [`scenario`]: the scenarios of `run` (health, enqueue, dequeue + update, span add,
//!   OTLP, span query, waits, a mixed training loop) and their set-up;
//! * [`driver`]: the measured window, per-path latency histograms and the recording HTTP
//!   client every scenario uses;
//! * [`payload`]: the request bodies, a realistic ~1 KB LLM-call span in JSON and OTLP;
//! * [`ceiling`]: the bare axum write ceiling;
//! * [`dashboard`]: each dashboard page's latency on a store filled to training-run size;
//! * [`grow`] and [`startup`]: memory and throughput as the store fills, exec to healthy;
//! * [`procstat`]: the server's memory and CPU time from `/proc`;
//! * [`results`] and [`report`]: the JSON result files and the Markdown rendered from them;
//! * [`cli`]: the `agl-bench` command line.

pub mod ceiling;
pub mod cli;
pub mod dashboard;
pub mod driver;
pub mod grow;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod results;
pub mod scenario;
pub mod startup;
