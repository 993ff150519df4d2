//! Sizes of the randomized tests (OTLP decoding, the JSON fast paths, the SSE parser):
//! every such test takes its case count through [`cases`] and its seed through [`seed`],
//! so that CI runs thousands of cases and the long run of `docs/security.md` many more
//! (`AGL_FUZZ_SCALE=100`), and a failure found with a random seed
//! (`AGL_FUZZ_SEED=random`, printed by the test) can be replayed (`AGL_FUZZ_SEED=<n>`).

/// `default` cases times `AGL_FUZZ_SCALE` (1 when unset or unreadable).
pub fn cases(default: u32) -> u32 {
    let scale = std::env::var("AGL_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(1);
    default.saturating_mul(scale)
}

/// The seed of a fixed-seed randomized test: `AGL_FUZZ_SEED` when set (`random` draws
/// one), else `default`; printed, so that a failing run can be replayed.
pub fn seed(default: u64) -> u64 {
    let seed = match std::env::var("AGL_FUZZ_SEED")
        .ok()
        .as_deref()
        .map(str::trim)
    {
        Some("random") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(default, |d| d.as_nanos() as u64),
        Some(v) => v.parse().unwrap_or(default),
        None => default,
    };
    eprintln!("randomized test seed: AGL_FUZZ_SEED={seed}");
    seed
}
