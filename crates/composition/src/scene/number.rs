//! Numbers as text: how a prop's number becomes the characters a template
//! shows, with or without a format spec (`{amount:.2f}`, `{count:,}`,
//! `{n:05}`).
//!
//! Numbers are handled as exact decimals (digits and a power of ten), never
//! printed through binary floating point: a JSON number is first written in
//! the shortest decimal form that reads back to the same `f64` (`340.5`,
//! `0.1`, `1e21`), a string prop (a CSV cell) is read digit by digit, and
//! rounding happens on those decimal digits, half away from zero, the way
//! people round money (`2.675` → `2.68`, which `f64` formatting would give as
//! `2.67`).

use std::fmt::Write as _;

/// The longest number text a spec may produce (width, precision and digits),
/// so a spec like `{n:.100000f}` cannot blow up a text layer.
pub const MAX_NUMBER_CHARS: usize = 400;

/// An exact decimal: `digits × 10^exp`, `digits` without leading zeros
/// (empty for zero).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// ASCII digits, most significant first.
    digits: Vec<u8>,
    /// The power of ten of the last digit.
    exp: i64,
}

impl Decimal {
    /// The shortest decimal that reads back to `v` (what `{v:e}` prints).
    /// `None` for NaN and infinities, which JSON cannot hold anyway.
    pub fn from_f64(v: f64) -> Option<Decimal> {
        if !v.is_finite() {
            return None;
        }
        // Rust prints the shortest round-trip digits in scientific form:
        // "-3.405e2", "1e21", "0e0".
        Decimal::parse(&format!("{v:e}"))
    }

    /// Parses decimal text: an optional sign, digits with at most one `.`,
    /// an optional exponent (`1e21`, `-2.5E-3`). Surrounding spaces are
    /// ignored. `None` if it is not such a number.
    pub fn parse(text: &str) -> Option<Decimal> {
        let t = text.trim();
        let (negative, t) = match t.as_bytes().first()? {
            b'-' => (true, &t[1..]),
            b'+' => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exp_text) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], Some(&t[i + 1..])),
            None => (t, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut exp: i64 = match exp_text {
            None => 0,
            // Bounded so that the arithmetic below cannot overflow; no
            // number with a larger exponent can be shown in a text layer.
            Some(e) => e.parse::<i64>().ok().filter(|e| e.abs() <= 100_000)?,
        };
        exp -= frac.len() as i64;
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let lead = digits.iter().take_while(|&&d| d == b'0').count();
        digits.drain(..lead);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exp += 1;
        }
        if digits.is_empty() {
            exp = 0;
        }
        Some(Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exp,
        })
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Whether the number has no fractional part.
    pub fn is_whole(&self) -> bool {
        self.exp >= 0
    }

    /// Multiplies by 100 (for `%`).
    fn percent(mut self) -> Decimal {
        if !self.is_zero() {
            self.exp += 2;
        }
        self
    }

    /// Rounds to `places` digits after the point, half away from zero.
    fn round(mut self, places: i64) -> Decimal {
        let drop = -places - self.exp;
        if drop <= 0 || self.is_zero() {
            return self;
        }
        let keep = self.digits.len() as i64 - drop;
        if keep < 0 {
            return Decimal::parse("0").expect("0 is a number");
        }
        let keep = keep as usize;
        let round_up = self.digits.get(keep).is_some_and(|&d| d >= b'5');
        self.digits.truncate(keep);
        self.exp += drop;
        if round_up {
            // Carry from the last kept digit.
            let mut i = self.digits.len();
            loop {
                if i == 0 {
                    self.digits.insert(0, b'1');
                    break;
                }
                i -= 1;
                if self.digits[i] == b'9' {
                    self.digits[i] = b'0';
                } else {
                    self.digits[i] += 1;
                    break;
                }
            }
        }
        Decimal::parse(&self.to_string()).expect("a decimal's own text parses")
    }

    /// The integer part's digits and the fractional part's digits, padded
    /// with zeros to `places` digits (all of them for `None`).
    fn parts(&self, places: Option<usize>) -> (String, String) {
        let n = self.digits.len() as i64;
        let point = n + self.exp; // digits before the point
        let digit = |i: i64| -> char {
            if (0..n).contains(&i) {
                char::from(self.digits[i as usize])
            } else {
                '0'
            }
        };
        let int: String = if point <= 0 {
            "0".into()
        } else {
            (0..point).map(digit).collect()
        };
        let frac_len = match places {
            Some(p) => p as i64,
            None => (-self.exp).max(0),
        };
        let frac: String = (point..point + frac_len).map(digit).collect();
        (int, frac)
    }
}

