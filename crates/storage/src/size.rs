//! Byte sizes as people type them on command lines: `4G`, `512M`, `1.5GiB`.

/// Parses a byte size: a number with an optional unit, `K`, `M`, `G` or `T`
/// (powers of 1024; `KiB`/`KB`-style spellings and a trailing `B` are
/// accepted too), e.g. `4G`, `512M`, `1.5GiB`, `1048576`.
///
/// ```
/// assert_eq!(storage::parse_byte_size("4G"), Ok(4 << 30));
/// assert_eq!(storage::parse_byte_size("1.5k"), Ok(1536));
/// assert!(storage::parse_byte_size("lots").is_err());
/// ```
///
/// # Errors
/// A message naming the text when it is not a size.
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_a_size = || format!("`{text}` is not a size (e.g. 512M, 4G or a number of bytes)");
    if number.is_empty() {
        return Err(not_a_size());
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use K, M, G or T)"
            ));
        }
    };
    let value: f64 = number.parse().map_err(|_| not_a_size())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_errors_name_the_text() {
        assert_eq!(parse_byte_size("0"), Ok(0));
        assert_eq!(parse_byte_size("512M"), Ok(512 << 20));
        assert_eq!(parse_byte_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_byte_size("1T"), Ok(1 << 40));
        assert_eq!(parse_byte_size("10kb"), Ok(10 << 10));
        let e = parse_byte_size("4X").expect_err("unknown unit");
        assert!(e.contains("`4X`") && e.contains("unit"), "{e}");
        assert!(parse_byte_size("").is_err());
        assert!(parse_byte_size("G").is_err());
    }
}
