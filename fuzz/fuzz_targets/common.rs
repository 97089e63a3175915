//! Helpers shared by the targets (included with `#[path]`).
#![allow(dead_code)]

use std::sync::OnceLock;
use strata::crypto::{Cipher, Mode, RepoKeys, Sealer};

/// Sealers of every envelope type: plain checksum, keyed MAC, AES-GCM,
/// ChaCha20-Poly1305. Index 0 (`none`) is the one a fuzzer can get past,
/// since its checksum is unkeyed and the target recomputes it.
pub fn sealers() -> &'static [Sealer; 4] {
    static S: OnceLock<[Sealer; 4]> = OnceLock::new();
    S.get_or_init(|| {
        let keyed = |mode, cipher| {
            Sealer::new(RepoKeys::from_master(mode, cipher, &[7u8; 64])).expect("sealer")
        };
        [
            Sealer::new(RepoKeys::unkeyed([0; 32])).expect("sealer"),
            keyed(Mode::Authenticated, None),
            keyed(Mode::Repokey, Some(Cipher::Aes256Gcm)),
            keyed(Mode::Keyfile, Some(Cipher::Chacha20Poly1305)),
        ]
    })
}

pub fn plain() -> &'static Sealer {
    &sealers()[0]
}
