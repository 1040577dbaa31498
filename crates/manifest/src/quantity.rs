//! Resource quantities: CPU in millicores and sizes in bytes.
//!
//! The grammar is the Kubernetes one (`resource.Quantity`), restricted to what
//! a pod manifest needs and evaluated exactly, without floating point:
//!
//! ```text
//! quantity = digits [ "." digits ] [ suffix ]      (at least one digit)
//! suffix   = "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"   (powers of 1024)
//!          | "k" | "M" | "G" | "T" | "P" | "E"         (powers of 1000)
//!          | "m"                                       (1/1000)
//!          | ( "e" | "E" ) [ "+" | "-" ] digits        (power of ten)
//! ```
//!
//! CPU takes only no suffix (cores), `m` (millicores) or a power of ten. A
//! quantity that is negative, finer than the unit (`0.5` bytes, `0.0001` CPU)
//! or larger than `u64` is rejected rather than rounded.

use std::fmt;

/// Why a CPU or byte quantity was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {unit} quantity {input:?}: {problem}")]
pub struct QuantityError {
    unit: Unit,
    input: String,
    problem: Problem,
}

impl QuantityError {
    fn new(unit: Unit, input: &str, problem: Problem) -> Self {
        // Echoing a megabyte of garbage back helps nobody.
        let input = match input.char_indices().nth(40) {
            Some((cut, _)) => format!("{}...", &input[..cut]),
            None => input.to_owned(),
        };
        QuantityError { unit, input, problem }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Cpu,
    Bytes,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Cpu => "CPU",
            Unit::Bytes => "byte",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    Negative,
    Malformed(Unit),
    Fractional(Unit),
    MilliBytes,
    TooLarge,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Negative => f.write_str("quantities cannot be negative"),
            Problem::Malformed(Unit::Cpu) => f.write_str("expected millicores like 500m or cores like 0.5"),
            Problem::Malformed(Unit::Bytes) => f.write_str(
                "expected bytes like 1000, or a number with a suffix: \
                 Ki Mi Gi Ti Pi Ei (powers of 1024) or k M G T P E (powers of 1000), like 256Mi or 1G",
            ),
            Problem::Fractional(Unit::Cpu) => f.write_str("finer than one millicore (1m = 0.001)"),
            Problem::Fractional(Unit::Bytes) => f.write_str("not a whole number of bytes"),
            Problem::MilliBytes => f.write_str("`m` means 1/1000 and gives fractions of a byte; did you mean Mi or M?"),
            Problem::TooLarge => f.write_str("too large"),
        }
    }
}

/// Parses a CPU quantity into millicores: `500m` is 500, `0.5` is 500, `2` is
/// 2000.
///
/// ```
/// assert_eq!(sealpod_manifest::parse_cpu("250m").unwrap(), 250);
/// assert_eq!(sealpod_manifest::parse_cpu("1.5").unwrap(), 1500);
/// assert!(sealpod_manifest::parse_cpu("12x").is_err());
/// ```
pub fn parse_cpu(text: &str) -> Result<u64, QuantityError> {
    evaluate(text, Unit::Cpu)
}

/// Parses a size into bytes: `1000`, `1k` (1000), `1Ki` (1024), `256Mi`,
/// `1.5Gi`, `1G`, `1e9`.
///
/// ```
/// assert_eq!(sealpod_manifest::parse_bytes("4Gi").unwrap(), 4 << 30);
/// assert_eq!(sealpod_manifest::parse_bytes("1G").unwrap(), 1_000_000_000);
/// assert!(sealpod_manifest::parse_bytes("12Qi").is_err());
/// ```
pub fn parse_bytes(text: &str) -> Result<u64, QuantityError> {
    evaluate(text, Unit::Bytes)
}

/// Significant digits beyond this cannot be meant and would only risk
/// overflowing the intermediate `u128`.
const MAX_DIGITS: usize = 30;
/// Largest power of ten, either way, taken from an exponent suffix.
const MAX_EXPONENT: i32 = 40;

