//! How a setting's value is read (from a flag, a variable or the file) and shown (in
//! `--help` and [`ProxyConfig::listing`](super::ProxyConfig::listing)): one
//! [`SettingValue`] impl per type the settings list uses, so every setting of a type reads
//! and prints the same way wherever it comes from.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeValue;

use super::settings::ClientTlsMode;
use crate::auth::AuthMethod;
use crate::session::{AbandonedTransactionPolicy, PoolMode, StatePolicy};

/// A type a setting can have. Errors say what is wrong with the value, and never echo a
/// value that could be a secret (none of the settings is one; the URLs and the users file
/// are read elsewhere).
pub(crate) trait SettingValue: Sized {
    /// What a value looks like, for `--help` and "expected ..." errors.
    fn expected() -> String;

    /// A value written as text: a flag, an environment variable, a TOML string.
    fn from_text(text: &str) -> Result<Self, String>;

    /// A TOML value. Text types take a string, numbers an integer; a wrong type says which
    /// type it was.
    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        match value {
            DeValue::String(text) => Self::from_text(text),
            other => Err(wrong_type(&Self::expected(), other)),
        }
    }

    /// The value as `from_text` reads it back.
    fn show(&self) -> String;

    /// Make a relative path in the file relative to the file's directory; only paths
    /// have anything to do.
    fn relative_to(&mut self, _dir: &std::path::Path) {}
}

pub(crate) fn wrong_type(expected: &str, found: &DeValue<'_>) -> String {
    format!("expected {expected}, found a TOML {}", found.type_str())
}

impl SettingValue for String {
    fn expected() -> String {
        "a string".to_owned()
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn show(&self) -> String {
        self.clone()
    }
}

/// A path; the empty string (or an absent setting) is none. A relative path in the file
/// is taken from the file's directory (see `file.rs`), from flags and variables from the
/// working directory.
impl SettingValue for Option<PathBuf> {
    fn expected() -> String {
        "a file path".to_owned()
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok((!text.is_empty()).then(|| PathBuf::from(text)))
    }

    fn show(&self) -> String {
        self.as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_default()
    }

    fn relative_to(&mut self, dir: &std::path::Path) {
        if let Some(path) = self {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
    }
}

/// A list of names: a TOML array of strings, or one comma-separated string (PgBouncer's
/// `admin_users = alice, bob`, and the only form a flag or a variable has).
impl SettingValue for Vec<String> {
    fn expected() -> String {
        "a list of names (an array of strings, or \"a, b\")".to_owned()
    }

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        match value {
            DeValue::String(text) => Self::from_text(text),
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(name) => Ok(name.to_string()),
                    other => Err(format!(
                        "expected an array of strings, found a TOML {} in it",
                        other.type_str()
                    )),
                })
                .collect(),
            other => Err(wrong_type(&Self::expected(), other)),
        }
    }

    fn show(&self) -> String {
        self.join(", ")
    }
}

