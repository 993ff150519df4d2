//! Flags shared by every service binary.

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors (the images use this).
    Json,
}

/// Logging flags, flattened into each service's command line.
#[derive(Debug, Clone, Args, Default)]
pub struct LogArgs {
    /// Log level: error, warn, info, debug or trace (or a full `RUST_LOG`-style filter).
    /// When unset, `RUST_LOG` is used, then `info`.
    #[arg(long, env = "AGL_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Log format.
    #[arg(long, env = "AGL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
