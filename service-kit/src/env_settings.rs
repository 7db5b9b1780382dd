//! Reading typed settings from the environment (or any lookup, for tests):
//! one place for how a number, a duration, an address or a list is parsed
//! and how a bad value is named, so every service's configuration says it
//! the same way (`NAME="value" is not valid: why`).

use std::net::SocketAddr;
use std::time::Duration;

/// A bad value's message.
pub fn invalid(name: &str, value: &str, why: &str) -> String {
    format!("{name}={value:?} is not valid: {why}")
}

/// Typed reads over a variable lookup.
#[derive(Debug, Clone, Copy)]
pub struct EnvReader<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> EnvReader<F> {
    /// Reads through `lookup` (e.g. `|name| std::env::var(name).ok()`).
    pub fn new(lookup: F) -> Self {
        EnvReader { lookup }
    }

    /// The value as set (possibly empty).
    pub fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// The value, when set and not empty.
    pub fn text(&self, name: &str) -> Option<String> {
        self.raw(name).filter(|v| !v.is_empty())
    }

    /// A whole number of at least `min`.
    pub fn number(&self, name: &str, min: u64) -> Result<Option<u64>, String> {
        self.raw(name)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| invalid(name, &v, &format!("expected a number >= {min}")))
            })
            .transpose()
    }

    /// A positive number of milliseconds.
    pub fn millis(&self, name: &str) -> Result<Option<Duration>, String> {
        Ok(self.number(name, 1)?.map(Duration::from_millis))
    }

    /// A `host:port` address.
    pub fn addr(&self, name: &str) -> Result<Option<SocketAddr>, String> {
        self.raw(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| invalid(name, &v, "expected host:port"))
            })
            .transpose()
    }

    /// A comma-separated list, blanks dropped.
    pub fn list(&self, name: &str) -> Option<Vec<String>> {
        self.raw(name).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }
}

/// A lookup over fixed pairs (tests, tools).
pub fn fixed_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_and_bad_ones_named() {
        let env = EnvReader::new(fixed_env(&[
            ("N", "7"),
            ("ZERO", "0"),
            ("BAD", "x"),
            ("EMPTY", ""),
            ("LIST", " a, ,b "),
            ("ADDR", "127.0.0.1:80"),
        ]));
        assert_eq!(env.number("N", 1), Ok(Some(7)));
        assert_eq!(env.number("MISSING", 1), Ok(None));
        assert!(env.number("ZERO", 1).unwrap_err().contains("ZERO=\"0\""));
        assert!(env.number("BAD", 0).is_err());
        assert_eq!(env.millis("N"), Ok(Some(Duration::from_millis(7))));
        assert_eq!(env.text("EMPTY"), None);
        assert_eq!(env.list("LIST"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(env.addr("ADDR").unwrap().unwrap().port(), 80);
        assert!(env.addr("BAD").unwrap_err().contains("host:port"));
    }
}
