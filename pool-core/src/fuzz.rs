//! Values for fuzzing (feature `arbitrary`): what `Config`'s `Arbitrary` implementation
//! draws each option from, and the duration generator the fuzz targets share.
//!
//! Raw bytes decoded as a `u64` almost never land on the values that matter, so each
//! draw first picks a scale: small sizes and nanosecond, millisecond and second durations
//! (ties, off-by-ones, ordinary timeouts), and the extremes (overflow). Any value of the
//! type stays reachable; nothing here promises a *valid* configuration.

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};

use crate::config::IdleOrder;

/// A duration: zero to 255 ns, 0 to 255 ms, 0 to 65,535 s, `u64::MAX` ns,
/// `Duration::MAX`, or any duration at all.
pub fn duration(u: &mut Unstructured<'_>) -> Result<Duration> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => Duration::from_nanos(u.arbitrary::<u8>()?.into()),
        1 => Duration::from_millis(u.arbitrary::<u8>()?.into()),
        2 => Duration::from_secs(u.arbitrary::<u16>()?.into()),
        3 => Duration::from_nanos(u64::MAX),
        4 => Duration::MAX,
        _ => u.arbitrary()?,
    })
}

/// A type a configuration option has, drawn at the scales that matter.
pub trait Field: Sized {
    fn draw(u: &mut Unstructured<'_>) -> Result<Self>;
}

/// `T::draw`: the generator `Config`'s derived `Arbitrary` uses for every field.
pub fn field<T: Field>(u: &mut Unstructured<'_>) -> Result<T> {
    T::draw(u)
}

impl Field for usize {
    /// Mostly below 16 (the interesting sizes), sometimes any value.
    fn draw(u: &mut Unstructured<'_>) -> Result<Self> {
        if u.ratio(3u8, 4u8)? {
            Ok(usize::from(u.arbitrary::<u8>()? % 16))
        } else {
            u.arbitrary()
        }
    }
}

impl Field for u16 {
    fn draw(u: &mut Unstructured<'_>) -> Result<Self> {
        u.arbitrary()
    }
}

impl Field for Duration {
    fn draw(u: &mut Unstructured<'_>) -> Result<Self> {
        duration(u)
    }
}

impl Field for Option<Duration> {
    fn draw(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(if u.arbitrary()? {
            Some(duration(u)?)
        } else {
            None
        })
    }
}

impl Field for IdleOrder {
    fn draw(u: &mut Unstructured<'_>) -> Result<Self> {
        IdleOrder::arbitrary(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    /// Every scale is reachable, and a config can be drawn from too little data (the
    /// fuzzer's shortest inputs).
    #[test]
    fn draws_reach_every_scale() {
        let pick = |bytes: &[u8]| duration(&mut Unstructured::new(bytes)).unwrap();
        assert_eq!(pick(&[0, 7]), Duration::from_nanos(7));
        assert_eq!(pick(&[1, 7]), Duration::from_millis(7));
        assert_eq!(pick(&[3]), Duration::from_nanos(u64::MAX));
        assert_eq!(pick(&[4]), Duration::MAX);
        Config::arbitrary(&mut Unstructured::new(&[])).unwrap();
        let sizes: Vec<usize> = (0..=255u8)
            .map(|b| field(&mut Unstructured::new(&[0, b])).unwrap())
            .collect();
        assert!(sizes.iter().all(|n| *n < 16));
    }
}
