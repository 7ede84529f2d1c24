//! Configuration from environment variables, validated once at startup.

use std::fmt;
use std::time::Duration;

use http::HeaderValue;

use crate::readiness::Dependency;

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_RELEASE: &str = "dev";

#[derive(Debug)]
pub struct Config {
    /// Kept as a string so host names work too; a bad value surfaces as a bind error.
    pub addr: String,
    pub release: String,
    /// `release` pre-validated as a header value, cloned into every response.
    pub release_header: HeaderValue,
    pub startup_delay: Option<Duration>,
    pub never_healthy: bool,
    pub crash_after: Option<Duration>,
    pub fail_after: Option<Duration>,
    pub error_rate: f64,
    /// Every request but the health checks waits forever (a release that accepts and hangs).
    pub hang: bool,
    /// Every response but the health checks is cut short: a declared length, half a body,
    /// then the connection closes.
    pub truncate: bool,
    /// Servers `/health/ready` probes (from `DATABASE_URL` and `REDIS_URL`).
    pub dependencies: Vec<Dependency>,
}

/// A variable with an unusable value. Display names the variable and, unless it
/// may hold a password, the value.
#[derive(Debug, PartialEq)]
pub struct ConfigError {
    var: &'static str,
    value: Option<String>,
    reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "invalid {}={value:?}: {}", self.var, self.reason),
            None => write!(f, "invalid {}: {}", self.var, self.reason),
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        // Non-UTF-8 values are kept (lossily) so they fail validation visibly
        // instead of silently counting as unset.
        Self::from_lookup(|var| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Parses from any variable source, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Empty counts as unset: `FOO=` is a common way to switch a knob off.
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());

        // RELEASE, else the release cutover names in every instance's environment.
        let release = get("RELEASE")
            .or_else(|| get("CUTOVER_RELEASE"))
            .unwrap_or_else(|| DEFAULT_RELEASE.to_owned());
        let release_header = HeaderValue::from_str(&release).map_err(|_| ConfigError {
            var: "RELEASE",
            value: Some(release.clone()),
            reason: "must be usable as an HTTP header value".into(),
        })?;

        let dependencies = [
            dependency(&get, "DATABASE_URL", Dependency::postgres)?,
            dependency(&get, "REDIS_URL", Dependency::redis)?,
        ]
        .into_iter()
        .flatten()
        .collect();

        Ok(Config {
            addr: get("API_ADDR").unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
            release,
            release_header,
            startup_delay: knob(&get, "DEMO_STARTUP_DELAY_MS", parse_millis, MILLIS)?,
            never_healthy: knob(&get, "DEMO_NEVER_HEALTHY", parse_flag, FLAG)?.unwrap_or(false),
            crash_after: knob(&get, "DEMO_CRASH_AFTER_MS", parse_millis, MILLIS)?,
            fail_after: knob(&get, "DEMO_FAIL_AFTER_MS", parse_millis, MILLIS)?,
            error_rate: knob(&get, "DEMO_ERROR_RATE", parse_rate, RATE)?.unwrap_or(0.0),
            hang: knob(&get, "DEMO_HANG", parse_flag, FLAG)?.unwrap_or(false),
            truncate: knob(&get, "DEMO_TRUNCATE", parse_flag, FLAG)?.unwrap_or(false),
            dependencies,
        })
    }

    /// A config from literal variables, for tests.
    #[cfg(test)]
    pub fn from_pairs(vars: &[(&str, &str)]) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }
}

const MILLIS: &str = "expected a whole number of milliseconds";
const FLAG: &str = "expected 1/0, true/false, yes/no or on/off";
const RATE: &str = "expected a number between 0 and 1";

fn knob<T>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    parse: fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    match parse(value.trim()) {
        Some(parsed) => Ok(Some(parsed)),
        None => Err(ConfigError {
            var,
            value: Some(value),
            reason: expected.into(),
        }),
    }
}

fn dependency(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    parse: fn(&str) -> Result<Dependency, String>,
) -> Result<Option<Dependency>, ConfigError> {
    let Some(url) = get(var) else {
        return Ok(None);
    };
    // The value is left out of the error: it may contain a password.
    parse(url.trim()).map(Some).map_err(|reason| ConfigError {
        var,
        value: None,
        reason,
    })
}

fn parse_millis(s: &str) -> Option<Duration> {
    s.parse::<u64>().ok().map(Duration::from_millis)
}

fn parse_flag(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_rate(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_pairs(vars)
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.release, "dev");
        assert_eq!(c.startup_delay, None);
        assert!(!c.never_healthy);
        assert_eq!(c.crash_after, None);
        assert_eq!(c.fail_after, None);
        assert_eq!(c.error_rate, 0.0);
        assert!(c.dependencies.is_empty());
    }

    #[test]
    fn knobs_parse() {
        let c = config(&[
            ("API_ADDR", "127.0.0.1:41234"),
            ("RELEASE", "v42"),
            ("DEMO_STARTUP_DELAY_MS", "250"),
            ("DEMO_NEVER_HEALTHY", "1"),
            ("DEMO_CRASH_AFTER_MS", " 1000 "),
            ("DEMO_FAIL_AFTER_MS", "0"),
            ("DEMO_ERROR_RATE", "0.25"),
        ])
        .unwrap();
        assert_eq!(c.addr, "127.0.0.1:41234");
        assert_eq!(c.release_header, "v42");
        assert_eq!(c.startup_delay, Some(Duration::from_millis(250)));
        assert!(c.never_healthy);
        assert_eq!(c.crash_after, Some(Duration::from_secs(1)));
        assert_eq!(c.fail_after, Some(Duration::ZERO));
        assert_eq!(c.error_rate, 0.25);
    }

    #[test]
    fn empty_means_unset() {
        let c = config(&[("DEMO_ERROR_RATE", ""), ("DEMO_NEVER_HEALTHY", " ")]).unwrap();
        assert_eq!(c.error_rate, 0.0);
        assert!(!c.never_healthy);
    }

    #[test]
    fn invalid_knobs_name_variable_and_value() {
        for (var, value) in [
            ("DEMO_STARTUP_DELAY_MS", "-5"),
            ("DEMO_CRASH_AFTER_MS", "1s"),
            ("DEMO_FAIL_AFTER_MS", "soon"),
            ("DEMO_NEVER_HEALTHY", "maybe"),
            ("DEMO_ERROR_RATE", "1.5"),
            ("DEMO_ERROR_RATE", "NaN"),
            ("RELEASE", "bad\nname"),
        ] {
            let err = config(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
            assert!(err.contains(&format!("{value:?}")), "{err}");
        }
    }

    #[test]
    fn bad_url_error_hides_value() {
        let err = config(&[("DATABASE_URL", "mysql://u:hunter2@db/x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