/// Whole numbers: a TOML integer, or digits in a flag or a variable.
macro_rules! integer_setting {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn expected() -> String {
        "a whole number".to_owned()
    }

            fn from_text(text: &str) -> Result<Self, String> {
                let text = text.trim();
                if text.starts_with('-') {
                    return Err("must not be negative".to_owned());
                }
                let value: u128 = text
                    .parse()
                    .map_err(|_| format!("expected {}, found {text:?}", Self::expected()))?;
                <$ty>::try_from(value).map_err(|_| format!("must be at most {}", <$ty>::MAX))
            }

            fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
                match value {
                    DeValue::Integer(integer) => {
                        let value = i128::from_str_radix(integer.as_str(), integer.radix())
                            .map_err(|e| e.to_string())?;
                        if value < 0 {
                            return Err("must not be negative".to_owned());
                        }
                        <$ty>::try_from(value)
                            .map_err(|_| format!("must be at most {}", <$ty>::MAX))
                    }
                    other => Err(wrong_type(&Self::expected(), other)),
                }
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

integer_setting!(u16, u32, usize);

/// Settings with a few named values, each type's own `FromStr` and `Display` (the names
/// are the type's, as PgBouncer spells them).
macro_rules! named_setting {
    ($($ty:ty),*) => {$(
        impl SettingValue for $ty {
            fn expected() -> String {
        format!("one of {}", <$ty>::NAMES.join(", "))
    }

            fn from_text(text: &str) -> Result<Self, String> {
                text.trim().parse()
            }

            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}

named_setting!(
    PoolMode,
    AuthMethod,
    StatePolicy,
    AbandonedTransactionPolicy,
    ClientTlsMode
);

/// A duration: a number of seconds as PgBouncer writes them (`120`, `0.5`; a TOML integer
/// or float), or a number with a unit (`250ms`, `2s`, `5min`: `ns`, `us`, `µs`, `ms`, `s`,
/// `min`, `h`, `d`, PostgreSQL's units). Read exactly, in decimal: `0.3` is 300 ms, not
/// the float nearest to it.
impl SettingValue for Duration {
    fn expected() -> String {
        "a duration (seconds, or a number with a unit: 250ms, 2s, 5min)".to_owned()
    }

    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text.trim())
    }

    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        match value {
            DeValue::String(text) => Self::from_text(text),
            DeValue::Integer(integer) => {
                let seconds = i128::from_str_radix(integer.as_str(), integer.radix())
                    .map_err(|e| e.to_string())?;
                parse_duration(&seconds.to_string())
            }
            DeValue::Float(float) => parse_duration(float.as_str()),
            other => Err(wrong_type(&Self::expected(), other)),
        }
    }

    /// The largest unit that shows it exactly: `120s`, `250ms`; never rounded, so the
    /// listing reads back as the same duration.
    fn show(&self) -> String {
        let nanos = self.as_nanos();
        let (scale, unit) = [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")]
            .into_iter()
            .find(|&(scale, _)| nanos / scale * scale == nanos)
            .unwrap_or((1, "ns"));
        format!("{}{unit}", nanos / scale)
    }
}

/// A duration where 0 (or `off`) means "never", as PgBouncer's 0 does for the settings
/// that take it.
impl SettingValue for Option<Duration> {
    fn expected() -> String {
        "a duration (seconds, or a number with a unit: 250ms, 2s, 5min; 0 = off)".to_owned()
    }

    fn from_text(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(None);
        }
        Duration::from_text(text).map(|d| (!d.is_zero()).then_some(d))
    }

    fn from_toml(value: &DeValue<'_>) -> Result<Self, String> {
        match value {
            DeValue::String(text) => Self::from_text(text),
            other => Duration::from_toml(other).map(|d| (!d.is_zero()).then_some(d)),
        }
    }

    fn show(&self) -> String {
        match self {
            Some(duration) => duration.show(),
            None => "off".to_owned(),
        }
    }
}

/// The units a duration may carry, in nanoseconds.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("", 1_000_000_000),
];

fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "expected {}, found {text:?}",
            <Duration as SettingValue>::expected()
        )
    };
    if text.starts_with('-') {
        return Err("a duration must not be negative".to_owned());
    }
    let text = text.strip_prefix('+').unwrap_or(text);
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let unit = unit.trim_start();
    let scale = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, scale)| scale)
        .ok_or_else(|| match unit.starts_with(['e', 'E']) {
            true => "write a duration without an exponent (e.g. 1000, or 1000s)".to_owned(),
            false => {
                format!("unknown unit {unit:?} in {text:?}; use one of ns, us, ms, s, min, h, d")
            }
        })?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return Err(expected());
    }
    let parse = |digits: &str| -> Result<u128, String> {
        match digits {
            "" => Ok(0),
            _ => digits.parse::<u128>().map_err(|_| expected()),
        }
    };
    let too_long = || format!("the duration {text:?} is too long");
    let whole_nanos = parse(whole)?.checked_mul(scale).ok_or_else(too_long)?;
    let fraction_nanos = parse(fraction)? * scale / 10u128.pow(fraction.len() as u32);
    let nanos = whole_nanos
        .checked_add(fraction_nanos)
        .and_then(|nanos| u64::try_from(nanos).ok())
        .ok_or_else(too_long)?;
    Ok(Duration::from_nanos(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> DeValue<'_> {
        DeValue::parse(text).unwrap().into_inner()
    }

    fn secs(text: &str) -> Duration {
        Duration::from_text(text).unwrap()
    }

    #[test]
    fn durations_read_as_seconds_or_with_a_unit() {
        assert_eq!(secs("120"), Duration::from_secs(120));
        assert_eq!(secs("0.3"), Duration::from_millis(300));
        assert_eq!(secs(".5"), Duration::from_millis(500));
        assert_eq!(secs("250ms"), Duration::from_millis(250));
        assert_eq!(secs("2s"), Duration::from_secs(2));
        assert_eq!(secs("2 s"), Duration::from_secs(2));
        assert_eq!(secs("5min"), Duration::from_secs(300));
        assert_eq!(secs("1.5h"), Duration::from_secs(5400));
        assert_eq!(secs("1d"), Duration::from_secs(86_400));
        assert_eq!(secs("40us"), Duration::from_micros(40));
        assert_eq!(secs("40µs"), Duration::from_micros(40));
        assert_eq!(secs("7ns"), Duration::from_nanos(7));
        assert_eq!(secs("0.0000000015"), Duration::from_nanos(1));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let err = |text| Duration::from_text(text).unwrap_err();
        assert!(err("5 minutes").contains("unknown unit \"minutes\""));
        assert!(err("-1").contains("negative"));
        assert!(err("").contains("expected a duration"));
        assert!(err("ms").contains("expected a duration"));
        assert!(err("1.2.3").contains("expected a duration"));
        assert!(err("1e3").contains("exponent"));
        assert!(err("99999999999d").contains("too long"));
    }

    #[test]
    fn durations_in_toml_are_seconds_whatever_their_type() {
        let d = |text: &str| Duration::from_toml(&value(text));
        assert_eq!(d("120").unwrap(), Duration::from_secs(120));
        assert_eq!(d("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(d("\"250ms\"").unwrap(), Duration::from_millis(250));
        assert_eq!(d("1_000").unwrap(), Duration::from_secs(1000));
        assert!(d("true").unwrap_err().contains("found a TOML boolean"));
        assert!(d("-5").unwrap_err().contains("negative"));
        let off = |text: &str| Option::<Duration>::from_toml(&value(text)).unwrap();
        assert_eq!(off("0"), None);
        assert_eq!(off("0.0"), None);
        assert_eq!(off("\"0ms\""), None);
        assert_eq!(off("\"off\""), None);
        assert_eq!(off("2"), Some(Duration::from_secs(2)));
    }

    #[test]
    fn durations_show_exactly_and_read_back() {
        for d in [
            Duration::from_secs(3600),
            Duration::from_millis(250),
            Duration::from_micros(1500),
            Duration::from_nanos(7),
            Duration::ZERO,
        ] {
            assert_eq!(Duration::from_text(&d.show()).unwrap(), d, "{}", d.show());
        }
        assert_eq!(Duration::from_secs(120).show(), "120s");
        assert_eq!(Some(Duration::from_millis(1500)).show(), "1500ms");
        assert_eq!(None::<Duration>.show(), "off");
    }

    #[test]
    fn integers_refuse_negatives_overflow_and_strings_in_toml() {
        assert_eq!(u16::from_toml(&value("6432")), Ok(6432));
        assert_eq!(u16::from_toml(&value("0x10")), Ok(16));
        assert_eq!(
            u16::from_toml(&value("70000")),
            Err("must be at most 65535".to_owned())
        );
        assert_eq!(
            usize::from_toml(&value("-1")),
            Err("must not be negative".to_owned())
        );
        assert_eq!(
            usize::from_toml(&value("\"20\"")),
            Err("expected a whole number, found a TOML string".to_owned())
        );
        assert_eq!(usize::from_text(" 20 "), Ok(20));
        assert!(usize::from_text("twenty")
            .unwrap_err()
            .contains("\"twenty\""));
    }

    #[test]
    fn lists_are_arrays_or_comma_separated() {
        let names = vec!["alice".to_owned(), "bob".to_owned()];
        assert_eq!(Vec::<String>::from_text("alice, bob,"), Ok(names.clone()));
        assert_eq!(
            Vec::<String>::from_toml(&value("[\"alice\", \"bob\"]")),
            Ok(names.clone())
        );
        assert_eq!(Vec::<String>::from_toml(&value("\"alice,bob\"")), Ok(names));
        assert!(Vec::<String>::from_toml(&value("[1]"))
            .unwrap_err()
            .contains("integer"));
    }
}
