//! Calendar periods for budgets: day, ISO week (Monday) and month, in UTC or a fixed offset.
//! Pure arithmetic on Unix seconds (Howard Hinnant's civil-date algorithms), so the period
//! boundaries can be tested exactly.

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// Calendar day.
    Day,
    /// ISO week, Monday to Sunday.
    Week,
    /// Calendar month.
    Month,
}

impl Period {
    /// The config name, also the `period` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "day" | "daily" => Period::Day,
            "week" | "weekly" => Period::Week,
            "month" | "monthly" => Period::Month,
            _ => return None,
        })
    }

    /// The period containing `unix` seconds, as (start, end) in Unix seconds, with local time
    /// `offset_secs` east of UTC.
    pub fn bounds(self, unix: i64, offset_secs: i64) -> (i64, i64) {
        let local = unix + offset_secs;
        let day = local.div_euclid(86_400);
        let (start_day, end_day) = match self {
            Period::Day => (day, day + 1),
            Period::Week => {
                // 1970-01-01 was a Thursday: days since the Monday before it.
                let monday = day - (day + 3).rem_euclid(7);
                (monday, monday + 7)
            }
            Period::Month => {
                let (y, m, _) = civil_from_days(day);
                let start = days_from_civil(y, m, 1);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (start, days_from_civil(ny, nm, 1))
            }
        };
        (
            start_day * 86_400 - offset_secs,
            end_day * 86_400 - offset_secs,
        )
    }

    /// A stable id of the period containing `unix`, such as `2026-11-23`, `2026-W48`, `2026-11`.
    pub fn id(self, unix: i64, offset_secs: i64) -> String {
        let (start, _) = self.bounds(unix, offset_secs);
        let (y, m, d) = civil_from_days((start + offset_secs).div_euclid(86_400));
        match self {
            Period::Day => format!("{y:04}-{m:02}-{d:02}"),
            Period::Week => format!("{y:04}-{m:02}-{d:02}w"),
            Period::Month => format!("{y:04}-{m:02}"),
        }
    }
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 UTC time of Unix seconds, for messages.
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Parses a fixed UTC offset: `UTC`, `Z`, `+02:00`, `-05:30`.
pub fn parse_offset(s: &str) -> Option<i64> {
    match s {
        "UTC" | "utc" | "Z" | "+00:00" => return Some(0),
        _ => {}
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(y: i64, m: u32, d: u32, hh: i64, mm: i64, ss: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss
    }

    #[test]
    fn civil_round_trip() {
        for z in [-800_000, -1, 0, 1, 10_957, 20_415, 60_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn day_rolls_over_at_midnight_utc() {
        let before = unix(2026, 11, 23, 23, 59, 59);
        let after = before + 1;
        assert_eq!(Period::Day.id(before, 0), "2026-11-23");
        assert_eq!(Period::Day.id(after, 0), "2026-11-24");
        assert_eq!(
            Period::Day.bounds(before, 0),
            (unix(2026, 11, 23, 0, 0, 0), after)
        );
    }

    #[test]
    fn month_ends_including_leap_february() {
        let jan31 = unix(2028, 1, 31, 23, 59, 59);
        assert_eq!(Period::Month.id(jan31, 0), "2028-01");
        assert_eq!(Period::Month.id(jan31 + 1, 0), "2028-02");
        let (start, end) = Period::Month.bounds(unix(2028, 2, 15, 12, 0, 0), 0);
        assert_eq!(
            (start, end),
            (unix(2028, 2, 1, 0, 0, 0), unix(2028, 3, 1, 0, 0, 0))
        );
        assert_eq!((end - start) / 86_400, 29);
        let dec = Period::Month.bounds(unix(2026, 12, 31, 10, 0, 0), 0);
        assert_eq!(dec.1, unix(2027, 1, 1, 0, 0, 0));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-23 is a Monday.
        let (start, end) = Period::Week.bounds(unix(2026, 11, 26, 8, 0, 0), 0);
        assert_eq!(start, unix(2026, 11, 23, 0, 0, 0));
        assert_eq!(end, unix(2026, 11, 30, 0, 0, 0));
        assert_eq!(
            Period::Week.bounds(unix(2026, 11, 29, 23, 59, 59), 0).0,
            start
        );
        assert_ne!(Period::Week.id(end, 0), Period::Week.id(end - 1, 0));
    }

    #[test]
    fn fixed_offsets_move_the_boundary() {
        let off = parse_offset("+02:00").expect("offset");
        assert_eq!(off, 7200);
        // 22:30 UTC on the 23rd is 00:30 on the 24th at +02:00.
        let t = unix(2026, 11, 23, 22, 30, 0);
        assert_eq!(Period::Day.id(t, 0), "2026-11-23");
        assert_eq!(Period::Day.id(t, off), "2026-11-24");
        assert_eq!(Period::Day.bounds(t, off).0, unix(2026, 11, 23, 22, 0, 0));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("Europe/Paris"), None);
        assert_eq!(rfc3339(unix(2026, 12, 1, 0, 0, 0)), "2026-12-01T00:00:00Z");
    }
}
