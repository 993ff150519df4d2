//! How values read on a dashboard: UTC times, durations, byte sizes. No date library:
//! the civil calendar of an epoch time is a few lines (Howard Hinnant's algorithm).

/// `(year, month, day)` of days since 1970-01-01.
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whole milliseconds since the epoch, split into date and time of day.
#[allow(clippy::cast_possible_truncation)]
fn parts(t: f64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let ms = (t * 1000.0).round() as i64;
    let days = ms.div_euclid(86_400_000);
    let rest = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil(days);
    (
        y,
        mo,
        d,
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    )
}

/// `2026-12-04 19:11:10.123` (UTC).
pub fn utc(t: f64) -> String {
    let (y, mo, d, h, mi, s, ms) = parts(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{ms:03}")
}

/// `2026-12-04T19:11:10.123Z`, for `<time datetime>` and `<input type=datetime-local>`.
pub fn iso(t: f64) -> String {
    let (y, mo, d, h, mi, s, ms) = parts(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// The value of a `datetime-local` input (`2026-12-04T19:11`, seconds optional), read as
/// UTC, as epoch seconds.
pub fn parse_local(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let h: i64 = t.next()?.parse().ok()?;
    let mi: i64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next().map_or(Ok(0.0), str::parse).ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec >= 61.0 {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    Some((days_from_civil(y, m, day) * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil`]).
pub fn days_from_civil(y: i64, m: i64, day: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A duration for people: `830 µs`, `12.4 ms`, `3.21 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".to_owned();
    }
    if seconds < 0.001 {
        format!("{:.0} µs", seconds * 1e6)
    } else if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else if seconds < 60.0 {
        format!("{seconds:.2} s")
    } else {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let s = seconds.round() as u64;
        if s < 3600 {
            format!("{} min {:02} s", s / 60, s % 60)
        } else {
            format!("{} h {:02} min", s / 3600, s % 3600 / 60)
        }
    }
}

/// A byte count: `512 B`, `12.3 KiB`, `4.5 MiB`, `1.2 GiB`.
#[allow(clippy::cast_precision_loss)]
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_calendar_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00.000");
        // 2026-12-04T19:11:10.123Z, and a leap day.
        assert_eq!(iso(1_796_411_470.123), "2026-12-04T19:11:10.123Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn a_local_input_reads_back_as_the_same_instant() {
        for t in [0.0, 951_782_400.0, 1_796_411_470.0, 4_102_444_800.0] {
            let shown = iso(t);
            assert_eq!(parse_local(&shown[..19]), Some(t), "{shown}");
        }
        assert_eq!(parse_local("2026-12-04T19:11"), Some(1_796_411_460.0));
        assert_eq!(parse_local("yesterday"), None);
        assert_eq!(parse_local("2026-13-01T00:00"), None);
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(duration(0.000_83), "830 µs");
        assert_eq!(duration(0.0124), "12.4 ms");
        assert_eq!(duration(3.214), "3.21 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
        assert_eq!(duration(f64::NAN), "—");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(12_595), "12.3 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
