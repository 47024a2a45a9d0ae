//! Spark's byte strings (`JavaUtils.byteStringAs`, `ByteUnit`): "512m", "4g", "32k", "100".
//!
//! Rules (docs/spark-model.md §14): trimmed and lower-cased; digits then an optional suffix, no
//! sign, no spaces inside, no fractions; suffixes `b, k/kb, m/mb, g/gb, t/tb, p/pb` are binary
//! units; no suffix means the caller's unit; converting to a larger unit truncates, to a smaller
//! one multiplies with an overflow check against `Long.MAX_VALUE`.

use std::fmt;

/// Spark's `ByteUnit`: the unit a byte string is read in, and the unit of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ByteUnit {
    Byte,
    KiB,
    MiB,
    GiB,
    TiB,
    PiB,
}

impl ByteUnit {
    /// Bytes in one of this unit.
    pub const fn multiplier(self) -> i64 {
        match self {
            ByteUnit::Byte => 1,
            ByteUnit::KiB => 1 << 10,
            ByteUnit::MiB => 1 << 20,
            ByteUnit::GiB => 1 << 30,
            ByteUnit::TiB => 1 << 40,
            ByteUnit::PiB => 1 << 50,
        }
    }

    /// `ByteUnit.convertFrom(d, from)`: `d` units of `from` expressed in `self`.
    ///
    /// To a smaller unit this multiplies and fails past `i64::MAX` (Spark's
    /// `IllegalArgumentException`); to a larger unit it truncates.
    pub fn convert_from(self, d: i64, from: ByteUnit) -> Result<i64, ByteStringError> {
        if from.multiplier() > self.multiplier() {
            let ratio = from.multiplier() / self.multiplier();
            if i64::MAX / ratio < d {
                return Err(ByteStringError::Overflow {
                    value: d,
                    unit: from,
                });
            }
            Ok(d * ratio)
        } else {
            Ok(d / (self.multiplier() / from.multiplier()))
        }
    }

    fn from_suffix(suffix: &str) -> Option<ByteUnit> {
        Some(match suffix {
            "b" => ByteUnit::Byte,
            "k" | "kb" => ByteUnit::KiB,
            "m" | "mb" => ByteUnit::MiB,
            "g" | "gb" => ByteUnit::GiB,
            "t" | "tb" => ByteUnit::TiB,
            "p" | "pb" => ByteUnit::PiB,
            _ => return None,
        })
    }

    /// Spark's enum constant name, as it appears in its messages.
    pub fn spark_name(self) -> &'static str {
        match self {
            ByteUnit::Byte => "BYTE",
            ByteUnit::KiB => "KiB",
            ByteUnit::MiB => "MiB",
            ByteUnit::GiB => "GiB",
            ByteUnit::TiB => "TiB",
            ByteUnit::PiB => "PiB",
        }
    }
}

impl fmt::Display for ByteUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spark_name())
    }
}

/// The sentence Spark puts before every byte-string parse failure.
pub const ACCEPTED_UNITS: &str = "Size must be specified as bytes (b), kibibytes (k), \
mebibytes (m), gibibytes (g), tebibytes (t), or pebibytes(p). E.g. 50b, 100k, or 250m.";

/// Why a byte string was refused. `Display` gives Spark's text, units first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteStringError {
    /// `Invalid suffix: "x"` (NumberFormatException).
    #[error("{ACCEPTED_UNITS}\nInvalid suffix: \"{suffix}\"")]
    InvalidSuffix { suffix: String },
    /// `Fractional values are not supported. Input was: 1.5` (NumberFormatException).
    #[error("{ACCEPTED_UNITS}\nFractional values are not supported. Input was: {number}")]
    Fractional { number: String },
    /// `Failed to parse byte string: ...` (NumberFormatException), also for digits past `i64`.
    #[error("{ACCEPTED_UNITS}\nFailed to parse byte string: {input}")]
    Unparsable { input: String },
    /// `Conversion of N exceeds Long.MAX_VALUE in UNIT` (IllegalArgumentException).
    #[error(
        "Conversion of {value} exceeds Long.MAX_VALUE in {unit}. \
         Try a larger unit (e.g. MiB instead of KiB)"
    )]
    Overflow { value: i64, unit: ByteUnit },
}

/// `JavaUtils.byteStringAs(s, unit)`: parse `s`, reading a bare number in `unit`, and return the
/// value in `unit` (so "1500k" read as MiB is 1).
pub fn byte_string_as(s: &str, unit: ByteUnit) -> Result<i64, ByteStringError> {
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, rest) = lower.split_at(digits_end);
    let suffix_is_letters = rest.chars().all(|c| c.is_ascii_lowercase());
    if !digits.is_empty() && suffix_is_letters {
        // Long.parseLong fails on too many digits; Spark reports it as unparsable.
        let value: i64 = digits.parse().map_err(|_| ByteStringError::Unparsable {
            input: s.to_string(),
        })?;
        if rest.is_empty() {
            return unit.convert_from(value, unit);
        }
        let from = ByteUnit::from_suffix(rest).ok_or_else(|| ByteStringError::InvalidSuffix {
            suffix: rest.to_string(),
        })?;
        return unit.convert_from(value, from);
    }
    if let Some(number) = fractional_number(&lower) {
        return Err(ByteStringError::Fractional { number });
    }
    Err(ByteStringError::Unparsable {
        input: s.to_string(),
    })
}

/// Matches Spark's `([0-9]+\.[0-9]+)([a-z]+)?` and returns the number part.
fn fractional_number(lower: &str) -> Option<String> {
    let (int_part, rest) = lower.split_once('.')?;
    let frac_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (frac, suffix) = rest.split_at(frac_end);
    let ok = !int_part.is_empty()
        && int_part.chars().all(|c| c.is_ascii_digit())
        && !frac.is_empty()
        && suffix.chars().all(|c| c.is_ascii_lowercase());
    ok.then(|| format!("{int_part}.{frac}"))
}

