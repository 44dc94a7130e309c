//! Secrets read from files named in the configuration. Their contents never reach a
//! log line, an error message or a `Debug` output.

use std::path::{Path, PathBuf};

/// The node's key seed (256 bits): its match keys' PRF key of every epoch is derived
/// from it (match key scheme v2). One per node, never shared.
pub struct KeySeed(Vec<u8>);

impl std::fmt::Debug for KeySeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySeed(..)")
    }
}

/// Why a secret file was refused. Never quotes the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("{path}: cannot read the {what}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Which secret.
        what: &'static str,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// The file is not hexadecimal text of the required length.
    #[error("{path}: the {what} must be hexadecimal text of {length}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Which secret.
        what: &'static str,
        /// The length required, in words.
        length: &'static str,
    },
}

/// Reads hexadecimal text (surrounding white space ignored) of `min..=max` digits.
fn read_hex(
    path: &Path,
    what: &'static str,
    (min, max): (usize, usize),
    length: &'static str,
) -> Result<Vec<u8>, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
        path: path.to_owned(),
        what,
        cause: source,
    })?;
    let hex = text.trim();
    let bad = || SecretError::Format {
        path: path.to_owned(),
        what,
        length,
    };
    if hex.len() < min || hex.len() % 2 != 0 || hex.len() > max {
        return Err(bad());
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())
}

impl KeySeed {
    /// Reads a key seed file: 64 hexadecimal digits, surrounding white space ignored.
    pub fn from_file(path: &Path) -> Result<KeySeed, SecretError> {
        read_hex(path, "key seed", (64, 64), "exactly 64 digits (256 bits)").map(KeySeed)
    }

    /// The seed's bytes, for key derivation only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// The node's data key: the 256-bit AES-GCM key that seals what the node stores
/// (DESIGN section 8). One per node, never shared with peers.
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// Reads a data key file: 64 hexadecimal digits, surrounding white space ignored.
    pub fn from_file(path: &Path) -> Result<DataKey, SecretError> {
        let bytes = read_hex(path, "data key", (64, 64), "exactly 64 digits (256 bits)")?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(DataKey(key))
    }

    /// A key from raw bytes (tests and tools that generate one).
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The key's bytes, for the store's cipher only.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hex_and_refuses_short_or_non_hex_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, format!("{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(KeySeed::from_file(&p).unwrap().expose().len(), 32);
        std::fs::write(&p, "abcd").unwrap();
        assert!(KeySeed::from_file(&p).is_err());
        std::fs::write(&p, "zz".repeat(32)).unwrap();
        let e = KeySeed::from_file(&p).unwrap_err().to_string();
        assert!(!e.contains("zz"), "{e}");
        assert!(format!("{:?}", KeySeed(vec![1, 2])).contains(".."));
    }

    #[test]
    fn reads_a_data_key_of_exactly_256_bits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "0f".repeat(32))).unwrap();
        assert_eq!(DataKey::from_file(&p).unwrap().expose(), &[0x0f; 32]);
        std::fs::write(&p, "0f".repeat(33)).unwrap();
        let e = DataKey::from_file(&p).unwrap_err().to_string();
        assert!(
            e.contains("data key must be hexadecimal text of exactly 64 digits"),
            "{e}"
        );
        assert!(!e.contains("0f0f"), "{e}");
        assert_eq!(format!("{:?}", DataKey::from_bytes([7; 32])), "DataKey(..)");
    }
}