impl std::fmt::Display for Decimal {
    /// Positional notation, never an exponent: `340.5`, `1000000000000000000000`,
    /// `0.00000015`, `12`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (int, frac) = self.parts(None);
        if self.negative {
            f.write_char('-')?;
        }
        f.write_str(&int)?;
        if !frac.is_empty() {
            write!(f, ".{frac}")?;
        }
        Ok(())
    }
}

/// How a number is presented: `[sign][0][width][grouping][.precision][type]`,
/// a subset of Python's format mini-language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spec {
    /// `+`: a plus sign on positive numbers.
    plus: bool,
    /// `0`: pad with zeros after the sign instead of spaces before it.
    zero_pad: bool,
    /// The least number of characters.
    width: usize,
    /// `,` or `_` between groups of three integer digits.
    group: Option<char>,
    /// Digits after the point.
    precision: Option<usize>,
    kind: SpecKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum SpecKind {
    /// No type letter: as many decimals as the number has, or `precision`.
    #[default]
    General,
    /// `f`: fixed decimals (6 unless a precision is given).
    Fixed,
    /// `d`: a whole number (refuses fractions).
    Integer,
    /// `%`: × 100, fixed decimals (6 unless given), then `%`.
    Percent,
}

impl Spec {
    /// Parses the text after `:` in a placeholder.
    ///
    /// # Errors
    /// A message naming what is wrong and the accepted form.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let form = "a format spec is [+][0][width][,][.precision][f|d|%], such as `.2f`, `,`, `05` or `.1%`";
        let mut spec = Spec::default();
        let mut rest = text;
        if let Some(r) = rest.strip_prefix('+') {
            spec.plus = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('-') {
            rest = r;
        }
        if let Some(r) = rest.strip_prefix('0') {
            spec.zero_pad = true;
            rest = r;
        }
        let width_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if width_len > 0 {
            spec.width = rest[..width_len].parse().map_err(|_| form.to_owned())?;
            rest = &rest[width_len..];
        }
        if let Some(c) = rest.chars().next().filter(|c| matches!(c, ',' | '_')) {
            spec.group = Some(c);
            rest = &rest[1..];
        }
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(format!("`.` needs a number of decimals: {form}"));
            }
            spec.precision = Some(r[..n].parse().map_err(|_| form.to_owned())?);
            rest = &r[n..];
        }
        spec.kind = match rest {
            "" => SpecKind::General,
            "f" => SpecKind::Fixed,
            "d" => SpecKind::Integer,
            "%" => SpecKind::Percent,
            other => return Err(format!("`{other}` is not understood: {form}")),
        };
        if spec.kind == SpecKind::Integer && spec.precision.is_some() {
            return Err("`d` shows whole numbers: it takes no precision".into());
        }
        if spec.width + spec.precision.unwrap_or(0) > MAX_NUMBER_CHARS {
            return Err(format!(
                "width and precision add up to more than {MAX_NUMBER_CHARS} characters"
            ));
        }
        Ok(spec)
    }

    /// Formats `n`.
    ///
    /// # Errors
    /// A message for a fraction given to `d`, or a result longer than
    /// [`MAX_NUMBER_CHARS`].
    pub fn format(&self, n: Decimal) -> Result<String, String> {
        let (n, places) = match self.kind {
            SpecKind::General => (n, self.precision),
            SpecKind::Fixed => (n, Some(self.precision.unwrap_or(6))),
            SpecKind::Percent => (n.percent(), Some(self.precision.unwrap_or(6))),
            SpecKind::Integer => {
                if !n.is_whole() {
                    return Err(format!(
                        "{n} is not a whole number (`d` shows whole numbers; use `.0f` to round)"
                    ));
                }
                (n, None)
            }
        };
        let n = match places {
            Some(p) => n.round(p as i64),
            None => n,
        };
        let (int, frac) = n.parts(places);
        if int.len() + frac.len() > MAX_NUMBER_CHARS {
            return Err(format!(
                "the number has more than {MAX_NUMBER_CHARS} digits"
            ));
        }
        let int = match self.group {
            Some(sep) => group(&int, sep),
            None => int,
        };
        let mut body = int;
        if !frac.is_empty() {
            body.push('.');
            body.push_str(&frac);
        }
        if self.kind == SpecKind::Percent {
            body.push('%');
        }
        // A number that rounds to zero shows no sign: "0.00", not "-0.00".
        let sign = if n.negative && !n.is_zero() {
            "-"
        } else if self.plus {
            "+"
        } else {
            ""
        };
        let len = sign.len() + body.chars().count();
        let pad = self.width.saturating_sub(len);
        Ok(if self.zero_pad {
            format!("{sign}{}{body}", "0".repeat(pad))
        } else {
            format!("{}{sign}{body}", " ".repeat(pad))
        })
    }
}

