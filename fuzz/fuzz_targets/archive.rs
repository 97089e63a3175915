//! Archive objects (the blob a manifest entry points to), after opening.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::archive::Archive;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Archive::decode(data, "fuzz") {
        let again = Archive::decode(&a.encode().expect("encode"), "fuzz").expect("decode");
        assert_eq!(again, a);
        let _ = strata::archive::validate_name(&a.name);
    }
});
