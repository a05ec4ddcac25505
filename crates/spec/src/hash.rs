//! sha256 digests: the names of everything content-addressed.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A sha256 digest string that is not 64 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sha256 `{text}`: {reason}")]
pub struct HashError {
    /// The text as given (at most [`crate::QUOTE_LIMIT`] characters of it).
    pub text: String,
    /// Why it was refused.
    pub reason: String,
}

/// A sha256 digest, shown and parsed as 64 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

impl ContentHash {
    /// The digest of `bytes`.
    #[must_use]
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// A digest from its 32 raw bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hexadecimal digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 *lower-case* hexadecimal digits, the only form the
    /// wire accepts (so one digest has one spelling in keys and URLs).
    ///
    /// # Errors
    /// [`HashError`] naming the text.
    pub fn parse_lower_hex(text: &str) -> Result<Self, HashError> {
        let lower_hex = text.len() == 64
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex {
            return Err(HashError {
                text: crate::quote(text),
                reason: "expected 64 lower-case hexadecimal digits".to_owned(),
            });
        }
        text.parse()
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl FromStr for ContentHash {
    type Err = HashError;

    /// Parses 64 hexadecimal digits, either case.
    fn from_str(text: &str) -> Result<Self, HashError> {
        let invalid = || HashError {
            text: crate::quote(text),
            reason: "expected 64 hexadecimal digits".to_owned(),
        };
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.to_ascii_lowercase(), &mut out).map_err(|_| invalid())?;
        Ok(Self(out))
    }
}

impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_errors_name_the_text() {
        let h = ContentHash::of_bytes(b"abc");
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.to_hex().parse::<ContentHash>().expect("valid"), h);
        assert_eq!(
            h.to_hex()
                .to_uppercase()
                .parse::<ContentHash>()
                .expect("valid"),
            h
        );
        let err = "abc".parse::<ContentHash>().expect_err("too short");
        assert_eq!(
            err.to_string(),
            "sha256 `abc`: expected 64 hexadecimal digits"
        );
        let bad = "g".repeat(64);
        assert!(bad.parse::<ContentHash>().is_err());
        assert_eq!(
            ContentHash::parse_lower_hex(&h.to_hex().to_uppercase())
                .expect_err("upper")
                .reason,
            "expected 64 lower-case hexadecimal digits"
        );
        assert_eq!(ContentHash::parse_lower_hex(&h.to_hex()).expect("lower"), h);
    }
}
