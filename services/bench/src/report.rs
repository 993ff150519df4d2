//! `agl-bench report`: renders `docs/benchmarks.md` from result files. Every number and
//! every met/missed verdict is computed here from the measurements, so the document cannot
//! drift from what was measured.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::results::{
    GrowResult, GrowStep, Machine, PathKind, PathStats, PgbenchResult, ResultFile, RunResult,
    ScenarioResult, StartupResult,
};
use crate::scenario::Scenario;

/// How to label and frame the report.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Label of the server under test.
    pub ours: String,
    /// Label of the official Python server.
    pub baseline: String,
    /// Label of the write ceiling.
    pub ceiling: String,
    /// Label of the server under test on SQLite storage.
    pub sqlite: String,
    /// Label of the SQLite store grown with finished rollouts (history) and restarted on
    /// that file.
    pub history: String,
    /// The command that produced the results, shown verbatim.
    pub command: String,
    /// Hand-written Markdown appended at the end (profiles, what limits a path).
    pub notes: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            ours: "agl-store".into(),
            baseline: "python".into(),
            ceiling: "ceiling".into(),
            sqlite: "agl-store-sqlite".into(),
            history: "agl-store-sqlite-history".into(),
            command: "./scripts/bench.sh".into(),
            notes: None,
        }
    }
}

/// The targets, as numbers.
const TARGET_RATIO: f64 = 50.0;
const TARGET_CEILING_SHARE: f64 = 0.90;
const TARGET_P99_MS: f64 = 5.0;
const TARGET_IDLE_RSS_BYTES: f64 = 20e6;
const TARGET_BYTES_PER_SPAN: f64 = 1500.0;
const TARGET_STARTUP_MS: f64 = 100.0;
const TARGET_FLATNESS: f64 = 0.80;
const TARGET_GROW_SPANS: u64 = 1_000_000;
/// Issue 5's target: the SQLite store against Python on span add and dequeue + update.
const TARGET_SQLITE_RATIO: f64 = 20.0;

/// Issue 14's targets for the SQLite store with history on disk.
const TARGET_HISTORY_SPANS: u64 = 10_000_000;
const TARGET_HISTORY_RSS_BYTES: f64 = 256.0 * 1024.0 * 1024.0;
const TARGET_RESTART_MS: f64 = 1000.0;
/// An old rollout's span query against a live one's, at the same store size.
const TARGET_OLD_QUERY_SHARE: f64 = 0.5;
/// The SQLite store's throughput before issue 14 (32 clients, this machine).
const BEFORE_SQLITE_SPAN_ADD: f64 = 19_000.0;
const BEFORE_SQLITE_DEQUEUE_UPDATE: f64 = 7_400.0;

/// How the SQLite store is named in the document.
const SQLITE_DISPLAY: &str = "agl-store (SQLite)";

/// Issue 14's Postgres targets: each path against pgbench sending the same transactions,
/// and two replicas against one.
const TARGET_PG_SHARE: f64 = 0.80;
/// Labels of the store on Postgres with one and with two replicas.
const PG_ONE: &str = "agl-store-pg";
const PG_TWO: &str = "agl-store-pg2";
/// The scenarios pgbench repeats, with the store path each is compared on.
const PG_PATHS: [(&str, &str); 3] = [
    ("span-add", "POST /v1/agl/spans"),
    ("dequeue-update", "dequeue + attempt update (op pair)"),
    ("enqueue", "POST /v1/agl/queues/rollouts/enqueue"),
];

/// Results grouped by server label.
#[derive(Default)]
struct Inputs {
    runs: BTreeMap<String, Vec<RunResult>>,
    grow: BTreeMap<String, GrowResult>,
    startup: BTreeMap<String, StartupResult>,
    /// By scenario (`span-add`, ...).
    pgbench: BTreeMap<String, PgbenchResult>,
}

impl Inputs {
    fn scenario(&self, label: &str, name: &str) -> Option<&ScenarioResult> {
        self.runs
            .get(label)?
            .iter()
            .flat_map(|r| &r.scenarios)
            .find(|s| s.name == name)
    }

    fn path(&self, label: &str, scenario: &str, path: &str) -> Option<&PathStats> {
        self.scenario(label, scenario)?
            .paths
            .iter()
            .find(|p| p.path == path)
    }

    /// Whether anything was measured for `label`.
    fn has(&self, label: &str) -> bool {
        self.runs.contains_key(label)
            || self.grow.contains_key(label)
            || self.startup.contains_key(label)
    }

    /// Every server command recorded for `label` (runs, growth, start-up).
    fn commands(&self, label: &str) -> Vec<&[String]> {
        let runs = self.runs.get(label).into_iter().flatten();
        runs.map(|r| &r.server_command[..])
            .chain(self.grow.get(label).map(|g| &g.server_command[..]))
            .chain(self.startup.get(label).map(|s| &s.command[..]))
            .filter(|c| !c.is_empty())
            .collect()
    }

    fn first_run(&self, label: &str) -> Option<&RunResult> {
        self.runs.get(label)?.first()
    }

    fn any_run(&self) -> Option<&RunResult> {
        self.runs.values().flatten().next()
    }

    fn machine(&self) -> Option<&Machine> {
        self.any_run()
            .map(|r| &r.machine)
            .or_else(|| self.grow.values().next().map(|g| &g.machine))
            .or_else(|| self.startup.values().next().map(|s| &s.machine))
    }

    fn started_unix(&self) -> Option<u64> {
        let runs = self.runs.values().flatten().map(|r| r.started_unix);
        let grows = self.grow.values().map(|g| g.started_unix);
        let starts = self.startup.values().map(|s| s.started_unix);
        runs.chain(grows).chain(starts).min()
    }

    /// Scenario names in run order, then any unknown ones.
    fn scenario_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Scenario::ALL.iter().map(|s| s.name().into()).collect();
        for s in self.runs.values().flatten().flat_map(|r| &r.scenarios) {
            if !names.contains(&s.name) {
                names.push(s.name.clone());
            }
        }
        // Upstream v1's scenarios have a section of their own.
        names.retain(|n| !n.starts_with("v1_"));
        names.retain(|n| {
            self.runs
                .values()
                .flatten()
                .any(|r| r.scenarios.iter().any(|s| &s.name == n))
        });
        names
    }
}

/// Calendar date of a Unix time (UTC), without a date library.
pub(crate) fn utc_date(unix: u64) -> String {
    let secs = unix % 86_400;
    let (y, m, d) = agl_common::ui::format::civil((unix / 86_400) as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60
    )
}

/// `12 345` style grouping for large rates, one decimal for small ones.
fn rate(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v < 100.0 {
        return format!("{v:.1}");
    }
    grouped(&format!("{v:.0}"))
}

