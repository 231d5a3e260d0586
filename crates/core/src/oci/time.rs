//! Times as the image config writes them (`created`, history): RFC 3339 in UTC, whole
//! seconds; and as a build is given them: RFC 3339, `@SECONDS` or `now`.

/// Text that is not a time: one line naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(pub String);

/// Seconds since the epoch as RFC 3339 in UTC (`1970-01-01T00:00:01Z`). Times outside the
/// years 0000–9999 (which [`parse_time`] never returns) are clamped to its bounds.
pub fn format_time(epoch: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(if epoch < 0 {
        time::PrimitiveDateTime::MIN.assume_utc()
    } else {
        time::PrimitiveDateTime::MAX.assume_utc()
    });
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time: `now`, `@SECONDS`, or RFC 3339 (`2024-05-01T12:00:00Z`, `…+02:00`, fractions
/// dropped), parsed by the `time` crate: a date that does not exist (`2024-02-31`) or any
/// other malformed text is an error, never a panic. Returns seconds since the epoch, within
/// the years 0000–9999.
pub fn parse_time(text: &str, what: &str) -> Result<i64, TimeError> {
    let bad = || {
        TimeError(format!(
            "{what} '{text}' is not a time (RFC 3339 like 1970-01-01T00:00:01Z, @SECONDS or now)"
        ))
    };
    let seconds = if text == "now" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| bad())?;
        i64::try_from(now.as_secs()).map_err(|_| bad())?
    } else if let Some(secs) = text.strip_prefix('@') {
        secs.parse().map_err(|_| bad())?
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| bad())?
            .unix_timestamp()
    };
    let in_range = time::OffsetDateTime::from_unix_timestamp(seconds)
        .is_ok_and(|t| (0..=9999).contains(&t.year()));
    if !in_range {
        return Err(bad());
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z", "t").unwrap(), 1);
        assert_eq!(parse_time("@1700000000", "t").unwrap(), 1_700_000_000);
        assert_eq!(
            parse_time("2024-02-29T12:30:00.5+02:00", "t").unwrap(),
            parse_time("2024-02-29T10:30:00Z", "t").unwrap()
        );
        assert_eq!(format_time(1_709_202_600), "2024-02-29T10:30:00Z");
        assert!(parse_time("yesterday", "t").is_err());
        assert!(parse_time("2024-13-01T00:00:00Z", "t").is_err());
        // Dates that do not exist, and text a byte-slicing parser would panic on.
        for bad in [
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1970-01-01T00:00:0\u{e9}",
            "1970-01-01T00:00:0\u{e9}Z",
            "\u{e9}\u{e9}\u{e9}\u{e9}-01-01T00:00:00Z",
            "1970-01-01T24:00:00Z",
            "@99999999999999999",
            "@-99999999999999",
            "",
        ] {
            assert!(parse_time(bad, "t").is_err(), "{bad}");
        }
        assert_eq!(
            parse_time("2024-02-29t10:30:00z", "t").unwrap(),
            1_709_202_600
        );
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
