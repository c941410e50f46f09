//! `SecretBox`: AES-256-GCM sealing of every stored secret (SPEC §9).
//!
//! Sealed layout: `version (1) | key id (4) | nonce (12) | ciphertext + tag (16)`.
//! The key id is the first 4 bytes of SHA-256 of the key, so a ciphertext names the key that
//! sealed it and keys can be rotated: new secrets are sealed with the current key, and secrets
//! sealed under a key listed in `GATEHOUSE_ENCRYPTION_OLD_KEYS` still open. The row id and
//! column are the associated data, so a ciphertext copied to another row or column fails to
//! open instead of decrypting to someone else's secret.

use std::io::Write as _;
use std::path::Path;

use aes_gcm::aead::{Aead as _, Payload};
use aes_gcm::{Aes256Gcm, KeyInit as _, Nonce};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed secret is malformed")]
    Malformed,
    #[error("sealed secret was made with an unknown encryption key (key id {0})")]
    UnknownKey(String),
    #[error("sealed secret failed authentication (tampered, moved, or wrong key)")]
    Authentication,
    #[error("encryption key file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("encryption key file {0} does not hold the base64 of 32 bytes")]
    KeyFileContent(String),
}

/// Where a secret lives; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct SecretSlot {
    pub table: &'static str,
    pub column: &'static str,
    pub row_id: Uuid,
}

/// Where each kind of stored secret lives: the slots every sealer and opener must agree on.
impl SecretSlot {
    /// `target_auth_methods.credential` of one auth method.
    pub fn auth_method_credential(method_id: Uuid) -> Self {
        Self {
            table: "target_auth_methods",
            column: "credential",
            row_id: method_id,
        }
    }

    /// `connected_accounts.access_token` of one account.
    pub fn account_access_token(account_id: Uuid) -> Self {
        Self {
            table: "connected_accounts",
            column: "access_token",
            row_id: account_id,
        }
    }

    /// `connected_accounts.refresh_token` of one account.
    pub fn account_refresh_token(account_id: Uuid) -> Self {
        Self {
            table: "connected_accounts",
            column: "refresh_token",
            row_id: account_id,
        }
    }

    /// `webhook_endpoints.secret` of one endpoint (the signing secret's bytes).
    pub fn webhook_secret(endpoint_id: Uuid) -> Self {
        Self {
            table: "webhook_endpoints",
            column: "secret",
            row_id: endpoint_id,
        }
    }

    fn associated_data(&self) -> Vec<u8> {
        format!("gatehouse:{}.{}:{}", self.table, self.column, self.row_id).into_bytes()
    }
}

struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
    /// A separate key for MACs, derived from the encryption key, so one key never serves two
    /// algorithms.
    mac_key: [u8; 32],
}

impl Key {
    fn new(bytes: &[u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let mut mac_input = b"gatehouse-mac-v1:".to_vec();
        mac_input.extend_from_slice(bytes);
        Self {
            id,
            cipher: Aes256Gcm::new(bytes.into()),
            mac_key: Sha256::digest(&mac_input).into(),
        }
    }
}

/// Seals and opens secrets. Cheap to share behind an `Arc`.
pub struct SecretBox {
    current: Key,
    older: Vec<Key>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBox")
            .field("key_id", &hex::encode(self.current.id))
            .field("older_keys", &self.older.len())
            .finish()
    }
}

impl SecretBox {
    pub fn new(current: &[u8; 32], older: &[[u8; 32]]) -> Self {
        Self {
            current: Key::new(current),
            older: older.iter().map(Key::new).collect(),
        }
    }

    /// Hex id of the key new secrets are sealed with.
    pub fn key_id(&self) -> String {
        hex::encode(self.current.id)
    }

    pub fn seal(&self, plaintext: &[u8], slot: SecretSlot) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = slot.associated_data();
        let payload = Payload {
            msg: plaintext,
            aad: &aad,
        };
        let ciphertext = match self
            .current
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
        {
            Ok(ciphertext) => ciphertext,
            // aes-gcm fails only for plaintexts beyond 64 GiB, which no credential is.
            Err(_) => unreachable!("AES-GCM encryption of a bounded plaintext cannot fail"),
        };
        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.push(VERSION);
        sealed.extend_from_slice(&self.current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8], slot: SecretSlot) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != VERSION {
            return Err(CryptoError::Malformed);
        }
        let key_id = &sealed[1..1 + KEY_ID_LEN];
        let nonce = &sealed[1 + KEY_ID_LEN..HEADER_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|key| key.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(key_id)))?;
        let aad = slot.associated_data();
        let payload = Payload {
            msg: &sealed[HEADER_LEN..],
            aad: &aad,
        };
        key.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Seal a UTF-8 secret.
    pub fn seal_str(&self, plaintext: &str, slot: SecretSlot) -> Vec<u8> {
        self.seal(plaintext.as_bytes(), slot)
    }

    /// Open a secret that was sealed from UTF-8 text.
    pub fn open_string(&self, sealed: &[u8], slot: SecretSlot) -> Result<String, CryptoError> {
        String::from_utf8(self.open(sealed, slot)?).map_err(|_| CryptoError::Malformed)
    }
}

impl SecretBox {
    /// HMAC-SHA256 of `data` under the current key, hex.
    pub fn sign(&self, data: &[u8]) -> String {
        hex::encode(mac(&self.current.mac_key, data))
    }

