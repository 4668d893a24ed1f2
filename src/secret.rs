//! Secrets (API tokens, webhook signing keys, bearer tokens) as a type that cannot
//! leak by accident: `Debug`, `Display` and `Serialize` all print `<redacted>`, so a
//! secret inside a config struct, an error or an API response shows up only as that
//! marker. The value is reachable only through [`Secret::expose`], which makes every
//! use greppable.

#![warn(missing_docs)]

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;
use subtle::ConstantTimeEq;

/// What a secret prints as everywhere.
pub const REDACTED: &str = "<redacted>";

/// A secret string. Deserialises from a plain string (config values have had their
/// `${ENV}` references expanded already); serialises, debugs and displays as
/// `<redacted>`. Equality is constant-time.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads a secret from a file (a mounted Kubernetes or Docker secret, say),
    /// trimming surrounding whitespace such as the trailing newline editors add. The
    /// error names the file but never its contents.
    pub fn from_file(path: &Path) -> std::io::Result<Secret> {
        let text = std::fs::read_to_string(path)?;
        Ok(Secret(text.trim().to_owned()))
    }

    /// The secret value itself. Call only where the value is sent or used to sign.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with a presented value in constant time (for the length of the
    /// shorter input), e.g. a bearer token from a request.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(self.0.as_bytes(), presented.as_bytes())
    }
}

/// Constant-time equality of two byte strings: the time taken does not depend on
/// where they first differ. Different lengths compare unequal (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        ct_eq(self.0.as_bytes(), other.0.as_bytes())
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:#?}"), REDACTED);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserialises_from_a_string() {
        let s: Secret = serde_json::from_str("\"tok\"").unwrap();
        assert_eq!(s.expose(), "tok");
        assert!(serde_json::from_str::<Secret>("3").is_err());
    }

    #[test]
    fn constant_time_comparison() {
        let s = Secret::new("abc");
        assert!(s.matches("abc"));
        assert!(!s.matches("abd"));
        assert!(!s.matches("ab"));
        assert!(!s.matches(""));
        assert!(ct_eq(b"", b""));
        assert_eq!(s, Secret::new("abc"));
        assert_ne!(s, Secret::new("abcd"));
    }

    #[test]
    fn from_file_trims() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(Secret::from_file(&path).unwrap().expose(), "s3cret");
        let err = Secret::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
    }
}