/// A string of digits in groups of three: `12 345`.
pub(crate) fn grouped(digits: &str) -> String {
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Milliseconds with three significant digits or so.
pub(crate) fn ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn mib(kb: f64) -> String {
    if kb.is_finite() {
        format!("{:.1} MiB", kb / 1024.0)
    } else {
        "–".into()
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn times(r: Option<f64>) -> String {
    match r {
        Some(r) if r >= 10.0 => format!("{r:.0}×"),
        Some(r) => format!("{r:.1}×"),
        None => "–".into(),
    }
}

fn pct(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{:.0} %", r * 100.0))
}

fn latencies(p: Option<&PathStats>) -> String {
    p.map_or_else(
        || "–".into(),
        |p| format!("{} · {} · {}", ms(p.p50_ms), ms(p.p99_ms), ms(p.max_ms)),
    )
}

fn errors(p: Option<&PathStats>) -> String {
    p.map_or_else(|| "–".into(), |p| p.errors.to_string())
}

/// Pretty label for a server.
fn display(opts: &ReportOptions, label: &str) -> String {
    if label == opts.baseline {
        "Python".into()
    } else if label == opts.sqlite {
        SQLITE_DISPLAY.into()
    } else {
        label.into()
    }
}

/// A verdict line of the Targets section.
struct Verdict {
    target: String,
    measured: String,
    met: Option<bool>,
}

impl Verdict {
    fn status(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

/// The primary path of a write scenario, compared with the ceiling.
fn write_path(scenario: &str) -> Option<&'static str> {
    match scenario {
        "enqueue" => Some("POST /v1/agl/queues/rollouts/enqueue"),
        "dequeue_update" => Some("dequeue + attempt update (op pair)"),
        "span_add" => Some("POST /v1/agl/spans"),
        "otlp" => Some("POST /v1/traces"),
        _ => None,
    }
}

fn targets(inputs: &Inputs, opts: &ReportOptions) -> Vec<Verdict> {
    let mut out = Vec::new();
    let concurrency = inputs.first_run(&opts.ours).map_or(0, |r| r.concurrency);
    let at = if concurrency == 32 {
        "at 32 clients".to_owned()
    } else {
        format!("at 32 clients (measured at {concurrency})")
    };

    // Throughput against Python, every measured path.
    let mut ratios = Vec::new();
    for name in inputs.scenario_names() {
        let Some(ours) = inputs.scenario(&opts.ours, &name) else {
            continue;
        };
        for p in ours.paths.iter().filter(|p| p.kind != PathKind::Aux) {
            if let Some(base) = inputs.path(&opts.baseline, &name, &p.path)
                && let Some(r) = ratio(p.throughput_per_s, base.throughput_per_s)
            {
                ratios.push((r, format!("{name}: {}", p.path)));
            }
        }
    }
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let below = ratios.iter().filter(|(r, _)| *r < TARGET_RATIO).count();
    out.push(Verdict {
        target: format!("every path ≥ {TARGET_RATIO:.0}× the Python server's throughput {at}"),
        measured: match ratios.first() {
            Some((r, what)) => format!(
                "{} of {} paths below; lowest {} ({what}); highest {}",
                below,
                ratios.len(),
                times(Some(*r)),
                times(ratios.last().map(|x| x.0))
            ),
            None => "no paths measured on both servers".into(),
        },
        met: (!ratios.is_empty()).then_some(below == 0),
    });

    // Write paths against the ceiling.
    let mut shares = Vec::new();
    for name in inputs.scenario_names() {
        let Some(path) = write_path(&name) else {
            continue;
        };
        if let (Some(o), Some(c)) = (
            inputs.path(&opts.ours, &name, path),
            inputs.path(&opts.ceiling, &name, path),
        ) && let Some(r) = ratio(o.throughput_per_s, c.throughput_per_s)
        {
            shares.push((r, name));
        }
    }
    shares.sort_by(|a, b| a.0.total_cmp(&b.0));
    out.push(Verdict {
        target: format!(
            "every write path ≥ {:.0} % of the ceiling",
            TARGET_CEILING_SHARE * 100.0
        ),
        measured: if shares.is_empty() {
            "no ceiling measured".into()
        } else {
            shares
                .iter()
                .map(|(r, n)| format!("{n} {}", pct(Some(*r))))
                .collect::<Vec<_>>()
                .join(", ")
        },
        met: (!shares.is_empty()).then(|| shares.iter().all(|(r, _)| *r >= TARGET_CEILING_SHARE)),
    });

    // p99 of every request path (a wait's own timeout taken off).
    let mut p99s = Vec::new();
    for name in inputs.scenario_names() {
        if let Some(s) = inputs.scenario(&opts.ours, &name) {
            for p in s
                .paths
                .iter()
                .filter(|p| p.kind == PathKind::Http && p.requests > 0)
            {
                p99s.push((
                    p.p99_ms - p.floor_ms.unwrap_or(0.0),
                    format!("{name}: {}", p.path),
                    p.floor_ms,
                ));
            }
        }
    }
    p99s.sort_by(|a, b| b.0.total_cmp(&a.0));
    let over = p99s.iter().filter(|(v, _, _)| *v >= TARGET_P99_MS).count();
    out.push(Verdict {
        target: format!("p99 < {TARGET_P99_MS:.0} ms {at} (a wait's timeout is not counted)"),
        measured: match p99s.first() {
            Some((v, what, floor)) => format!(
                "{over} of {} request paths at or over; worst {} ms ({what}{})",
                p99s.len(),
                ms(*v),
                floor.map_or(String::new(), |f| format!(
                    ", beyond its {} ms timeout",
                    ms(f)
                ))
            ),
            None => "nothing measured".into(),
        },
        met: (!p99s.is_empty()).then_some(over == 0),
    });

    let startup = inputs.startup.get(&opts.ours);
    out.push(Verdict {
        target: "idle RSS < 20 MB".into(),
        measured: startup.map_or("–".into(), |s| {
            format!("{:.1} MB", s.idle_rss_kb as f64 * 1024.0 / 1e6)
        }),
        met: startup.map(|s| (s.idle_rss_kb as f64 * 1024.0) < TARGET_IDLE_RSS_BYTES),
    });

    let grow = inputs.grow.get(&opts.ours);
    let last = grow.and_then(|g| g.steps.last());
    out.push(Verdict {
        target: "≤ 1.5 KB of memory per stored span of ~1 KB JSON".into(),
        measured: match (grow, last) {
            (Some(g), Some(s)) => format!(
                "{:.0} bytes per span at {} spans ({:.0} bytes of JSON each)",
                s.bytes_per_span,
                rate(s.spans as f64),
                g.json_bytes_per_span
            ),
            _ => "–".into(),
        },
        met: last.map(|s| s.bytes_per_span <= TARGET_BYTES_PER_SPAN),
    });

    out.push(Verdict {
        target: format!("exec to healthy < {TARGET_STARTUP_MS:.0} ms"),
        measured: startup.map_or("–".into(), |s| {
            format!(
                "median {} ms of {} starts",
                ms(s.median_ms),
                s.runs_ms.len()
            )
        }),
        met: startup.map(|s| s.median_ms < TARGET_STARTUP_MS),
    });

    for (what, pick) in [
        (
            "span add",
            (|s: &crate::results::GrowStep| s.span_add.throughput_per_s) as fn(&_) -> f64,
        ),
        ("span query", |s: &crate::results::GrowStep| {
            s.span_query.throughput_per_s
        }),
    ] {
        let steps = grow.map_or(&[][..], |g| &g.steps[..]);
        let values: Vec<f64> = steps.iter().map(pick).collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
        let reached = steps.last().map_or(0, |s| s.spans);
        let flat = hi > 0.0 && lo / hi >= TARGET_FLATNESS;
        out.push(Verdict {
            target: format!("{what} throughput flat (within 20 %) from 1 000 to 1 000 000 spans"),
            measured: if values.is_empty() {
                "–".into()
            } else {
                format!(
                    "{}–{} /s from {} to {} spans (lowest {} of highest)",
                    rate(lo),
                    rate(hi),
                    rate(steps[0].spans as f64),
                    rate(reached as f64),
                    pct(ratio(lo, hi))
                )
            },
            met: (!values.is_empty()).then_some(flat && reached >= TARGET_GROW_SPANS),
        });
    }
    out
}

/// Issue 5's targets for the SQLite store: span add and dequeue + attempt update at 32
/// clients, each at least 20× the Python server.
fn sqlite_targets(inputs: &Inputs, opts: &ReportOptions) -> Vec<Verdict> {
    let concurrency = inputs.first_run(&opts.sqlite).map_or(0, |r| r.concurrency);
    let at = if concurrency == 32 {
        "at 32 clients".to_owned()
    } else {
        format!("at 32 clients (measured at {concurrency})")
    };
    [
        ("span_add", "POST /v1/agl/spans", "span add"),
        (
            "dequeue_update",
            "dequeue + attempt update (op pair)",
            "dequeue + attempt update",
        ),
    ]
    .into_iter()
    .map(|(scenario, path, what)| {
        let mine = inputs.path(&opts.sqlite, scenario, path);
        let base = inputs.path(&opts.baseline, scenario, path);
        let r = mine
            .zip(base)
            .and_then(|(m, b)| ratio(m.throughput_per_s, b.throughput_per_s));
        Verdict {
            target: format!(
                "issue 5: {SQLITE_DISPLAY} {what} ≥ {TARGET_SQLITE_RATIO:.0}× the Python \
                 server's throughput {at}"
            ),
            measured: match (mine, base) {
                (Some(m), Some(b)) => format!(
                    "{} ({} /s against {} /s)",
                    times(r),
                    rate(m.throughput_per_s),
                    rate(b.throughput_per_s)
                ),
                (Some(m), None) => format!("{} /s; Python not measured", rate(m.throughput_per_s)),
                _ => "–".into(),
            },
            met: r.map(|r| r >= TARGET_SQLITE_RATIO),
        }
    })
    .collect()
}

/// Issue 14's targets: bounded memory and a quick restart with history on disk, old
/// rollouts' span queries near live ones', and no slower writes than before.
fn history_targets(inputs: &Inputs, opts: &ReportOptions) -> Vec<Verdict> {
    let mut out = Vec::new();
    let grow = inputs.grow.get(&opts.history);
    let big = grow.and_then(|g| g.steps.iter().find(|s| s.spans >= TARGET_HISTORY_SPANS));
    out.push(Verdict {
        target: format!(
            "issue 14: {SQLITE_DISPLAY} RSS ≤ 256 MiB after {} stored spans of finished rollouts",
            rate(TARGET_HISTORY_SPANS as f64)
        ),
        measured: big.map_or("–".into(), |s| {
            format!("{} at {} spans", mib(s.rss_kb as f64), rate(s.spans as f64))
        }),
        met: big.map(|s| (s.rss_kb as f64 * 1024.0) <= TARGET_HISTORY_RSS_BYTES),
    });
    let restart = inputs.startup.get(&opts.history);
    let stored = grow
        .and_then(|g| g.steps.last())
        .map_or(0, |s| s.spans_after_add);
    out.push(Verdict {
        target: format!("issue 14: {SQLITE_DISPLAY} restart to healthy ≤ 1 s at that size"),
        measured: restart.map_or("–".into(), |s| {
            format!(
                "median {} ms of {} starts on a file of {} spans, {} RSS once healthy",
                ms(s.median_ms),
                s.runs_ms.len(),
                rate(stored as f64),
                mib(s.idle_rss_kb as f64)
            )
        }),
        met: restart.map(|s| s.median_ms <= TARGET_RESTART_MS && stored >= TARGET_HISTORY_SPANS),
    });
    // The same size in both growth runs: finished rollouts (read from the file) against
    // live ones (held in memory).
    let old = grow.and_then(|g| g.steps.iter().find(|s| s.spans >= TARGET_GROW_SPANS));
    let live = inputs
        .grow
        .get(&opts.sqlite)
        .and_then(|g| g.steps.iter().find(|s| s.spans >= TARGET_GROW_SPANS));
    let share = old
        .zip(live)
        .and_then(|(o, l)| ratio(o.span_query.throughput_per_s, l.span_query.throughput_per_s));
    out.push(Verdict {
        target: "issue 14: span query of an old rollout within 2× of a live one (1 000 000 spans)"
            .into(),
        measured: match (old, live) {
            (Some(o), Some(l)) => format!(
                "{} /s against {} /s ({} of it)",
                rate(o.span_query.throughput_per_s),
                rate(l.span_query.throughput_per_s),
                pct(share)
            ),
            _ => "–".into(),
        },
        met: share.map(|r| r >= TARGET_OLD_QUERY_SHARE),
    });
    for (scenario, path, what, before) in [
        (
            "span_add",
            "POST /v1/agl/spans",
            "span add",
            BEFORE_SQLITE_SPAN_ADD,
        ),
        (
            "dequeue_update",
            "dequeue + attempt update (op pair)",
            "dequeue + attempt update",
            BEFORE_SQLITE_DEQUEUE_UPDATE,
        ),
    ] {
        let mine = inputs.path(&opts.sqlite, scenario, path);
        out.push(Verdict {
            target: format!(
                "issue 14: {SQLITE_DISPLAY} {what} no lower than before ({} /s at 32 clients)",
                rate(before)
            ),
            measured: mine.map_or("–".into(), |m| format!("{} /s", rate(m.throughput_per_s))),
            met: mine.map(|m| m.throughput_per_s >= before),
        });
    }
    out
}

/// The `--sqlite-durability` a server command asked for (`full`, agl-store's default, when
/// it names none).
fn durability_of(cmd: &[String]) -> String {
    let mut args = cmd.iter();
    while let Some(a) = args.next() {
        if a == "--sqlite-durability" {
            if let Some(v) = args.next() {
                return v.clone();
            }
        } else if let Some(v) = a.strip_prefix("--sqlite-durability=") {
            return v.to_owned();
        }
    }
    "full".into()
}

/// One sentence on what an acknowledged write survives on each server, with the SQLite
/// store's level read from the server commands the results recorded.
fn durability_policy(inputs: &Inputs, opts: &ReportOptions) -> String {
    let mut levels: Vec<String> = inputs
        .commands(&opts.sqlite)
        .into_iter()
        .map(durability_of)
        .collect();
    levels.sort();
    levels.dedup();
    let sqlite = match levels.as_slice() {
        [l] if l == "full" => format!(
            "`{SQLITE_DISPLAY}` runs with `--sqlite-durability full` (the default): each \
             commit is appended to the write-ahead log and fsynced before any request in it \
             is answered with a 2xx, and concurrent requests share one fsync (group commit), \
             so every acknowledged write survives a crash or SIGKILL of the server and a \
             power loss"
        ),
        [l] if l == "normal" => format!(
            "`{SQLITE_DISPLAY}` runs with `--sqlite-durability normal`: commits are fsynced \
             only at checkpoints, so an acknowledged write survives a crash or SIGKILL of the \
             server but not a power loss"
        ),
        [] => format!("the durability level of `{SQLITE_DISPLAY}` was not recorded"),
        _ => format!(
            "the runs of `{SQLITE_DISPLAY}` used different durability levels ({})",
            levels.join(", ")
        ),
    };
    format!(
        "{sqlite}; `{}` (memory) and the Python server keep everything in memory and lose it \
         all when the process ends.",
        opts.ours
    )
}

fn header(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    let run = inputs.any_run();
    out.push_str("# Benchmarks: agl-store against the official Python server\n\n");
    out.push_str(
        "Generated by `agl-bench report` from the JSON results of one run of \
         `scripts/bench.sh`; do not edit by hand, run the command again.\n\n",
    );
    let _ = writeln!(out, "- **Command:** `{}`", opts.command);
    if let Some(t) = inputs.started_unix() {
        let _ = writeln!(out, "- **Date:** {}", utc_date(t));
    }
    if let Some(m) = inputs.machine() {
        let _ = writeln!(
            out,
            "- **Machine:** {} CPUs ({}), {:.1} GiB RAM, Linux {}",
            m.cpus,
            m.cpu_model,
            m.mem_total_kb as f64 / 1024.0 / 1024.0,
            m.kernel
        );
    }
    if let Some(r) = run {
        let _ = writeln!(
            out,
            "- **Load:** {} concurrent clients (keep-alive connections), {} s measured after \
             {} s of warm-up per scenario, each scenario on a freshly started server; the load \
             generator (`agl-bench`) runs on the same machine and shares its CPUs",
            r.concurrency, r.duration_s, r.warmup_s
        );
    }
    let sqlite = if inputs.has(&opts.sqlite) {
        format!(
            " with storage in memory; `{SQLITE_DISPLAY}`: the same binary with \
             `--storage sqlite:FILE`, a new file in the results folder for every server \
             start, deleted after it"
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "- **Servers:** `{}` (this repository, release build){sqlite}; `Python`: the official \
         server, `agl store` of `agentlightning==0.3.0`; `{}`: a bare axum handler that \
         parses each body (JSON into `serde_json::Value`, OTLP into its protobuf message) and \
         appends it to a vector, the upper bound of a write path on this machine",
        opts.ours, opts.ceiling
    );
    if inputs.has(&opts.sqlite) {
        let _ = writeln!(out, "- **Durability:** {}", durability_policy(inputs, opts));
    }
    out.push('\n');
}

fn scenario_tables(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    out.push_str("## Throughput and latency per path\n\n");
    out.push_str(
        "Requests per second completed inside the measured window; latencies in ms as \
         p50 · p99 · max; errors are non-2xx answers, transport failures and refused writes. \
         An *op* row times several requests as one operation.\n\n",
    );
    let o = &opts.ours;
    let b = &opts.baseline;
    let c = &opts.ceiling;
    let sq = &opts.sqlite;
    // Our servers, each compared with Python and the ceiling: the in-memory store, and the
    // SQLite one when it was measured (its columns are absent otherwise).
    let mut ours_labels: Vec<(&str, &str, &str)> = vec![(o.as_str(), o.as_str(), o.as_str())];
    if inputs.has(sq) {
        ours_labels.push((sq.as_str(), SQLITE_DISPLAY, "SQLite"));
    }
    for name in inputs.scenario_names() {
        let Some(ours) = inputs
            .scenario(o, &name)
            .or_else(|| inputs.scenario(sq, &name))
            .or_else(|| inputs.scenario(b, &name))
        else {
            continue;
        };
        let has_ceiling = inputs.scenario(c, &name).is_some();
        let _ = writeln!(out, "### {name}\n");
        out.push_str("| path |");
        for (_, long, _) in &ours_labels {
            let _ = write!(out, " {long} /s |");
        }
        out.push_str(" Python /s |");
        for (_, _, short) in &ours_labels {
            let _ = write!(out, " {short} ÷ Python |");
        }
        if has_ceiling {
            out.push_str(" ceiling /s |");
            for (_, _, short) in &ours_labels {
                let _ = write!(out, " {short} % of ceiling |");
            }
        }
        for (_, _, short) in &ours_labels {
            let _ = write!(out, " {short} p50 · p99 · max |");
        }
        let shorts: Vec<&str> = ours_labels.iter().map(|l| l.2).collect();
        let _ = writeln!(
            out,
            " Python p50 · p99 · max | errors {} · Python{} |",
            shorts.join(" · "),
            if has_ceiling { " · ceiling" } else { "" }
        );
        let n = ours_labels.len();
        let cols = 1 + 3 * n + 3 + if has_ceiling { 1 + n } else { 0 };
        let _ = writeln!(out, "|{}", "---|".repeat(cols));
        for p in &ours.paths {
            let mine: Vec<Option<&PathStats>> = ours_labels
                .iter()
                .map(|(l, _, _)| inputs.path(l, &name, &p.path))
                .collect();
            let pb = inputs.path(b, &name, &p.path);
            let pc = inputs.path(c, &name, &p.path);
            let tp = |x: Option<&PathStats>| x.map_or(f64::NAN, |x| x.throughput_per_s);
            let mut label = format!("`{}`", p.path);
            match p.kind {
                PathKind::Op => label.push_str(" (op)"),
                PathKind::Aux => label.push_str(" (aux)"),
                PathKind::Http => {}
            }
            if p.items_per_request > 1 {
                let _ = write!(label, ", {} items each", p.items_per_request);
            }
            // Refill traffic only keeps a scenario going: its rate is no one's score.
            let compare = |r: Option<f64>| if p.kind == PathKind::Aux { None } else { r };
            let _ = write!(out, "| {label} |");
            for pm in &mine {
                let _ = write!(out, " {} |", rate(tp(*pm)));
            }
            let _ = write!(out, " {} |", rate(tp(pb)));
            for pm in &mine {
                let _ = write!(out, " {} |", times(compare(ratio(tp(*pm), tp(pb)))));
            }
            if has_ceiling {
                let _ = write!(out, " {} |", rate(tp(pc)));
                for pm in &mine {
                    let _ = write!(out, " {} |", pct(compare(ratio(tp(*pm), tp(pc)))));
                }
            }
            for pm in &mine {
                let _ = write!(out, " {} |", latencies(*pm));
            }
            let errs: Vec<String> = mine.iter().map(|pm| errors(*pm)).collect();
            let _ = write!(
                out,
                " {} | {} · {}",
                latencies(pb),
                errs.join(" · "),
                errors(pb)
            );
            if has_ceiling {
                let _ = write!(out, " · {}", errors(pc));
            }
            out.push_str(" |\n");
        }
        let servers: Vec<&String> = if inputs.has(sq) {
            vec![o, sq, b, c]
        } else {
            vec![o, b, c]
        };
        out.push('\n');
        for &label in &servers {
            if let Some(s) = inputs
                .scenario(label, &name)
                .and_then(|s| s.server.as_ref())
            {
                let _ = writeln!(
                    out,
                    "- {}: RSS {} at start, {} peak (VmHWM {}); {:.3} CPU s per 1000 requests",
                    display(opts, label),
                    mib(s.rss_start_kb as f64),
                    mib(s.rss_peak_kb as f64),
                    mib(s.vm_hwm_kb as f64),
                    s.cpu_s_per_1000_ops
                );
            }
        }
        for &label in &servers {
            let Some(s) = inputs.scenario(label, &name) else {
                continue;
            };
            for p in &s.paths {
                if p.items_per_request > 1 && p.requests > 0 && p.kind != PathKind::Aux {
                    let _ = writeln!(
                        out,
                        "- {}: {} items/s through `{}`",
                        display(opts, label),
                        rate(p.throughput_per_s * p.items_per_request as f64),
                        p.path
                    );
                }
                if let Some(err) = &p.first_error {
                    let _ = writeln!(
                        out,
                        "- {}: first error on `{}`: {}",
                        display(opts, label),
                        p.path,
                        err.replace('\n', " ")
                    );
                }
            }
        }
        // A note every server shares is said once; the others name their server.
        let noted: Vec<(&str, &ScenarioResult)> = servers
            .iter()
            .filter_map(|l| inputs.scenario(l, &name).map(|s| (l.as_str(), s)))
            .collect();
        let mut said: Vec<&str> = Vec::new();
        for (label, s) in &noted {
            for note in &s.notes {
                if said.contains(&note.as_str()) {
                    continue;
                }
                if noted.iter().all(|(_, other)| other.notes.contains(note)) {
                    let _ = writeln!(out, "- {note}");
                    said.push(note);
                } else {
                    let _ = writeln!(out, "- {}: {note}", display(opts, label));
                }
            }
        }
        out.push('\n');
    }
}

fn memory(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    out.push_str("## Memory and start-up\n\n");
    let labels: Vec<&String> = if inputs.has(&opts.sqlite) {
        vec![&opts.ours, &opts.sqlite, &opts.baseline]
    } else {
        vec![&opts.ours, &opts.baseline]
    };
    out.push('|');
    for l in &labels {
        let _ = write!(out, " | {}", display(opts, l));
    }
    let _ = writeln!(out, " |\n|---|{}", "---|".repeat(labels.len()));
    let row = |out: &mut String, what: &str, f: &dyn Fn(&str) -> String| {
        let _ = write!(out, "| {what} |");
        for l in &labels {
            let _ = write!(out, " {} |", f(l));
        }
        out.push('\n');
    };
    row(out, "exec to healthy (median)", &|l| {
        inputs.startup.get(l).map_or("–".into(), |s| {
            format!(
                "{} ms ({} starts: {})",
                ms(s.median_ms),
                s.runs_ms.len(),
                s.runs_ms
                    .iter()
                    .map(|v| ms(*v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    });
    row(out, "idle RSS (1 s after healthy)", &|l| {
        inputs
            .startup
            .get(l)
            .map_or("–".into(), |s| mib(s.idle_rss_kb as f64))
    });
    row(out, "stored span, as JSON", &|l| {
        inputs.grow.get(l).map_or("–".into(), |g| {
            format!("{:.0} bytes", g.json_bytes_per_span)
        })
    });
    row(out, "memory per stored span (largest size)", &|l| {
        inputs
            .grow
            .get(l)
            .and_then(|g| g.steps.last())
            .map_or("–".into(), |s| {
                format!(
                    "{:.0} bytes (at {} spans)",
                    s.bytes_per_span,
                    rate(s.spans as f64)
                )
            })
    });
    row(out, "memory per million spans", &|l| {
        inputs
            .grow
            .get(l)
            .and_then(|g| g.steps.last())
            .map_or("–".into(), |s| {
                format!("{:.0} MiB", s.bytes_per_span * 1e6 / 1024.0 / 1024.0)
            })
    });
    row(out, "memory per 100 000 queued rollouts", &|l| {
        inputs.grow.get(l).map_or("–".into(), |g| {
            format!(
                "{} (measured with {} rollouts)",
                mib(g.kb_per_100k_rollouts),
                rate(g.rollouts as f64)
            )
        })
    });
    row(out, "RSS peak over all scenarios", &|l| {
        inputs
            .runs
            .get(l)
            .into_iter()
            .flatten()
            .flat_map(|r| &r.scenarios)
            .filter_map(|s| s.server.as_ref())
            .map(|s| s.rss_peak_kb)
            .max()
            .map_or("–".into(), |kb| mib(kb as f64))
    });
    out.push('\n');
    if let Some(f) = inputs
        .startup
        .get(&opts.sqlite)
        .and_then(|s| s.fresh_file.as_ref())
    {
        let _ = writeln!(
            out,
            "- {SQLITE_DISPLAY}: every start began without a database file (`{f}` removed \
             before it), so the time includes creating the file and its schema"
        );
    }
    // The SQLite store's growth notes are in its own section.
    for label in [&opts.ours, &opts.baseline] {
        if let Some(g) = inputs.grow.get(label) {
            for note in &g.notes {
                let _ = writeln!(out, "- {}: {note}", display(opts, label));
            }
        }
    }
    out.push('\n');
}

/// A throughput, with its window when a slow server needed a longer one than the step.
fn with_window(p: &PathStats, step_s: f64) -> String {
    if p.window_s > step_s * 1.5 {
        format!("{} (over {:.0} s)", rate(p.throughput_per_s), p.window_s)
    } else {
        rate(p.throughput_per_s)
    }
}

fn growth(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    let labels = [&opts.ours, &opts.baseline];
    if !labels.iter().any(|l| inputs.grow.contains_key(*l)) {
        return;
    }
    out.push_str("## As the store grows\n\n");
    let step_s = inputs
        .grow
        .values()
        .next()
        .map_or(0.0, |g| g.step_duration_s);
    let _ = writeln!(
        out,
        "The store is filled with rollouts of 100 OTLP spans each, then span add (single \
         spans into 32 rollouts) and span query (a random 100-span rollout per request) run \
         for {step_s} s each at every size, queries first. *spans stored* is the count both runs \
         start from; the adds grow the store further (to the count in brackets), and those \
         spans stay for the next size.\n"
    );
    for label in labels {
        let Some(g) = inputs.grow.get(label) else {
            continue;
        };
        let _ = writeln!(
            out,
            "**{}**\n\n| spans stored (after the adds) | span add /s | p99 ms | span query /s \
             | p99 ms | RSS | memory per span |\n|---|---|---|---|---|---|---|",
            display(opts, label)
        );
        for s in &g.steps {
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {} | {} | {} | {} | {:.0} bytes |",
                rate(s.spans as f64),
                rate(s.spans_after_add as f64),
                with_window(&s.span_add, g.step_duration_s),
                ms(s.span_add.p99_ms),
                with_window(&s.span_query, g.step_duration_s),
                ms(s.span_query.p99_ms),
                mib(s.rss_kb as f64),
                s.bytes_per_span
            );
        }
        out.push('\n');
    }
    let ours = inputs
        .grow
        .get(&opts.ours)
        .map_or(&[][..], |g| &g.steps[..]);
    let base = inputs
        .grow
        .get(&opts.baseline)
        .map_or(&[][..], |g| &g.steps[..]);
    if base.len() < ours.len() {
        let _ = writeln!(
            out,
            "The Python server's growth run stops at {} spans: at its write rate, filling a \
             million spans would take far longer than the rest of the benchmark.",
            rate(base.last().map_or(0, |s| s.spans) as f64)
        );
    }
    let errs: u64 = labels
        .iter()
        .filter_map(|l| inputs.grow.get(*l))
        .flat_map(|g| &g.steps)
        .map(|s| s.span_add.errors + s.span_query.errors)
        .sum();
    let _ = writeln!(out, "\nErrors during the growth runs: {errs}.\n");
}

/// Bytes on disk of one growth step, per stored span: the file's growth since the rollouts
/// were enqueued (where the spans began) divided by the spans.
fn disk_per_span(g: &GrowResult, s: &GrowStep) -> Option<f64> {
    let now = s.disk?.total() as f64;
    let before = g
        .disk_after_rollouts
        .or(g.disk_base)
        .map_or(0, |d| d.total()) as f64;
    Some((now - before) / s.spans.max(1) as f64)
}

fn mib_bytes(bytes: u64) -> String {
    mib(bytes as f64 / 1024.0)
}

/// The SQLite store: bytes on disk, and its growth run.
fn sqlite_section(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    let Some(g) = inputs.grow.get(&opts.sqlite) else {
        return;
    };
    out.push_str("## SQLite storage: bytes on disk, and as the store grows\n\n");
    let _ = writeln!(
        out,
        "`{SQLITE_DISPLAY}` is filled the same way as above, on a new file: 100-span \
         rollouts sent over OTLP after {} queued rollouts, then span add and span query at \
         every size. *On disk* is the length of the database file plus its write-ahead log \
         (`FILE-wal`), read right after each fill together with the memory; *per span* is its \
         growth since the rollouts were enqueued divided by the spans stored. SQLite \
         checkpoints the log into the database file as it goes and reuses it, and both files \
         grow in steps, so the per-span figure is coarse at the smallest sizes.\n",
        rate(g.rollouts as f64)
    );
    if let Some(last) = g.steps.last()
        && let (Some(d), Some(per_span)) = (last.disk, disk_per_span(g, last))
    {
        let _ = writeln!(
            out,
            "- **Bytes on disk per million spans: {:.0} MiB** ({per_span:.0} bytes per stored \
             span at {} spans, each {:.0} bytes as JSON; {} database file + {} write-ahead \
             log)",
            per_span * 1e6 / 1024.0 / 1024.0,
            rate(last.spans as f64),
            g.json_bytes_per_span,
            mib_bytes(d.main_bytes),
            mib_bytes(d.wal_bytes)
        );
    }
    if let (Some(base), Some(after)) = (g.disk_base, g.disk_after_rollouts)
        && g.rollouts > 0
    {
        let _ = writeln!(
            out,
            "- On disk per 100 000 queued rollouts: {} ({} for the empty store, {} after \
             {} rollouts)",
            mib_bytes(
                (after.total().saturating_sub(base.total()) as f64 * 100_000.0 / g.rollouts as f64)
                    as u64
            ),
            mib_bytes(base.total()),
            mib_bytes(after.total()),
            rate(g.rollouts as f64)
        );
    }
    if let Some(last) = g.steps.last() {
        let memory_store = inputs
            .grow
            .get(&opts.ours)
            .and_then(|m| m.steps.last())
            .map_or(String::new(), |m| {
                format!(
                    "; `{}` in memory: {:.0} bytes at {} spans",
                    opts.ours,
                    m.bytes_per_span,
                    rate(m.spans as f64)
                )
            });
        let _ = writeln!(
            out,
            "- Memory per stored span: {:.0} bytes at {} spans (the SQLite store keeps its \
             working set in memory as well{memory_store})",
            last.bytes_per_span,
            rate(last.spans as f64)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| spans stored (after the adds) | span add /s | p99 ms | span query /s | p99 ms | RSS \
         | memory per span | on disk (database + WAL) | on disk per span |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for s in &g.steps {
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {:.0} bytes | {} | {} |",
            rate(s.spans as f64),
            rate(s.spans_after_add as f64),
            with_window(&s.span_add, g.step_duration_s),
            ms(s.span_add.p99_ms),
            with_window(&s.span_query, g.step_duration_s),
            ms(s.span_query.p99_ms),
            mib(s.rss_kb as f64),
            s.bytes_per_span,
            s.disk.map_or("–".into(), |d| format!(
                "{} + {}",
                mib_bytes(d.main_bytes),
                mib_bytes(d.wal_bytes)
            )),
            disk_per_span(g, s).map_or("–".into(), |b| format!("{b:.0} bytes"))
        );
    }
    out.push('\n');
    for note in &g.notes {
        let _ = writeln!(out, "- {note}");
    }
    let errs: u64 = g
        .steps
        .iter()
        .map(|s| s.span_add.errors + s.span_query.errors)
        .sum();
    let _ = writeln!(out, "\nErrors during the SQLite growth run: {errs}.\n");
}

/// The SQLite store grown with finished rollouts, and restarted on that file.
fn history_section(out: &mut String, inputs: &Inputs, opts: &ReportOptions) {
    let Some(g) = inputs.grow.get(&opts.history) else {
        return;
    };
    out.push_str(
        "## SQLite storage with history: memory and restart against history size

",
    );
    let _ = writeln!(
        out,
        "`{SQLITE_DISPLAY}` on a new file, filled as above but each 100-span rollout marked \
         succeeded once its spans are in (`agl-bench grow --finish`), as a training run \
         leaves them: the file holds the history, memory the live rollouts and \
         `--cache-mib` (default 64 MiB) of finished ones. Span query reads random finished \
         rollouts, nearly all of them from the file; span add writes into 32 live rollouts, \
         which stay in memory (their spans are part of the RSS). Then the server is stopped \
         and started {} times on the same file.\n",
        inputs
            .startup
            .get(&opts.history)
            .map_or(0, |s| s.runs_ms.len())
    );
    let _ = writeln!(
        out,
        "| spans stored (after the adds) | RSS | span add /s | p99 ms | span query (old rollouts) /s \
         | p99 ms | on disk (database + WAL) |\n|---|---|---|---|---|---|---|"
    );
    for s in &g.steps {
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {} | {} | {} |",
            rate(s.spans as f64),
            rate(s.spans_after_add as f64),
            mib(s.rss_kb as f64),
            with_window(&s.span_add, g.step_duration_s),
            ms(s.span_add.p99_ms),
            with_window(&s.span_query, g.step_duration_s),
            ms(s.span_query.p99_ms),
            s.disk.map_or("–".into(), |d| format!(
                "{} + {}",
                mib_bytes(d.main_bytes),
                mib_bytes(d.wal_bytes)
            )),
        );
    }
    if let Some(r) = inputs.startup.get(&opts.history) {
        let runs: Vec<String> = r.runs_ms.iter().map(|m| ms(*m)).collect();
        let _ = writeln!(
            out,
            "\nRestart on that file: exec to healthy median {} ms ({} ms), RSS once healthy {} \
             (the live rollouts and their spans, read back).",
            ms(r.median_ms),
            runs.join(", "),
            mib(r.idle_rss_kb as f64)
        );
    }
    out.push('\n');
    for note in &g.notes {
        let _ = writeln!(out, "- {note}");
    }
    let errs: u64 = g
        .steps
        .iter()
        .map(|s| s.span_add.errors + s.span_query.errors)
        .sum();
    let _ = writeln!(out, "\nErrors during the history growth run: {errs}.\n");
}

/// Renders the report from result files.
pub fn render(files: Vec<ResultFile>, opts: &ReportOptions) -> String {
    let mut inputs = Inputs::default();
    for f in files {
        match f {
            ResultFile::Run(r) => inputs.runs.entry(r.label.clone()).or_default().push(r),
            ResultFile::Grow(g) => {
                inputs.grow.insert(g.label.clone(), g);
            }
            ResultFile::Startup(s) => {
                inputs.startup.insert(s.label.clone(), s);
            }
            ResultFile::Pgbench(p) => {
                inputs.pgbench.insert(p.scenario.clone(), p);
            }
            // `agl-bench dashboard` renders its own document.
            ResultFile::Dashboard(_) => {}
        }
    }
    let mut out = String::new();
    header(&mut out, &inputs, opts);
    out.push_str("## Targets\n\n");
    let mut verdicts = targets(&inputs, opts);
    if inputs.has(&opts.sqlite) {
        let _ = writeln!(
            out,
            "Issue 3's targets (for `{}`, in memory), issue 5's and issue 14's (for \
             `{SQLITE_DISPLAY}`), checked against the numbers below.\n",
            opts.ours
        );
        verdicts.extend(sqlite_targets(&inputs, opts));
        if inputs.has(&opts.history) {
            verdicts.extend(history_targets(&inputs, opts));
        }
        if inputs.has(PG_ONE) {
            verdicts.extend(postgres_targets(&inputs));
        }
        if inputs.has(V1_OURS) {
            verdicts.extend(v1_targets(&inputs));
        }
    } else {
        out.push_str("Issue 3's targets, checked against the numbers below.\n\n");
    }
    out.push_str("| target | measured | status |\n|---|---|---|\n");
    for v in verdicts {
        let _ = writeln!(out, "| {} | {} | {} |", v.target, v.measured, v.status());
    }
    out.push('\n');
    scenario_tables(&mut out, &inputs, opts);
    memory(&mut out, &inputs, opts);
    growth(&mut out, &inputs, opts);
    sqlite_section(&mut out, &inputs, opts);
    history_section(&mut out, &inputs, opts);
    postgres_section(&mut out, &inputs);
    v1_section(&mut out, &inputs);
    out.push_str("## How to read these numbers\n\n");
    out.push_str(
        "- The load generator and the server share the machine's CPUs, so every number is a \
         lower bound for the server alone; the ceiling is measured with the same generator \
         and pays the same cost, which is why a write path is judged as a share of it.\n\
         - `wait` is bound by its timeout: each call waits for a rollout that never \
         finishes, so its throughput is at most clients ÷ timeout on any server; what it shows \
         is how much later than the timeout the answer comes.\n\
         - `mixed` counts both what the runners do and what the algorithm sees: a training \
         step is the time from enqueueing a batch to the last of its rollouts finishing.\n\
         - CPU seconds per 1000 requests are the server's user + system time inside the \
         measured window (from `/proc/PID/stat`), divided by the requests completed in it.\n",
    );
    if inputs.has(&opts.sqlite) {
        let _ = writeln!(
            out,
            "- `{SQLITE_DISPLAY}` keeps its file on this machine's disk, in the results folder: \
             a write is answered only after its commit's fsync, so its write paths also \
             measure how fast this disk syncs, a cost group commit shares among the requests \
             that arrive together."
        );
    }
    out.push('\n');
    if let Some(notes) = &opts.notes {
        out.push_str(notes.trim_end());
        out.push('\n');
    }
    out
}

/// The bench scenario's result name for a pgbench script (`span-add` → `span_add`).
fn pg_scenario(script: &str) -> String {
    script.replace('-', "_")
}

/// Issue 14's Postgres targets.
fn postgres_targets(inputs: &Inputs) -> Vec<Verdict> {
    let mut shares = Vec::new();
    let mut pairs = Vec::new();
    for (script, path) in PG_PATHS {
        let name = pg_scenario(script);
        let one = inputs.path(PG_ONE, &name, path);
        if let (Some(o), Some(raw)) = (one, inputs.pgbench.get(script))
            && let Some(r) = ratio(o.throughput_per_s, raw.tps)
        {
            shares.push((r, script));
        }
        if let (Some(o), Some(t)) = (one, inputs.path(PG_TWO, &name, path))
            && let Some(r) = ratio(t.throughput_per_s, o.throughput_per_s)
        {
            pairs.push((r, script));
        }
    }
    let list = |v: &[(f64, &str)], f: fn(Option<f64>) -> String| {
        v.iter()
            .map(|(r, n)| format!("{n} {}", f(Some(*r))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        Verdict {
            target: format!(
                "Postgres: every path ≥ {:.0} % of pgbench sending the same transactions",
                TARGET_PG_SHARE * 100.0
            ),
            measured: if shares.is_empty() {
                "no pgbench run".into()
            } else {
                list(&shares, pct)
            },
            met: (!shares.is_empty()).then(|| shares.iter().all(|(r, _)| *r >= TARGET_PG_SHARE)),
        },
        Verdict {
            target: "Postgres: two replicas ≥ one, every path".into(),
            measured: if pairs.is_empty() {
                "not measured with two replicas".into()
            } else {
                list(&pairs, times)
            },
            met: (!pairs.is_empty()).then(|| pairs.iter().all(|(r, _)| *r >= 1.0)),
        },
    ]
}

/// Postgres: one and two replicas on every path, beside pgbench's raw transactions.
fn postgres_section(out: &mut String, inputs: &Inputs) {
    if !inputs.has(PG_ONE) {
        return;
    }
    out.push_str("## Postgres: one and two replicas, and the same transactions raw\n\n");
    out.push_str(
        "`agl-store-pg` is one store process on a Postgres server of its own (Debian's \
         postgresql-15, fsync on, `synchronous_commit` on: every answered write is in the \
         server's fsynced WAL), reached over a Unix socket, on this same machine; \
         `agl-store-pg2` is two processes on one database with the clients spread over both \
         (memory and CPU columns are the first one's). *pgbench* sends, with the same number of \
         clients, exactly the statements the store sends for one request \
         (`services/bench/pgbench/`): the ceiling of that request done one transaction at a \
         time. The store groups concurrent span writes into shared transactions, so on span \
         add it can pass that ceiling.\n\n",
    );
    out.push_str("| scenario · path | 1 replica /s | 2 replicas /s | 2 ÷ 1 | pgbench /s | 1 replica ÷ pgbench | p99 ms (1 · 2) |\n|---|---|---|---|---|---|---|\n");
    for name in inputs.scenario_names() {
        let Some(one) = inputs.scenario(PG_ONE, &name) else {
            continue;
        };
        for p in one.paths.iter().filter(|p| p.kind != PathKind::Aux) {
            let two = inputs.path(PG_TWO, &name, &p.path);
            let raw = PG_PATHS
                .iter()
                .find(|(script, path)| pg_scenario(script) == name && *path == p.path)
                .and_then(|(script, _)| inputs.pgbench.get(*script));
            let _ = writeln!(
                out,
                "| {name} · `{}` | {} | {} | {} | {} | {} | {} · {} |",
                p.path,
                rate(p.throughput_per_s),
                two.map_or("–".into(), |t| rate(t.throughput_per_s)),
                times(two.and_then(|t| ratio(t.throughput_per_s, p.throughput_per_s))),
                raw.map_or("–".into(), |r| rate(r.tps)),
                pct(raw.and_then(|r| ratio(p.throughput_per_s, r.tps))),
                ms(p.p99_ms),
                two.map_or("–".into(), |t| ms(t.p99_ms)),
            );
        }
    }
    out.push('\n');
}

/// Labels of the v1 runs: agl-store (memory) and upstream's `agl-server` of 1.0.2.
const V1_OURS: &str = "agl-store-v1";
const V1_UPSTREAM: &str = "agl-server-1.0.2";
/// Issue 15's targets: store routes against upstream's, and the proxy's own latency.
const TARGET_V1_RATIO: f64 = 50.0;
const TARGET_PROXY_ADDED_MS: f64 = 1.0;
/// The v1 store routes and their measured path.
const V1_STORE_PATHS: [(&str, &str); 5] = [
    ("v1_create", "POST /api/rollouts"),
    ("v1_patch", "PATCH /api/rollouts/{id}"),
    ("v1_event", "POST /api/rollouts/{id}/attempt/0/events"),
    ("v1_events", "GET /api/rollouts/{id}/events"),
    (
        "v1_triplets",
        "GET /api/rollouts/{id}/events?format=triplet",
    ),
];
/// The proxy scenarios: the path through the proxy and the same call made directly.
const V1_PROXY_PATHS: [(&str, &str, &str); 2] = [
    (
        "v1_proxy",
        "POST /proxy/…/openai/v1/chat/completions",
        "POST {model server}/v1/chat/completions (direct)",
    ),
    (
        "v1_proxy_stream",
        "POST /proxy/…/openai/v1/chat/completions (stream)",
        "POST {model server}/v1/chat/completions (stream, direct)",
    ),
];

/// What a label's proxy adds at p50: through it minus straight to the model server.
fn proxy_added_ms(
    inputs: &Inputs,
    label: &str,
    scenario: &str,
    via: &str,
    direct: &str,
) -> Option<f64> {
    let through = inputs.path(label, scenario, via)?;
    let straight = inputs.path(label, scenario, direct)?;
    (through.errors == 0 && through.requests > 0).then_some(through.p50_ms - straight.p50_ms)
}

fn v1_targets(inputs: &Inputs) -> Vec<Verdict> {
    let mut ratios = Vec::new();
    for (scenario, path) in V1_STORE_PATHS {
        let ours = inputs.path(V1_OURS, scenario, path);
        let theirs = inputs.path(V1_UPSTREAM, scenario, path);
        if let (Some(o), Some(t)) = (ours, theirs)
            && let Some(r) = ratio(o.throughput_per_s, t.throughput_per_s)
        {
            ratios.push((scenario, r));
        }
    }
    let store = if ratios.is_empty() {
        Verdict {
            target: "issue 15: v1 store routes ≥ 50× upstream's agl-server at 32 clients".into(),
            measured: "not measured".into(),
            met: None,
        }
    } else {
        let low = ratios
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        let high = ratios
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("not empty");
        let passed = ratios.iter().filter(|r| r.1 >= TARGET_V1_RATIO).count();
        Verdict {
            target: "issue 15: v1 store routes ≥ 50× upstream's agl-server at 32 clients".into(),
            measured: format!(
                "{passed} of {} routes; lowest {} ({}), highest {} ({})",
                ratios.len(),
                times(Some(low.1)),
                low.0,
                times(Some(high.1)),
                high.0
            ),
            met: Some(passed == ratios.len()),
        }
    };
    let mut out = vec![store];
    for (scenario, via, direct) in V1_PROXY_PATHS {
        let added = proxy_added_ms(inputs, V1_OURS, scenario, via, direct);
        out.push(Verdict {
            target: format!("issue 15: the proxy adds < 1 ms at p50 ({scenario})"),
            measured: added.map_or_else(
                || "not measured".into(),
                |a| {
                    format!(
                        "{} ms (through it minus straight to the model server)",
                        ms(a)
                    )
                },
            ),
            met: added.map(|a| a < TARGET_PROXY_ADDED_MS),
        });
    }
    out
}

fn v1_section(out: &mut String, inputs: &Inputs) {
    if !inputs.has(V1_OURS) {
        return;
    }
    out.push_str("## Upstream v1 (agentlightning 1.0.2): agl-store against agl-server\n\n");
    out.push_str(
        "`agl-store` (memory, `--proxy-model-name test-model`) against upstream's own \
         `agl-server` of `agentlightning==1.0.2` (`default_proxy.model_name=test-model`), the \
         same scenarios one server after the other; the proxy scenarios forward to the vLLM \
         double (`agl-vllm fake-vllm`), and each worker also makes the same call straight \
         to it, so that the difference of the two p50s is what the proxy adds. Upstream \
         refuses streams (`400`), so it has no streamed row.\n\n",
    );
    out.push_str(
        "| scenario | path | agl-store /s | agl-server 1.0.2 /s | agl-store ÷ upstream | \
         agl-store p50 · p99 · max | upstream p50 · p99 · max | errors agl-store · upstream |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let mut rows: Vec<(&str, &str)> = V1_STORE_PATHS.to_vec();
    for (scenario, via, direct) in V1_PROXY_PATHS {
        rows.push((scenario, via));
        rows.push((scenario, direct));
    }
    for (scenario, path) in rows {
        let ours = inputs.path(V1_OURS, scenario, path);
        let theirs = inputs.path(V1_UPSTREAM, scenario, path);
        if ours.is_none() && theirs.is_none() {
            continue;
        }
        let tp = |p: Option<&PathStats>| p.map_or(f64::NAN, |p| p.throughput_per_s);
        let _ = writeln!(
            out,
            "| {scenario} | `{path}` | {} | {} | {} | {} | {} | {} · {} |",
            rate(tp(ours)),
            rate(tp(theirs)),
            times(ratio(tp(ours), tp(theirs))),
            latencies(ours),
            latencies(theirs),
            errors(ours),
            errors(theirs),
        );
    }
    out.push('\n');
    for (scenario, via, direct) in V1_PROXY_PATHS {
        let ours = proxy_added_ms(inputs, V1_OURS, scenario, via, direct);
        let theirs = proxy_added_ms(inputs, V1_UPSTREAM, scenario, via, direct);
        let _ = writeln!(
            out,
            "- {scenario}: the proxy adds {} ms at p50 on agl-store, {} ms on agl-server 1.0.2.",
            ours.map_or_else(|| "–".into(), ms),
            theirs.map_or_else(|| "–".into(), ms),
        );
    }
    for label in [V1_OURS, V1_UPSTREAM] {
        for (scenario, _) in V1_STORE_PATHS {
            if let Some(s) = inputs.scenario(label, scenario) {
                for note in &s.notes {
                    let _ = writeln!(out, "- {label}, {scenario}: {note}");
                }
                break;
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn durability_from_the_command() {
        let cmd = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            durability_of(&cmd("agl-store --storage sqlite:x.db")),
            "full"
        );
        assert_eq!(
            durability_of(&cmd("agl-store --sqlite-durability normal --port 1")),
            "normal"
        );
        assert_eq!(
            durability_of(&cmd("agl-store --sqlite-durability=full")),
            "full"
        );
    }

    #[test]
    fn rates_group_thousands() {
        assert_eq!(rate(1234567.4), "1 234 567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(12.34), "12.3");
    }
}