fn evaluate(text: &str, unit: Unit) -> Result<u64, QuantityError> {
    let err = |problem| QuantityError::new(unit, text, problem);
    let s = text.trim();
    if s.starts_with('-') {
        return Err(err(Problem::Negative));
    }
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (int_digits, frac_digits) = number.split_once('.').unwrap_or((number, ""));
    if (int_digits.is_empty() && frac_digits.is_empty()) || frac_digits.contains('.') {
        return Err(err(Problem::Malformed(unit)));
    }

    // value = mantissa * 10^scale10 * binary
    let int_digits = int_digits.trim_start_matches('0');
    let frac_digits = frac_digits.trim_end_matches('0');
    if int_digits.len() + frac_digits.len() > MAX_DIGITS {
        return Err(err(Problem::TooLarge));
    }
    let mut mantissa: u128 = 0;
    for digit in int_digits.bytes().chain(frac_digits.bytes()) {
        mantissa = mantissa * 10 + u128::from(digit - b'0');
    }
    // frac_digits.len() <= MAX_DIGITS, so this cannot wrap.
    let mut scale10 = -(frac_digits.len() as i32);

    let (suffix_scale10, binary) = match (unit, suffix) {
        (_, "") => (0, 1u128),
        (Unit::Cpu, "m") => (-3, 1),
        (Unit::Bytes, "m") => return Err(err(Problem::MilliBytes)),
        (Unit::Bytes, "k") => (3, 1),
        (Unit::Bytes, "M") => (6, 1),
        (Unit::Bytes, "G") => (9, 1),
        (Unit::Bytes, "T") => (12, 1),
        (Unit::Bytes, "P") => (15, 1),
        (Unit::Bytes, "E") => (18, 1),
        (Unit::Bytes, "Ki") => (0, 1 << 10),
        (Unit::Bytes, "Mi") => (0, 1 << 20),
        (Unit::Bytes, "Gi") => (0, 1 << 30),
        (Unit::Bytes, "Ti") => (0, 1 << 40),
        (Unit::Bytes, "Pi") => (0, 1 << 50),
        (Unit::Bytes, "Ei") => (0, 1 << 60),
        (_, other) => match parse_exponent(other) {
            Some(Ok(exponent)) => (exponent, 1),
            Some(Err(())) => return Err(err(Problem::TooLarge)),
            None => return Err(err(Problem::Malformed(unit))),
        },
    };
    scale10 += suffix_scale10;
    if unit == Unit::Cpu {
        scale10 += 3; // cores -> millicores
    }

    if mantissa == 0 {
        return Ok(0);
    }
    let scaled = mantissa.checked_mul(binary).ok_or_else(|| err(Problem::TooLarge))?;
    let value = if scale10 >= 0 {
        10u128
            .checked_pow(scale10.unsigned_abs())
            .and_then(|factor| scaled.checked_mul(factor))
            .ok_or_else(|| err(Problem::TooLarge))?
    } else {
        // A divisor that does not fit in u128 is larger than any non-zero
        // `scaled`, so the quantity has a fraction.
        let divisor = 10u128.checked_pow(scale10.unsigned_abs()).ok_or_else(|| err(Problem::Fractional(unit)))?;
        if scaled % divisor != 0 {
            return Err(err(Problem::Fractional(unit)));
        }
        scaled / divisor
    };
    u64::try_from(value).map_err(|_| err(Problem::TooLarge))
}

