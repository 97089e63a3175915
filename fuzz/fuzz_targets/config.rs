//! The repository config file (JSON), the first thing read from a store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::config::RepoConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = RepoConfig::parse(data, "fuzz") {
        let _ = c.public_seed();
        let again = RepoConfig::parse(&c.to_json(), "fuzz").expect("own config parses");
        assert_eq!(again.id, c.id);
    }
});
