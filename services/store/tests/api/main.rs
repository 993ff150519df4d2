//! Integration tests: each test starts a real `agl-store` on 127.0.0.1:0 and drives it
//! over HTTP. One test binary, modules by topic.

mod helpers;

mod auth;
mod dashboard;
mod durable;
mod errors;
mod history;
mod legacy;
mod limits;
mod otlp;
mod rollouts;
mod spans;
mod v1;
mod v1_proxy;
mod watchdog;
