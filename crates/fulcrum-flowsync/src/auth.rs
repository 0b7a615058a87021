//! The shared key and the HMAC-SHA256 every datagram carries: a datagram whose MAC does not
//! verify was not written by a holder of the key, and is dropped before it is decoded.

use std::path::{Path, PathBuf};

use ring::hmac;

use crate::wire::MAC_LEN;

/// Shortest key accepted: 128 bits.
pub const MIN_KEY_LEN: usize = 16;

/// Why the key file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("flow_sharing.key_file {}: cannot read it", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds too few bytes to be a secret.
    #[error(
        "flow_sharing.key_file {}: holds {len} bytes; a key needs at least {MIN_KEY_LEN} \
         (make one with `head -c 32 /dev/urandom > {}`)",
        path.display(), path.display()
    )]
    Short {
        /// The key file.
        path: PathBuf,
        /// Bytes it holds.
        len: usize,
    },
}

/// The shared secret of every balancer that shares flows.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Reads the key from `path`: every byte of the file is the key (a trailing newline
    /// too, so a key written by `echo` works only if every balancer's file has it).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&bytes).ok_or(KeyError::Short {
            path: path.to_owned(),
            len: bytes.len(),
        })
    }

    /// A key from bytes; `None` when there are fewer than [`MIN_KEY_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        (bytes.len() >= MIN_KEY_LEN).then(|| Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// Appends the MAC of `datagram` (header and body) to it.
    pub fn sign(&self, datagram: &mut Vec<u8>) {
        let tag = hmac::sign(&self.0, datagram);
        datagram.extend_from_slice(tag.as_ref());
    }

    /// Whether `mac` is the MAC of `signed`, compared in constant time.
    pub fn verify(&self, signed: &[u8], mac: &[u8]) -> bool {
        mac.len() == MAC_LEN && hmac::verify(&self.0, signed, mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_with_the_same_key_and_bytes() {
        let key = Key::from_bytes(&[7; 32]).unwrap();
        let other = Key::from_bytes(&[8; 32]).unwrap();
        let mut datagram = b"header and body".to_vec();
        key.sign(&mut datagram);
        let (signed, mac) = datagram.split_at(datagram.len() - MAC_LEN);
        assert!(key.verify(signed, mac));
        assert!(!other.verify(signed, mac));
        assert!(!key.verify(b"header and bodz", mac));
        assert!(!key.verify(signed, &mac[1..]));
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("flowsync-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let short = dir.join("short");
        std::fs::write(&short, b"0123456789").unwrap();
        let err = Key::from_file(&short).unwrap_err().to_string();
        assert!(err.contains(&*short.to_string_lossy()), "{err}");
        assert!(err.contains("holds 10 bytes"), "{err}");
        let missing = dir.join("missing");
        let err = Key::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains(&*missing.to_string_lossy()), "{err}");
        let good = dir.join("good");
        std::fs::write(&good, [1u8; 16]).unwrap();
        assert!(Key::from_file(&good).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
