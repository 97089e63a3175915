//! Object sealing: keyed ids, per-session AEAD subkeys, MACs and checksums.
//!
//! Every object stored in a repository passes through [`Sealer::seal`]. The
//! envelope is described byte by byte in docs/FORMAT.md ("Object envelope").

pub mod keyfile;

use crate::error::{Error, Result};
use crate::id::{BlobId, ID_LEN};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Envelope type byte: plaintext + unkeyed BLAKE3 checksum.
pub const ENVELOPE_PLAIN: u8 = 0x00;
/// Envelope type byte: plaintext + keyed BLAKE3 MAC.
pub const ENVELOPE_MAC: u8 = 0x01;
/// Envelope type byte: AES-256-GCM with a per-session subkey.
pub const ENVELOPE_AES256GCM: u8 = 0x02;
/// Envelope type byte: ChaCha20-Poly1305 with a per-session subkey.
pub const ENVELOPE_CHACHA20POLY1305: u8 = 0x03;
pub const SESSION_ID_LEN: usize = 16;
pub const COUNTER_LEN: usize = 8;
pub const TAG_LEN: usize = 16;
pub const CHECKSUM_LEN: usize = 32;
/// Bytes before the payload in an AEAD envelope: type, session id, counter.
pub const AEAD_HEADER_LEN: usize = 1 + SESSION_ID_LEN + COUNTER_LEN;
pub const MASTER_SECRET_LEN: usize = 64;
/// The longest envelope trailer: a checksum or MAC (an AEAD tag is shorter).
pub const ENVELOPE_TRAILER_MAX: usize = CHECKSUM_LEN;

/// Context strings for BLAKE3 `derive_key`; changing one changes the format.
pub const CONTEXT_ID_KEY: &str = "strata 2026-11-25 chunk id key v1";
pub const CONTEXT_MAC_KEY: &str = "strata 2026-11-25 object mac key v1";
pub const CONTEXT_ENC_KEY: &str = "strata 2026-11-25 object encryption key v1";
pub const CONTEXT_CHUNKER_SEED: &str = "strata 2026-11-25 chunker gear seed v1";
pub const CONTEXT_SESSION_KEY: &str = "strata 2026-11-25 session subkey v1";
pub const CONTEXT_META_ID_KEY: &str = "strata 2026-11-25 metadata id key v1";

/// What kind of object is sealed; bound into the associated data so an
/// object cannot be replayed as another kind.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectType {
    Data = 1,
    Items = 2,
    Archive = 3,
    PackHeader = 4,
    Index = 5,
    Manifest = 6,
}

impl ObjectType {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Data,
            2 => Self::Items,
            3 => Self::Archive,
            4 => Self::PackHeader,
            5 => Self::Index,
            6 => Self::Manifest,
            _ => return None,
        })
    }
}

/// Encryption mode chosen at `init`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No key: plain BLAKE3 ids and checksums. For off-site replicas of
    /// already-encrypted repositories.
    None,
    /// Keyed ids and MACs, no confidentiality.
    Authenticated,
    /// Encrypted; the passphrase-protected key lives in the repository.
    Repokey,
    /// Encrypted; the key file lives only on the client.
    Keyfile,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Self::None,
            "authenticated" => Self::Authenticated,
            "repokey" => Self::Repokey,
            "keyfile" => Self::Keyfile,
            _ => {
                return Err(Error::invalid(format!(
                    "unknown encryption mode `{s}`: use repokey, keyfile, authenticated or none"
                )));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Authenticated => "authenticated",
            Self::Repokey => "repokey",
            Self::Keyfile => "keyfile",
        }
    }

    pub fn has_key(self) -> bool {
        self != Self::None
    }

    pub fn encrypts(self) -> bool {
        matches!(self, Self::Repokey | Self::Keyfile)
    }
}

/// AEAD cipher for encrypted modes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cipher {
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
}

