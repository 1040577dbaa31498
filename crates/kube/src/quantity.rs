//! Kubernetes resource quantities (`1500m`, `2`, `16Gi`, `1e3`) as integers.

/// A quantity in thousandths (CPU: millicores), rounded up.
pub fn millis(q: &str) -> Option<u64> {
    scaled(q, 1000.0)
}

/// A quantity in whole units (memory: bytes), rounded up.
pub fn units(q: &str) -> Option<u64> {
    scaled(q, 1.0)
}

fn scaled(q: &str, by: f64) -> Option<u64> {
    let q = q.trim();
    if q.is_empty() || q.len() > 64 {
        return None;
    }
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse::<i32>().ok().filter(|e| e.abs() <= 30)?),
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    let v = (n * factor * by).ceil();
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_millicores() {
        assert_eq!(millis("2"), Some(2000));
        assert_eq!(millis("1500m"), Some(1500));
        assert_eq!(millis("0.5"), Some(500));
        assert_eq!(millis("250000u"), Some(250));
    }

    #[test]
    fn memory_quantities_become_bytes() {
        assert_eq!(units("16Gi"), Some(16 << 30));
        assert_eq!(units("1024Ki"), Some(1 << 20));
        assert_eq!(units("128974848"), Some(128_974_848));
        assert_eq!(units("129M"), Some(129_000_000));
        assert_eq!(units("1e3"), Some(1000));
    }

    #[test]
    fn nonsense_is_not_a_quantity() {
        for q in ["", "Gi", "12Xi", "-1", "1e999", "abc", "1.2.3"] {
            assert_eq!(units(q), None, "{q}");
        }
    }
}
