//! Secrets read from files named in the configuration. Their contents never reach a
//! log line, an error message or a `Debug` output.

use std::path::{Path, PathBuf};

/// The network matching secret (at least 256 bits).
pub struct MatchingSecret(Vec<u8>);

impl std::fmt::Debug for MatchingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MatchingSecret(..)")
    }
}

/// Why a secret file was refused. Never quotes the file's contents.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("{path}: cannot read the matching secret: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not hexadecimal text of the required length.
    #[error(
        "{path}: the matching secret must be hexadecimal text of at least 64 digits (256 bits)"
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
}

impl MatchingSecret {
    /// Reads a secret file: hexadecimal text, surrounding white space ignored.
    pub fn from_file(path: &Path) -> Result<MatchingSecret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let hex = text.trim();
        let bad = || SecretError::Format {
            path: path.to_owned(),
        };
        if hex.len() < 64 || hex.len() % 2 != 0 || hex.len() > 1024 {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        Ok(MatchingSecret(bytes))
    }

    /// The secret's bytes, for key derivation only.
    pub fn expose(&self) -> &[u8] {
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
        assert_eq!(MatchingSecret::from_file(&p).unwrap().expose().len(), 32);
        std::fs::write(&p, "abcd").unwrap();
        assert!(MatchingSecret::from_file(&p).is_err());
        std::fs::write(&p, "zz".repeat(32)).unwrap();
        let e = MatchingSecret::from_file(&p).unwrap_err().to_string();
        assert!(!e.contains("zz"), "{e}");
        assert!(format!("{:?}", MatchingSecret(vec![1, 2])).contains(".."));
    }
}