impl Cipher {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "aes" | "aes-256-gcm" => Ok(Self::Aes256Gcm),
            "chacha20" | "chacha20-poly1305" => Ok(Self::Chacha20Poly1305),
            _ => Err(Error::invalid(format!(
                "unknown cipher `{s}`: use aes-256-gcm or chacha20-poly1305"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256Gcm => "aes-256-gcm",
            Self::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// AES-GCM where the CPU has AES instructions, ChaCha20 otherwise
    /// (Raspberry Pi 3/4 have none; software AES there is slow and not
    /// constant-time).
    pub fn default_for_cpu() -> Self {
        Self::default_for(cpu_has_aes())
    }

    /// The default cipher of a CPU with (or without) usable AES
    /// instructions; [`cpu_has_aes`] answers for this one.
    pub fn default_for(has_aes: bool) -> Self {
        if has_aes {
            Self::Aes256Gcm
        } else {
            Self::Chacha20Poly1305
        }
    }

    fn envelope_byte(self) -> u8 {
        match self {
            Self::Aes256Gcm => ENVELOPE_AES256GCM,
            Self::Chacha20Poly1305 => ENVELOPE_CHACHA20POLY1305,
        }
    }
}

/// Whether this CPU has AES instructions that the `aes` crate uses. On
/// aarch64 that is FEAT_AES with FEAT_PMULL (the GHASH multiply), present
/// on the Pi 5 and absent on the Pi 3/4. On 32-bit ARM the answer is always
/// no: even an ARMv8 core running a 32-bit OS gets only the crate's
/// portable (bitsliced) AES, much slower than ChaCha20 there.
#[cfg(target_arch = "x86_64")]
pub fn cpu_has_aes() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
pub fn cpu_has_aes() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub fn cpu_has_aes() -> bool {
    false
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::invalid(format!("no system randomness: {e}")))
}

/// The per-repository secrets derived from the 64-byte master secret.
#[derive(Clone)]
pub struct RepoKeys {
    pub mode: Mode,
    pub cipher: Option<Cipher>,
    id_key: Option<[u8; 32]>,
    /// Keys ids of items and archive blobs, so metadata never shares an id
    /// with file data (a file identical to an items chunk stays distinct).
    meta_id_key: [u8; 32],
    mac_key: [u8; 32],
    enc_key: [u8; 32],
    pub chunker_seed: [u8; 32],
}

impl RepoKeys {
    /// Keys of a keyed repository, derived from its master secret.
    pub fn from_master(mode: Mode, cipher: Option<Cipher>, master: &[u8]) -> Self {
        Self {
            mode,
            cipher,
            id_key: Some(blake3::derive_key(CONTEXT_ID_KEY, master)),
            meta_id_key: blake3::derive_key(CONTEXT_META_ID_KEY, master),
            mac_key: blake3::derive_key(CONTEXT_MAC_KEY, master),
            enc_key: blake3::derive_key(CONTEXT_ENC_KEY, master),
            chunker_seed: blake3::derive_key(CONTEXT_CHUNKER_SEED, master),
        }
    }

    /// A `none` repository: no secrets; the chunker seed is public.
    pub fn unkeyed(public_chunker_seed: [u8; 32]) -> Self {
        Self {
            mode: Mode::None,
            cipher: None,
            id_key: None,
            meta_id_key: blake3::derive_key(CONTEXT_META_ID_KEY, &[]),
            mac_key: [0; 32],
            enc_key: [0; 32],
            chunker_seed: public_chunker_seed,
        }
    }

    /// Every derived secret, in a fixed order, for `strata selftest`.
    pub(crate) fn derived_secrets(&self) -> [[u8; 32]; 5] {
        [
            self.id_key.unwrap_or([0; 32]),
            self.meta_id_key,
            self.mac_key,
            self.enc_key,
            self.chunker_seed,
        ]
    }

    /// Content id of a blob's plaintext. File data uses the chunk id key
    /// (plain BLAKE3 in `none` mode); metadata blobs use a key per type.
    pub fn blob_id(&self, ty: ObjectType, data: &[u8]) -> BlobId {
        if ty != ObjectType::Data {
            let mut material = self.meta_id_key.to_vec();
            material.push(ty as u8);
            let key = blake3::derive_key(CONTEXT_META_ID_KEY, &material);
            return BlobId(*blake3::keyed_hash(&key, data).as_bytes());
        }
        match &self.id_key {
            Some(k) => BlobId(*blake3::keyed_hash(k, data).as_bytes()),
            None => BlobId(*blake3::hash(data).as_bytes()),
        }
    }
}

enum SessionCipher {
    Aes(Box<Aes256Gcm>),
    Chacha(Box<ChaCha20Poly1305>),
}

impl SessionCipher {
    fn new(cipher: Cipher, enc_key: &[u8; 32], session: &[u8; SESSION_ID_LEN]) -> Self {
        let mut material = [0u8; 32 + SESSION_ID_LEN];
        material[..32].copy_from_slice(enc_key);
        material[32..].copy_from_slice(session);
        let key = blake3::derive_key(CONTEXT_SESSION_KEY, &material);
        match cipher {
            Cipher::Aes256Gcm => SessionCipher::Aes(Box::new(Aes256Gcm::new(&key.into()))),
            Cipher::Chacha20Poly1305 => {
                SessionCipher::Chacha(Box::new(ChaCha20Poly1305::new(&key.into())))
            }
        }
    }

    fn encrypt(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = match self {
            Self::Aes(c) => c
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .map(|t| t.into()),
            Self::Chacha(c) => c
                .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
                .map(|t| t.into()),
        };
        tag.map_err(|_| Error::invalid("encryption failed (object too large)"))
    }

    fn decrypt(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        match self {
            Self::Aes(c) => c
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .is_ok(),
            Self::Chacha(c) => c
                .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
                .is_ok(),
        }
    }
}

/// Seals and opens objects. One `Sealer` is one session: it draws a random
/// 128-bit session id when created and numbers its messages with a 64-bit
/// counter, so nonces never repeat within a session, and sessions use
/// independent subkeys (see docs/FORMAT.md, "Nonces").
pub struct Sealer {
    keys: RepoKeys,
    session_id: [u8; SESSION_ID_LEN],
    counter: AtomicU64,
    own: Option<Arc<SessionCipher>>,
    others: Mutex<HashMap<[u8; SESSION_ID_LEN], Arc<SessionCipher>>>,
}

impl Sealer {
    pub fn new(keys: RepoKeys) -> Result<Self> {
        let mut session_id = [0u8; SESSION_ID_LEN];
        random_bytes(&mut session_id)?;
        Ok(Self::with_session(keys, session_id))
    }

    /// A session with a chosen id, for `strata selftest`'s known answers
    /// only: two sealers with one id and one key would reuse nonces.
    pub(crate) fn with_session(keys: RepoKeys, session_id: [u8; SESSION_ID_LEN]) -> Self {
        let own = keys
            .cipher
            .filter(|_| keys.mode.encrypts())
            .map(|c| Arc::new(SessionCipher::new(c, &keys.enc_key, &session_id)));
        Self {
            keys,
            session_id,
            counter: AtomicU64::new(0),
            own,
            others: Mutex::new(HashMap::new()),
        }
    }

    pub fn keys(&self) -> &RepoKeys {
        &self.keys
    }

    pub fn blob_id(&self, ty: ObjectType, data: &[u8]) -> BlobId {
        self.keys.blob_id(ty, data)
    }

    /// Seals `payload` (compression byte + data) into an envelope.
    pub fn seal(&self, ty: ObjectType, id: &[u8; ID_LEN], payload: &[u8]) -> Result<Vec<u8>> {
        let head = self.envelope_header_len();
        let mut buf = Vec::with_capacity(head + payload.len() + ENVELOPE_TRAILER_MAX);
        buf.resize(head, 0);
        buf.extend_from_slice(payload);
        self.seal_in_place(ty, id, &mut buf, 0)?;
        Ok(buf)
    }

    /// Bytes an envelope of this repository has before its payload.
    pub fn envelope_header_len(&self) -> usize {
        match (self.keys.mode, &self.own) {
            (Mode::None | Mode::Authenticated, _) => 1,
            (_, Some(_)) => AEAD_HEADER_LEN,
            _ => 1, // `seal_in_place` refuses it
        }
    }

    /// Seals without copying the payload: `buf[start..]` holds
    /// [`Sealer::envelope_header_len`] bytes of room, then the payload; it
    /// becomes the envelope, the same bytes [`Sealer::seal`] returns. What
    /// precedes `start` (the pack being built) is left alone.
    pub fn seal_in_place(
        &self,
        ty: ObjectType,
        id: &[u8; ID_LEN],
        buf: &mut Vec<u8>,
        start: usize,
    ) -> Result<()> {
        let aad = associated_data(ty, id);
        let head = self.envelope_header_len();
        if buf.len() < start + head {
            return Err(Error::invalid(
                "envelope buffer without room for its header",
            ));
        }
        match (self.keys.mode, &self.own, self.keys.cipher) {
            (Mode::None, _, _) => {
                seal_checked(ENVELOPE_PLAIN, &aad, buf, start, None);
                Ok(())
            }
            (Mode::Authenticated, _, _) => {
                seal_checked(ENVELOPE_MAC, &aad, buf, start, Some(&self.keys.mac_key));
                Ok(())
            }
            (_, Some(cipher), Some(c)) => self
                .seal_aead(c, cipher, &aad, &mut buf[start..])
                .map(|tag| buf.extend_from_slice(&tag)),
            _ => Err(Error::invalid("encrypted repository without a cipher")),
        }
    }

    /// Fills in the header of `env` (header room + payload), encrypts the
    /// payload in place and returns the tag.
    fn seal_aead(
        &self,
        c: Cipher,
        cipher: &SessionCipher,
        aad: &[u8],
        env: &mut [u8],
    ) -> Result<[u8; TAG_LEN]> {
        // Never wraps: at u64::MAX the session refuses to seal any more.
        let counter = self
            .counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .map_err(|_| Error::invalid("session nonce space exhausted; restart"))?;
        env[0] = c.envelope_byte();
        env[1..1 + SESSION_ID_LEN].copy_from_slice(&self.session_id);
        env[1 + SESSION_ID_LEN..AEAD_HEADER_LEN].copy_from_slice(&counter.to_le_bytes());
        cipher.encrypt(&nonce(counter), aad, &mut env[AEAD_HEADER_LEN..])
    }

    /// Opens an envelope and returns its payload; `what` names it in errors.
    pub fn open(
        &self,
        ty: ObjectType,
        id: &[u8; ID_LEN],
        mut env: Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        let payload = self.open_in_place(ty, id, &mut env, what)?;
        env.truncate(payload.end);
        env.drain(..payload.start);
        Ok(env)
    }

    /// [`Sealer::open`] without moving the payload to the front: checks
    /// (and decrypts) `env` in place and says where the payload lies in it.
    /// Restores use it to decompress straight from the read buffer.
    pub fn open_in_place(
        &self,
        ty: ObjectType,
        id: &[u8; ID_LEN],
        env: &mut [u8],
        what: &dyn Fn() -> String,
    ) -> Result<std::ops::Range<usize>> {
        let integrity = || Error::Integrity { what: what() };
        let aad = associated_data(ty, id);
        let first = *env.first().ok_or_else(integrity)?;
        let expected = match (self.keys.mode, self.keys.cipher) {
            (Mode::None, _) => ENVELOPE_PLAIN,
            (Mode::Authenticated, _) => ENVELOPE_MAC,
            (_, Some(c)) => c.envelope_byte(),
            _ => return Err(integrity()),
        };
        // An envelope of another type than the repository's is rejected:
        // accepting it would allow a downgrade to an unauthenticated form.
        if first != expected {
            return Err(integrity());
        }
        match first {
            ENVELOPE_PLAIN | ENVELOPE_MAC => {
                if env.len() < 1 + CHECKSUM_LEN {
                    return Err(integrity());
                }
                let split = env.len() - CHECKSUM_LEN;
                let key = (first == ENVELOPE_MAC).then_some(&self.keys.mac_key);
                let sum = checksum(key, &aad, &env[1..split]);
                if !constant_time_eq(&sum, &env[split..]) {
                    return Err(integrity());
                }
                Ok(1..split)
            }
            _ => self.open_aead(&aad, env).ok_or_else(integrity),
        }
    }

    fn open_aead(&self, aad: &[u8], env: &mut [u8]) -> Option<std::ops::Range<usize>> {
        if env.len() < AEAD_HEADER_LEN + TAG_LEN {
            return None;
        }
        let session: [u8; SESSION_ID_LEN] = env[1..1 + SESSION_ID_LEN].try_into().ok()?;
        let counter = u64::from_le_bytes(env[1 + SESSION_ID_LEN..AEAD_HEADER_LEN].try_into().ok()?);
        let split = env.len() - TAG_LEN;
        let tag: [u8; TAG_LEN] = env[split..].try_into().ok()?;
        let cipher = self.session_cipher(&session)?;
        if !cipher.decrypt(&nonce(counter), aad, &mut env[AEAD_HEADER_LEN..split], &tag) {
            return None;
        }
        Some(AEAD_HEADER_LEN..split)
    }

    fn session_cipher(&self, session: &[u8; SESSION_ID_LEN]) -> Option<Arc<SessionCipher>> {
        if *session == self.session_id {
            return self.own.clone();
        }
        let c = self.keys.cipher?;
        let mut map = self.others.lock().ok()?;
        if map.len() > 4096 {
            map.clear();
        }
        let entry = map
            .entry(*session)
            .or_insert_with(|| Arc::new(SessionCipher::new(c, &self.keys.enc_key, session)));
        Some(entry.clone())
    }
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn associated_data(ty: ObjectType, id: &[u8; ID_LEN]) -> [u8; 1 + ID_LEN] {
    let mut aad = [0u8; 1 + ID_LEN];
    aad[0] = ty as u8;
    aad[1..].copy_from_slice(id);
    aad
}

/// Seals `buf[start..]` (header room + payload) as a checksummed envelope.
fn seal_checked(ty: u8, aad: &[u8], buf: &mut Vec<u8>, start: usize, key: Option<&[u8; 32]>) {
    buf[start] = ty;
    let sum = checksum(key, aad, &buf[start + 1..]);
    buf.extend_from_slice(&sum);
}

fn checksum(key: Option<&[u8; 32]>, aad: &[u8], payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = match key {
        Some(k) => blake3::Hasher::new_keyed(k),
        None => blake3::Hasher::new(),
    };
    h.update(aad);
    h.update(payload);
    *h.finalize().as_bytes()
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(mode: Mode, cipher: Option<Cipher>) -> Sealer {
        Sealer::new(RepoKeys::from_master(mode, cipher, &[7u8; 64])).unwrap()
    }

    #[test]
    fn round_trip_every_mode() {
        for (mode, cipher) in [
            (Mode::Repokey, Some(Cipher::Aes256Gcm)),
            (Mode::Keyfile, Some(Cipher::Chacha20Poly1305)),
            (Mode::Authenticated, None),
        ] {
            let s = sealer(mode, cipher);
            let id = [3u8; 32];
            let env = s.seal(ObjectType::Data, &id, b"hello").unwrap();
            let back = s
                .open(ObjectType::Data, &id, env.clone(), &|| "t".into())
                .unwrap();
            assert_eq!(back, b"hello");
            // wrong type, wrong id, flipped bit: all rejected
            assert!(
                s.open(ObjectType::Items, &id, env.clone(), &|| "t".into())
                    .is_err()
            );
            assert!(
                s.open(ObjectType::Data, &[4u8; 32], env.clone(), &|| "t".into())
                    .is_err()
            );
            let mut bad = env.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(s.open(ObjectType::Data, &id, bad, &|| "t".into()).is_err());
        }
    }

    #[test]
    fn other_session_can_open_and_nonces_differ() {
        let a = sealer(Mode::Repokey, Some(Cipher::Aes256Gcm));
        let b = sealer(Mode::Repokey, Some(Cipher::Aes256Gcm));
        let e1 = a.seal(ObjectType::Data, &[0; 32], b"x").unwrap();
        let e2 = a.seal(ObjectType::Data, &[0; 32], b"x").unwrap();
        assert_ne!(e1, e2, "same plaintext must not give the same ciphertext");
        assert_eq!(
            b.open(ObjectType::Data, &[0; 32], e1, &|| "t".into())
                .unwrap(),
            b"x"
        );
    }

    #[test]
    fn default_cipher_follows_aes_detection() {
        assert_eq!(Cipher::default_for(true), Cipher::Aes256Gcm);
        assert_eq!(Cipher::default_for(false), Cipher::Chacha20Poly1305);
        assert_eq!(
            Cipher::default_for_cpu(),
            Cipher::default_for(cpu_has_aes())
        );
        // 32-bit ARM has no hardware AES path in the `aes` crate.
        if cfg!(target_arch = "arm") {
            assert_eq!(Cipher::default_for_cpu(), Cipher::Chacha20Poly1305);
        }
    }

    #[test]
    fn downgrade_envelope_rejected() {
        let enc = sealer(Mode::Repokey, Some(Cipher::Aes256Gcm));
        let plain = Sealer::new(RepoKeys::unkeyed([0; 32])).unwrap();
        let env = plain.seal(ObjectType::Data, &[0; 32], b"evil").unwrap();
        assert!(
            enc.open(ObjectType::Data, &[0; 32], env, &|| "t".into())
                .is_err()
        );
    }
}