/// Formats a byte count in MiB with up to two decimals ("1423.5", "2847", "2277.6").
pub fn format_mib(bytes: u64) -> String {
    let hundredths = (bytes as u128 * 100 + (1 << 19)) / (1 << 20);
    let (whole, frac) = (hundredths / 100, hundredths % 100);
    match frac {
        0 => format!("{whole}"),
        f if f % 10 == 0 => format!("{whole}.{}", f / 10),
        f => format!("{whole}.{f:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;

    #[test]
    fn every_suffix_is_binary_and_case_insensitive() {
        let cases = [
            ("1b", 1),
            ("1k", 1 << 10),
            ("1kb", 1 << 10),
            ("1m", 1 << 20),
            ("1mb", 1 << 20),
            ("1g", 1 << 30),
            ("1gb", 1 << 30),
            ("1t", 1 << 40),
            ("1tb", 1 << 40),
            ("1p", 1 << 50),
            ("1pb", 1 << 50),
            ("4G", 4 << 30),
            ("512MB", 512 << 20),
            ("  2Kb  ", 2048),
        ];
        for (input, bytes) in cases {
            assert_eq!(byte_string_as(input, ByteUnit::Byte), Ok(bytes), "{input}");
        }
    }

    #[test]
    fn bare_numbers_take_the_callers_unit() {
        assert_eq!(byte_string_as("100", ByteUnit::Byte), Ok(100));
        assert_eq!(byte_string_as("100", ByteUnit::KiB), Ok(100));
        assert_eq!(byte_string_as("4096", ByteUnit::MiB), Ok(4096));
        // Read in KiB, the result stays in KiB.
        assert_eq!(byte_string_as("32k", ByteUnit::KiB), Ok(32));
        assert_eq!(byte_string_as("1m", ByteUnit::KiB), Ok(1024));
    }

    #[test]
    fn larger_units_truncate() {
        assert_eq!(byte_string_as("1500k", ByteUnit::MiB), Ok(1));
        assert_eq!(byte_string_as("1023k", ByteUnit::MiB), Ok(0));
        assert_eq!(byte_string_as("1g", ByteUnit::MiB), Ok(1024));
        assert_eq!(byte_string_as("3m", ByteUnit::GiB), Ok(0));
        assert_eq!(byte_string_as("5m", ByteUnit::Byte), Ok(5 * MIB));
    }

    #[test]
    fn invalid_suffix_lists_the_units() {
        let err = byte_string_as("10x", ByteUnit::Byte).unwrap_err();
        assert_eq!(err, ByteStringError::InvalidSuffix { suffix: "x".into() });
        let text = err.to_string();
        assert!(text.starts_with(ACCEPTED_UNITS), "{text}");
        assert!(text.ends_with("Invalid suffix: \"x\""), "{text}");
        assert!(byte_string_as("10kib", ByteUnit::Byte).is_err());
        assert!(byte_string_as("10bytes", ByteUnit::Byte).is_err());
    }

    #[test]
    fn fractions_are_refused() {
        let err = byte_string_as("1.5g", ByteUnit::MiB).unwrap_err();
        assert_eq!(
            err,
            ByteStringError::Fractional {
                number: "1.5".into()
            }
        );
        assert!(
            err.to_string()
                .contains("Fractional values are not supported")
        );
        assert!(err.to_string().contains("pebibytes(p)"));
        assert!(matches!(
            byte_string_as("0.5", ByteUnit::Byte),
            Err(ByteStringError::Fractional { .. })
        ));
    }

    #[test]
    fn garbage_signs_and_spaces_are_unparsable() {
        for input in [
            "", "m", "-1", "+1", "1 g", "1_000", ".5m", "1.m", "abc", "1g2",
        ] {
            let err = byte_string_as(input, ByteUnit::Byte).unwrap_err();
            assert!(
                matches!(err, ByteStringError::Unparsable { .. }),
                "{input:?}: {err:?}"
            );
            assert!(err.to_string().starts_with(ACCEPTED_UNITS));
        }
    }

    #[test]
    fn overflow_suggests_a_larger_unit() {
        // 2^63 / 2^50 = 8192 pebibytes is one past the limit.
        assert_eq!(byte_string_as("8191p", ByteUnit::Byte), Ok(8191 << 50));
        let err = byte_string_as("8192p", ByteUnit::Byte).unwrap_err();
        assert_eq!(
            err,
            ByteStringError::Overflow {
                value: 8192,
                unit: ByteUnit::PiB
            }
        );
        assert!(err.to_string().contains("exceeds Long.MAX_VALUE in PiB"));
        assert!(err.to_string().contains("Try a larger unit"));
        // Bare numbers in MiB overflow when converted to bytes only by the caller's unit.
        assert!(byte_string_as("9223372036854775807", ByteUnit::Byte).is_ok());
        assert!(matches!(
            byte_string_as("9223372036854775808", ByteUnit::Byte),
            Err(ByteStringError::Unparsable { .. })
        ));
        assert!(byte_string_as("9000000000000t", ByteUnit::KiB).is_err());
    }

    #[test]
    fn mib_formatting() {
        assert_eq!(format_mib(314_572_800), "300");
        assert_eq!(format_mib(1_492_647_936), "1423.5");
        assert_eq!(format_mib(2_388_236_697), "2277.6");
        assert_eq!(format_mib(1_048_576 + 10_486), "1.01");
        assert_eq!(format_mib(0), "0");
    }
}
