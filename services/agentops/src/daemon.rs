//! `--daemon`, the pid file, and telling a launcher the server is up.
//!
//! The parent re-runs its own command line with [`READY_ENV`] set, in a new session
//! (`setsid`, so the server outlives the terminal and the trainer that started it), with
//! output appended to the log file. The child binds, writes the pid file, then writes its
//! bound address to the ready file. The parent waits for that address to answer
//! `GET /health`, prints the environment block and exits 0; if the child dies or the
//! timeout passes, it prints the end of the log and exits non-zero.
//!
//! Stop the daemon with `kill "$(cat PIDFILE)"`: it drains, exits 0 and removes the pid
//! file.

use std::fs::{self, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::args::{AgentopsArgs, seconds};
use crate::env;

/// Set (to the ready file's path) in the daemon's own environment; marks the child.
pub const READY_ENV: &str = "AGL_AGENTOPS_DAEMON_READY_FILE";

/// Whether this process is the detached child of `--daemon`.
pub fn is_child() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// The pid file this run writes, if any: `--pid-file`, else a default under `--daemon`.
pub fn pid_file(args: &AgentopsArgs) -> Option<PathBuf> {
    args.pid_file.clone().or_else(|| {
        args.daemon
            .then(|| std::env::temp_dir().join(format!("agl-agentops-{}.pid", args.port)))
    })
}

/// The daemon's log file: `--log-file`, else a default next to the pid file.
pub fn log_file(args: &AgentopsArgs) -> PathBuf {
    args.log_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("agl-agentops-{}.log", args.port)))
}

/// The pid in `path`, if the file names a live process.
pub fn running_pid(path: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(path).ok()?.trim().parse().ok()?;
    let alive = Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    alive.then_some(pid)
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers never see
/// half of it.
fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// The pid file of this process; removed on drop if it still names this process.
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes this process's id to `path`, refusing when another live process owns it.
    pub fn create(path: PathBuf) -> anyhow::Result<Self> {
        if let Some(pid) = running_pid(&path)
            && pid != std::process::id()
        {
            anyhow::bail!(
                "another agl-agentops (pid {pid}) owns the pid file {}",
                path.display()
            );
        }
        write_atomic(&path, &format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write the pid file {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours =
            fs::read_to_string(&self.0).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// In the child: leaves the parent's session and controlling terminal.
pub fn detach() {
    if let Err(err) = rustix::process::setsid() {
        eprintln!("agl-agentops: setsid failed ({err}); staying in the parent's session");
    }
}

/// In the child, once bound: tells the waiting parent the address.
pub fn notify_ready(addr: SocketAddr) {
    if let Some(path) = std::env::var_os(READY_ENV)
        && let Err(err) = write_atomic(Path::new(&path), &addr.to_string())
    {
        tracing::error!(error = %err, "cannot tell the parent the server is up");
    }
}

/// Whether `GET /health` at `addr` answers 200, over plain HTTP/1.0 (no proxy, no runtime).
pub fn probe_health(addr: SocketAddr) -> bool {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let target = SocketAddr::new(ip, addr.port());
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: agl-agentops\r\n\r\n")?;
        let mut head = [0u8; 16];
        let n = stream.read(&mut head)?;
        let line = String::from_utf8_lossy(&head[..n]);
        Ok(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"))
    };
    attempt().unwrap_or(false)
}

/// The last `lines` lines of `path` from byte `from` on.
fn tail(path: &Path, from: u64, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The parent side of `--daemon`.
pub fn start(args: &AgentopsArgs) -> ExitCode {
    match spawn_and_wait(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agl agentops: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn spawn_and_wait(args: &AgentopsArgs) -> anyhow::Result<()> {
    let pid_path = pid_file(args).context("no pid file")?;
    if let Some(pid) = running_pid(&pid_path) {
        anyhow::bail!(
            "already running as pid {pid} (pid file {}); stop it with kill {pid}",
            pid_path.display()
        );
    }
    let log_path = log_file(args);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let log_start = log.metadata().map_or(0, |m| m.len());
    let ready = std::env::temp_dir().join(format!(
        "agl-agentops-ready-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let exe = std::env::current_exe().context("cannot find this program's executable")?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(READY_ENV, &ready)
        // Plain log lines in the file: no terminal colours.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the daemon")?;

    let deadline = Instant::now() + seconds(args.daemon_timeout_seconds);
    let failed = |why: String| -> anyhow::Error {
        let _ = fs::remove_file(&ready);
        anyhow::anyhow!(
            "{why}; last lines of {}:\n{}",
            log_path.display(),
            tail(&log_path, log_start, 20)
        )
    };
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(failed(format!(
                "the server exited during start-up ({status})"
            )));
        }
        let addr = fs::read_to_string(&ready)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok());
        if let Some(addr) = addr
            && probe_health(addr)
        {
            let _ = fs::remove_file(&ready);
            let base = env::base_url(args.public_url.as_deref(), &args.host, addr.port());
            eprintln!(
                "agl-agentops running as pid {} on {addr}; pid file {}; log file {}",
                child.id(),
                pid_path.display(),
                log_path.display()
            );
            print!("{}", env::block(&base, args.key.configured()));
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(failed(format!(
                "the server did not answer /health within {} s and was stopped",
                args.daemon_timeout_seconds
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
