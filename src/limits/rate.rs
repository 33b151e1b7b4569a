//! A rate as the settings spell it: `N/second`, `N/minute`, `N/hour`, `N/day`, or `off`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// Most requests a rate may allow per period.
pub const MAX_QUOTA: u32 = 1_000_000_000;

/// A burst of [`Rate::quota`] requests, refilled evenly over [`Rate::window`] (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    quota: NonZeroU32,
    window_secs: u32,
}

impl Rate {
    /// `quota` requests per `window_secs` seconds.
    pub fn new(quota: NonZeroU32, window_secs: u32) -> Self {
        Self {
            quota,
            window_secs: window_secs.max(1),
        }
    }

    /// How many requests the full bucket holds (the burst), and how many one window refills.
    pub fn quota(&self) -> u32 {
        self.quota.get()
    }

    /// The period the quota refills over, in whole seconds.
    pub fn window_secs(&self) -> u32 {
        self.window_secs
    }

    /// The period the quota refills over.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs.into())
    }

    /// The time one request's share takes to refill: `window / quota`.
    pub fn interval(&self) -> Duration {
        self.window() / self.quota.get()
    }

    /// Parses a setting's value; `off` is `None`.
    pub fn parse(raw: &str) -> Result<Option<Self>, String> {
        let value = raw.trim();
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = || {
            format!(
                "must be N/second, N/minute, N/hour or N/day with N from 1 to {MAX_QUOTA}, \
                 or off (got {raw:?})"
            )
        };
        let (count, unit) = value.split_once('/').ok_or_else(bad)?;
        let quota: u32 = count.trim().parse().map_err(|_| bad())?;
        let quota = NonZeroU32::new(quota)
            .filter(|q| q.get() <= MAX_QUOTA)
            .ok_or_else(bad)?;
        let window_secs = match unit.trim().to_ascii_lowercase().as_str() {
            "second" | "s" => 1,
            "minute" | "m" => 60,
            "hour" | "h" => 3600,
            "day" | "d" => 86_400,
            _ => return Err(bad()),
        };
        Ok(Some(Self::new(quota, window_secs)))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.window_secs {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86_400 => "day",
            other => return write!(f, "{}/{other}s", self.quota),
        };
        write!(f, "{}/{unit}", self.quota)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_off() {
        let rate = |raw| Rate::parse(raw).expect("valid").expect("on");
        assert_eq!(rate("10/second").window_secs(), 1);
        assert_eq!(rate("5/minute").quota(), 5);
        assert_eq!(rate(" 100 / Hour ").window_secs(), 3600);
        assert_eq!(rate("1/day").window(), Duration::from_secs(86_400));
        assert_eq!(rate("60/minute").interval(), Duration::from_secs(1));
        assert_eq!(rate("60/minute").to_string(), "60/minute");
        assert_eq!(Rate::parse("off"), Ok(None));
        assert_eq!(Rate::parse("OFF"), Ok(None));
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        for raw in [
            "",
            "0/minute",
            "-1/minute",
            "10",
            "10/week",
            "ten/minute",
            "10/",
            "/minute",
            "1000000001/second",
            "1.5/second",
        ] {
            let err = Rate::parse(raw).expect_err(raw);
            assert!(err.contains("N/minute"), "{raw}: {err}");
        }
    }
}
