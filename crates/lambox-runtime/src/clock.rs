//! Wall-clock formatting Lambda uses (UTC only, so no time-zone database is needed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for times before it).
pub(crate) fn epoch_millis(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `(year, month, day, seconds-of-day, millis)` of a UTC time.
fn civil(t: SystemTime) -> (i64, u32, u32, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (y, m, dd) = civil_from_days(days);
    (y, m, dd, secs % 86_400, d.subsec_millis())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = if m <= 2 { y + 1 } else { y };
    (y, m as u32, d as u32)
}

/// `2019-09-18T00:02:46.542Z`.
pub(crate) fn iso8601_millis(t: SystemTime) -> String {
    let (y, m, d, sod, ms) = civil(t);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `2019/09/18`, the date part of a log stream name.
pub(crate) fn date_path(t: SystemTime) -> String {
    let (y, m, d, _, _) = civil(t);
    format!("{y:04}/{m:02}/{d:02}")
}

/// Milliseconds with two decimals, as Lambda prints durations (`12.34`).
pub(crate) fn millis_2(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_568_764_966_542);
        assert_eq!(iso8601_millis(t), "2019-09-18T00:02:46.542Z");
        assert_eq!(date_path(t), "2019/09/18");
        assert_eq!(epoch_millis(t), 1_568_764_966_542);
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(date_path(leap), "2000/02/29");
        assert_eq!(millis_2(Duration::from_micros(12_346)), "12.35");
    }
}
