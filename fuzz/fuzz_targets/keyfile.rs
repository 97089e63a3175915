//! Key files (docs/FORMAT.md, "Key file"): JSON, KDF parameters, sealed
//! master secret. A repokey's key file comes from the (untrusted) store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::crypto::keyfile::KeyFile;

fuzz_target!(|data: &[u8]| {
    let Ok(kf) = KeyFile::from_json(data, "fuzz") else {
        return;
    };
    // Unlocking runs Argon2 with the file's parameters: the library bounds
    // them (KDF_MAX_MEMORY_KIB); the fuzzer only runs the cheap ones, the
    // bound itself is tested by asking for more.
    if kf.kdf.memory_kib <= 64 && kf.kdf.iterations <= 2 {
        if let Ok(p) = kf.unlock(b"fuzz", "fuzz") {
            let _ = p.master_bytes();
        }
    } else if kf.kdf.memory_kib > strata::crypto::keyfile::KDF_MAX_MEMORY_KIB
        || kf.kdf.iterations > strata::crypto::keyfile::KDF_MAX_ITERATIONS
    {
        assert!(kf.unlock(b"fuzz", "fuzz").is_err());
    }
});
