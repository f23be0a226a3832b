//! Exact money: the providers' amounts to integer nano-USD, never through float arithmetic.
//!
//! OpenAI sends USD as a JSON number, which serde reads into an `f64`. The number's text is
//! recovered exactly from its shortest round-trip representation (`format!("{f}")`, the
//! digits Rust prints are the shortest that read back to the same double, so `0.06` prints
//! `0.06`, not `0.059999999999999997779`), and that decimal text is parsed into nano-USD.
//! Anthropic sends cents as decimal strings (`"123.78912"` = $1.2378912): parsed as decimals.
//! Digits below a nano-dollar are rounded half away from zero.

/// Nano-USD in one USD.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number.
    #[error("{0:?} is not a decimal amount")]
    NotDecimal(String),
    /// Beyond what nano-USD in an `i64` can hold (about 9.2 billion USD).
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a decimal `[-]digits[.digits][e[+-]digits]` into units of 10^-`scale`, rounding
/// half away from zero past the scale.
pub fn parse_decimal_scaled(s: &str, scale: u32) -> Result<i64, MoneyError> {
    let bad = || MoneyError::NotDecimal(s.to_string());
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (t, 0),
    };
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (whole.is_empty() && frac.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    // All digits as one integer, with the decimal point `point` digits from the right.
    let digits: String = whole.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    let point = frac.len() as i64 - i64::from(exp);
    // Value = digits * 10^(scale - point).
    let shift = i64::from(scale) - point;
    let mut value: i128 = 0;
    let too_large = || MoneyError::TooLarge(s.to_string());
    if digits.len() > 36 {
        return Err(too_large());
    }
    for b in digits.bytes() {
        value = value * 10 + i128::from(b - b'0');
    }
    let scaled = if shift >= 0 {
        if shift > 30 && value != 0 {
            return Err(too_large());
        }
        value
            .checked_mul(10i128.pow(shift.min(30) as u32))
            .ok_or_else(too_large)?
    } else {
        let drop = (-shift).min(38) as u32;
        let div = 10i128.pow(drop);
        let q = value / div;
        // Half away from zero (the sign is applied after).
        if (value % div) * 2 >= div { q + 1 } else { q }
    };
    let signed = if neg { -scaled } else { scaled };
    i64::try_from(signed).map_err(|_| too_large())
}

/// A USD JSON number (OpenAI's `amount.value`) as nano-USD, through its shortest decimal text.
pub fn usd_f64_to_nanos(v: f64) -> Result<i64, MoneyError> {
    if !v.is_finite() {
        return Err(MoneyError::NotDecimal(v.to_string()));
    }
    parse_decimal_scaled(&format!("{v}"), 9)
}

/// A decimal string of cents (Anthropic's `amount`) as nano-USD: a cent is 10^7 nano-USD.
pub fn cents_str_to_nanos(s: &str) -> Result<i64, MoneyError> {
    parse_decimal_scaled(s, 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_floats_are_exact_through_their_shortest_text() {
        assert_eq!(usd_f64_to_nanos(0.06), Ok(60_000_000));
        assert_eq!(usd_f64_to_nanos(0.1), Ok(100_000_000));
        assert_eq!(usd_f64_to_nanos(1e-9), Ok(1));
        assert_eq!(usd_f64_to_nanos(123.456789012), Ok(123_456_789_012));
        assert_eq!(usd_f64_to_nanos(0.0), Ok(0));
        // Half a nano-dollar rounds away from zero.
        assert_eq!(usd_f64_to_nanos(5e-10), Ok(1));
        assert_eq!(usd_f64_to_nanos(-0.3), Ok(-300_000_000));
        // The float sum is off; the nano sum is not.
        let parts = [7243246.320173748, 0.228762221, 0.945270696];
        let float_sum: f64 = parts.iter().sum();
        assert_eq!(usd_f64_to_nanos(float_sum), Ok(7_243_247_494_206_664));
        let nanos: i64 = parts
            .iter()
            .map(|p| usd_f64_to_nanos(*p).expect("ok"))
            .sum();
        assert_eq!(nanos, 7_243_247_494_206_665);
        // Very small and exponent forms.
        assert_eq!(parse_decimal_scaled("1.5e-9", 9), Ok(2));
        assert_eq!(parse_decimal_scaled("2E3", 9), Ok(2_000_000_000_000));
        assert!(usd_f64_to_nanos(f64::NAN).is_err());
        assert!(usd_f64_to_nanos(1e300).is_err());
    }

    #[test]
    fn anthropic_cents_strings_are_decimals() {
        // The docs' example: "123.78912" cents = $1.2378912.
        assert_eq!(cents_str_to_nanos("123.78912"), Ok(1_237_891_200));
        assert_eq!(cents_str_to_nanos("123.45"), Ok(1_234_500_000));
        assert_eq!(cents_str_to_nanos("0.00000001"), Ok(0));
        assert_eq!(cents_str_to_nanos("0.00000005"), Ok(1));
        assert_eq!(cents_str_to_nanos("7"), Ok(70_000_000));
        assert!(cents_str_to_nanos("12,5").is_err());
        assert!(cents_str_to_nanos("").is_err());
        assert!(cents_str_to_nanos(".").is_err());
    }
}
