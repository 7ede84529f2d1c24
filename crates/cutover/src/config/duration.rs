//! Durations written as strings in the config ("250ms", "60s", "10m").

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A duration read from a human string. A newtype so serde can parse it in place and report the
/// exact key and position of a bad value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration {text:?} ({e}); write a number and a unit, e.g. \"250ms\", \"60s\", \"10m\""
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        d: HumanDuration,
    }

    fn parse(text: &str) -> Result<Duration, String> {
        toml::from_str::<Holder>(&format!("d = {text:?}"))
            .map(|h| h.d.get())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_common_units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_bare_numbers_and_garbage() {
        assert!(parse("60").unwrap_err().contains("invalid duration"));
        assert!(parse("soon")
            .unwrap_err()
            .contains("invalid duration \"soon\""));
    }
}