    /// Whether `signature` is `sign(data)` under the current or an older key (constant time).
    pub fn verify(&self, data: &[u8], signature: &str) -> bool {
        use hmac::Mac as _;
        let Ok(expected) = hex::decode(signature) else {
            return false;
        };
        std::iter::once(&self.current)
            .chain(&self.older)
            .any(|key| {
                let Ok(mut verifier) =
                    <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&key.mac_key)
                else {
                    return false;
                };
                verifier.update(data);
                verifier.verify_slice(&expected).is_ok()
            })
    }
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    match <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        // HMAC accepts keys of any length.
        Err(_) => unreachable!("HMAC-SHA256 takes any key length"),
    }
}

/// Where the current key came from, so startup can warn when it was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Environment,
    KeyFile,
    Generated,
}

/// The configured key, else the one in `key_file`, else a new one written there (mode 0600).
pub fn load_or_generate_key(
    configured: Option<[u8; 32]>,
    key_file: &Path,
) -> Result<([u8; 32], KeyOrigin), CryptoError> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    if let Some(key) = configured {
        return Ok((key, KeyOrigin::Environment));
    }
    let display = key_file.display().to_string();
    let io_error = |source| CryptoError::KeyFile {
        path: display.clone(),
        source,
    };
    match std::fs::read_to_string(key_file) {
        Ok(text) => {
            let key = crate::config::decode_key(&text)
                .ok_or_else(|| CryptoError::KeyFileContent(display.clone()))?;
            Ok((key, KeyOrigin::KeyFile))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = key_file.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io_error)?;
            }
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            let mut file = open_private_new(key_file).map_err(io_error)?;
            writeln!(file, "{}", STANDARD.encode(key)).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
            Ok((key, KeyOrigin::Generated))
        }
        Err(error) => Err(io_error(error)),
    }
}

#[cfg(unix)]
fn open_private_new(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private_new(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(row_id: Uuid) -> SecretSlot {
        SecretSlot {
            table: "target_auth_methods",
            column: "credential",
            row_id,
        }
    }

    #[test]
    fn round_trip_and_fresh_nonce_every_time() {
        let secret_box = SecretBox::new(&[7; 32], &[]);
        let id = Uuid::new_v4();
        let a = secret_box.seal_str("hunter2", slot(id));
        let b = secret_box.seal_str("hunter2", slot(id));
        assert_ne!(a, b, "two seals of one plaintext must differ");
        assert_eq!(secret_box.open_string(&a, slot(id)).unwrap(), "hunter2");
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn tampering_moving_and_wrong_key_are_errors() {
        let secret_box = SecretBox::new(&[7; 32], &[]);
        let id = Uuid::new_v4();
        let sealed = secret_box.seal_str("hunter2", slot(id));
        for index in [HEADER_LEN, sealed.len() - 1, 2, 10] {
            let mut tampered = sealed.clone();
            tampered[index] ^= 0x01;
            assert!(
                secret_box.open(&tampered, slot(id)).is_err(),
                "flip at {index}"
            );
        }
        assert!(matches!(
            secret_box.open(&sealed, slot(Uuid::new_v4())),
            Err(CryptoError::Authentication)
        ));
        let other_column = SecretSlot {
            column: "refresh_token",
            ..slot(id)
        };
        assert!(secret_box.open(&sealed, other_column).is_err());
        assert!(matches!(
            secret_box.open(&sealed[..10], slot(id)),
            Err(CryptoError::Malformed)
        ));
        let wrong_key = SecretBox::new(&[8; 32], &[]);
        assert!(matches!(
            wrong_key.open(&sealed, slot(id)),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn rotated_key_still_opens_old_secrets_and_seals_with_the_new_one() {
        let old = SecretBox::new(&[1; 32], &[]);
        let id = Uuid::new_v4();
        let sealed_old = old.seal_str("before rotation", slot(id));
        let rotated = SecretBox::new(&[2; 32], &[[1; 32]]);
        assert_eq!(
            rotated.open_string(&sealed_old, slot(id)).unwrap(),
            "before rotation"
        );
        let sealed_new = rotated.seal_str("after", slot(id));
        assert_eq!(
            &sealed_new[1..5],
            &hex::decode(rotated.key_id()).unwrap()[..]
        );
        assert!(old.open(&sealed_new, slot(id)).is_err());
    }

    #[test]
    fn signatures_verify_under_current_and_old_keys_only() {
        let old = SecretBox::new(&[1; 32], &[]);
        let signed_old = old.sign(b"nonce");
        let rotated = SecretBox::new(&[2; 32], &[[1; 32]]);
        assert!(rotated.verify(b"nonce", &signed_old));
        assert!(rotated.verify(b"nonce", &rotated.sign(b"nonce")));
        assert!(!rotated.verify(b"other", &signed_old));
        assert!(!SecretBox::new(&[3; 32], &[]).verify(b"nonce", &signed_old));
        assert!(!rotated.verify(b"nonce", "zz"));
    }

    #[test]
    fn key_is_generated_once_with_private_mode_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("secret.key");
        let (first, origin) = load_or_generate_key(None, &path).unwrap();
        assert_eq!(origin, KeyOrigin::Generated);
        let (second, origin) = load_or_generate_key(None, &path).unwrap();
        assert_eq!(origin, KeyOrigin::KeyFile);
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (from_env, origin) = load_or_generate_key(Some([9; 32]), &path).unwrap();
        assert_eq!((from_env, origin), ([9; 32], KeyOrigin::Environment));
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            load_or_generate_key(None, &path),
            Err(CryptoError::KeyFileContent(_))
        ));
    }
}