/// `1234567` → `1,234,567`.
fn group(int: &str, sep: char) -> String {
    let mut out = String::with_capacity(int.len() + int.len() / 3);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(sep);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(spec: &str, value: &str, expected: &str) {
        let s = Spec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let n = Decimal::parse(value).unwrap_or_else(|| panic!("{value} parses"));
        assert_eq!(
            s.format(n).as_deref(),
            Ok(expected),
            "{{:{spec}}} of {value}"
        );
    }

    #[test]
    fn shortest_text_of_json_numbers() {
        for (v, text) in [
            (340.5, "340.5"),
            (12.0, "12"),
            (1e21, "1000000000000000000000"),
            (1.5e-7, "0.00000015"),
            (0.1, "0.1"),
            (-0.0, "0"),
            (-2.25, "-2.25"),
            (123456789.0, "123456789"),
        ] {
            assert_eq!(
                Decimal::from_f64(v).expect("finite").to_string(),
                text,
                "{v}"
            );
        }
    }

    #[test]
    fn specs() {
        check(".2f", "340.5", "340.50");
        check(".2f", "2.675", "2.68");
        check(".2f", "-2.675", "-2.68");
        check(".2f", "-0.001", "0.00");
        check(".0f", "0.5", "1");
        check(".0f", "9.5", "10");
        check(".2f", "999.995", "1000.00");
        check("f", "1", "1.000000");
        check(",", "1234567", "1,234,567");
        check(",.2f", "1234567.891", "1,234,567.89");
        check("_", "-1234", "-1_234");
        check(",", "123", "123");
        check(",", "1000", "1,000");
        check("05", "42", "00042");
        check("05", "-42", "-0042");
        check("5", "42", "   42");
        check("+", "42", "+42");
        check("+.1f", "-0.04", "+0.0");
        check("d", "12", "12");
        check("d", "12.0", "12");
        check(".1%", "0.125", "12.5%");
        check("%", "1", "100.000000%");
        check(".2", "340.5", "340.50");
        check("", "1e21", "1000000000000000000000");
        check(".3f", "1e-7", "0.000");
        check("08,.2f", "1234.5", "1,234.50");
        check("09,.2f", "1234.5", "01,234.50");
    }

    #[test]
    fn bad_specs_and_values_are_refused() {
        for (spec, message) in [
            (".2x", "`x` is not understood"),
            ("abc", "`abc` is not understood"),
            (".", "`.` needs a number of decimals"),
            (".2d", "takes no precision"),
            (".1000f", "more than 400 characters"),
        ] {
            let e = Spec::parse(spec).expect_err(spec);
            assert!(e.contains(message), "{spec}: {e}");
        }
        let e = Spec::parse("d")
            .expect("d")
            .format(Decimal::parse("2.5").expect("2.5"))
            .expect_err("fraction");
        assert_eq!(
            e,
            "2.5 is not a whole number (`d` shows whole numbers; use `.0f` to round)"
        );
        for text in [
            "",
            "abc",
            "1.2.3",
            "--1",
            "1e",
            "1e999999999",
            ".",
            "0x10",
            "1,000",
        ] {
            assert_eq!(Decimal::parse(text), None, "{text:?}");
        }
        assert!(
            Spec::parse("")
                .expect("empty spec")
                .format(Decimal::parse("1e500").expect("parses"))
                .is_err()
        );
    }
}
