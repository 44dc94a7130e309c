//! Durations in configuration files: read in any form humantime takes (`90s`, `5m`,
//! `48h`, `30d`, `2days 3h`), written in one style, a number and the largest unit
//! that divides it exactly (`d`, `h`, `m`, `s`, `ms`), as the docs write them.

use std::time::Duration;

use serde::{Deserializer, Serializer};

/// `d` in the configuration's one style.
pub fn text(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// Serde: writes [`text`].
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text(*d))
}

/// Serde: reads what humantime reads.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    humantime_serde::deserialize(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_style_read_back_as_written() {
        let day = 86_400;
        for (secs, written) in [
            (1096 * day, "1096d"),
            (2 * day, "2d"),
            (3600, "1h"),
            (90 * 60, "90m"),
            (90, "90s"),
        ] {
            assert_eq!(text(Duration::from_secs(secs)), written);
            let back = humantime::parse_duration(written).expect("humantime reads it");
            assert_eq!(back, Duration::from_secs(secs));
        }
        assert_eq!(text(Duration::from_millis(1500)), "1500ms");
    }
}
