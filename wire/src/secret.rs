//! [`SecretValue`]: the one type that holds a secret value on the wire and in memory.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// A secret value: UTF-8 text that redacts itself in `Debug` and `Display` and is zeroized when
/// dropped. Serializes as a plain JSON string, so it can cross the wire where it must (the mTLS
/// agent API, the agent socket, the broker's input API), and nowhere else.
///
/// Code that needs the bytes calls [`SecretValue::expose`]; grep for it to audit every use.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a value. The `String` is moved, not copied, so no unzeroized copy is left behind.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// Copies a value from bytes that must be UTF-8. The caller zeroizes its own buffer.
    pub fn from_utf8(bytes: &[u8]) -> Result<Self, std::str::Utf8Error> {
        Ok(Self::new(std::str::from_utf8(bytes)?.to_owned()))
    }

    /// The value itself. Every call site is a place where a secret leaves its wrapper.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        Self::new(value.to_owned())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde_json hands us an owned String for escaped strings; move it into the wrapper.
        let mut raw = String::deserialize(deserializer)?;
        let value = Self::new(std::mem::take(&mut raw));
        raw.zeroize();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_debug_and_display() {
        let v = SecretValue::from("hunter2-planted");
        assert!(!format!("{v:?}").contains("hunter2"));
        assert!(!format!("{v}").contains("hunter2"));
        assert_eq!(v.expose(), "hunter2-planted");
    }

    #[test]
    fn round_trips_as_plain_json_string() {
        let v = SecretValue::from("a\"b");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#""a\"b""#);
        let back: SecretValue = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), "a\"b");
    }
}
