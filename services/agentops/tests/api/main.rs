//! HTTP tests of agl-agentops: every test starts the real server on port 0 (in process, or
//! the built binary for the process-level behaviour) and talks to it over HTTP.

mod auth;
mod dashboard;
mod errors;
mod forward;
mod helpers;
mod inspection;
mod process;
mod sdk;