/// `e3`, `E-2`, `e+6`: `None` if `suffix` is not an exponent, `Some(Err)` if it
/// is one but out of range.
fn parse_exponent(suffix: &str) -> Option<Result<i32, ()>> {
    let rest = suffix.strip_prefix(['e', 'E'])?;
    let (negative, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > 3 {
        return Some(Err(()));
    }
    let magnitude: i32 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    if magnitude > MAX_EXPONENT {
        return Some(Err(()));
    }
    Some(Ok(if negative { -magnitude } else { magnitude }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_accepts_millicores_and_cores() {
        assert_eq!(parse_cpu("500m"), Ok(500));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu(".25"), Ok(250));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.000"), Ok(1000));
        assert_eq!(parse_cpu("0"), Ok(0));
        assert_eq!(parse_cpu("0.001"), Ok(1));
        assert_eq!(parse_cpu("5e-1"), Ok(500));
        assert_eq!(parse_cpu(" 3 "), Ok(3000));
    }

    #[test]
    fn cpu_rejects_unknown_suffix_with_expected_forms() {
        let err = parse_cpu("12x").unwrap_err();
        assert_eq!(err.to_string(), r#"invalid CPU quantity "12x": expected millicores like 500m or cores like 0.5"#);
        assert!(parse_cpu("1Gi").is_err());
        assert!(parse_cpu("1k").is_err());
        assert!(parse_cpu("").is_err());
        assert!(parse_cpu("m").is_err());
        assert!(parse_cpu(".").is_err());
        assert!(parse_cpu("1.2.3").is_err());
    }

    #[test]
    fn cpu_rejects_fractions_of_a_millicore() {
        assert!(parse_cpu("0.0005").unwrap_err().to_string().contains("finer than one millicore"));
        assert!(parse_cpu("1.5m").is_err());
    }

    #[test]
    fn cpu_rejects_negative_and_overflow() {
        assert!(parse_cpu("-1").unwrap_err().to_string().contains("negative"));
        assert!(parse_cpu("18446744073709552").unwrap_err().to_string().contains("too large"));
        assert_eq!(parse_cpu("18446744073709551m"), Ok(18_446_744_073_709_551));
    }

    #[test]
    fn bytes_accept_binary_and_decimal_suffixes() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("1k"), Ok(1000));
        assert_eq!(parse_bytes("1Ki"), Ok(1024));
        assert_eq!(parse_bytes("256Mi"), Ok(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("2T"), Ok(2_000_000_000_000));
        assert_eq!(parse_bytes("1Ti"), Ok(1 << 40));
        assert_eq!(parse_bytes("1Pi"), Ok(1 << 50));
        assert_eq!(parse_bytes("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_bytes("15Ei"), Ok(15 << 60));
        assert_eq!(parse_bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_bytes("0.5Ki"), Ok(512));
    }

    #[test]
    fn bytes_accept_decimal_exponents() {
        assert_eq!(parse_bytes("1e3"), Ok(1000));
        assert_eq!(parse_bytes("1E3"), Ok(1000));
        assert_eq!(parse_bytes("12e+2"), Ok(1200));
        assert_eq!(
            parse_bytes("1500e-3"),
            Err(QuantityError::new(Unit::Bytes, "1500e-3", Problem::Fractional(Unit::Bytes)))
        );
        assert_eq!(parse_bytes("15000e-1"), Ok(1500));
        assert!(parse_bytes("1e999999").unwrap_err().to_string().contains("too large"));
        assert!(parse_bytes("1e-999999").is_err());
        assert!(parse_bytes("1e").is_err());
        assert!(parse_bytes("1e+").is_err());
    }

    #[test]
    fn bytes_reject_unknown_suffixes() {
        for bad in ["12Qi", "1KB", "1K", "1GiB", "1 Gi", "Gi", "0x10", "1_000", "+1", "1e3Gi"] {
            let err = parse_bytes(bad).unwrap_err().to_string();
            assert!(err.contains("expected bytes like"), "{bad}: {err}");
        }
    }

    #[test]
    fn bytes_reject_milli_suffix_with_hint() {
        assert!(parse_bytes("500m").unwrap_err().to_string().contains("did you mean Mi"));
    }

    #[test]
    fn bytes_reject_fractions_negatives_and_overflow() {
        assert!(parse_bytes("0.5").unwrap_err().to_string().contains("whole number"));
        assert!(parse_bytes("1.0000000001Ki").is_err());
        assert!(parse_bytes("-1Gi").unwrap_err().to_string().contains("negative"));
        assert!(parse_bytes("16Ei").unwrap_err().to_string().contains("too large"));
        assert!(parse_bytes("18446744073709551616").is_err());
        assert_eq!(parse_bytes("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_bytes(&"9".repeat(100)).unwrap_err().to_string().contains("too large"));
        assert_eq!(parse_bytes(&format!("{}1", "0".repeat(100))), Ok(1));
        assert_eq!(parse_bytes(&format!("1.{}", "0".repeat(100))), Ok(1));
    }

    #[test]
    fn error_truncates_long_input() {
        let err = parse_bytes(&"x".repeat(10_000)).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
    }
}
