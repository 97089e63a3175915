//! docs/FORMAT.md's constants table must match the code (one source of truth:
//! the code; the document is checked against it).

use std::collections::BTreeMap;
use strata::archive::item as it;
use strata::crypto::{self as c, ObjectType, keyfile};
use strata::repo::{config, index, manifest, pack, writer};

fn code_constants() -> BTreeMap<&'static str, String> {
    let s = |v: &dyn ToString| v.to_string();
    let b = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
    let (kdf_m, kdf_t, _) = keyfile::KdfParams::default_cost();
    let d = strata::chunker::ChunkerParams::default();
    BTreeMap::from([
        ("FORMAT_VERSION", s(&config::FORMAT_VERSION)),
        ("ENVELOPE_PLAIN", s(&c::ENVELOPE_PLAIN)),
        ("ENVELOPE_MAC", s(&c::ENVELOPE_MAC)),
        ("ENVELOPE_AES256GCM", s(&c::ENVELOPE_AES256GCM)),
        (
            "ENVELOPE_CHACHA20POLY1305",
            s(&c::ENVELOPE_CHACHA20POLY1305),
        ),
        ("SESSION_ID_LEN", s(&c::SESSION_ID_LEN)),
        ("COUNTER_LEN", s(&c::COUNTER_LEN)),
        ("TAG_LEN", s(&c::TAG_LEN)),
        ("CHECKSUM_LEN", s(&c::CHECKSUM_LEN)),
        ("MASTER_SECRET_LEN", s(&c::MASTER_SECRET_LEN)),
        ("COMPRESSION_NONE", s(&strata::compress::COMPRESSION_NONE)),
        ("COMPRESSION_LZ4", s(&strata::compress::COMPRESSION_LZ4)),
        ("COMPRESSION_ZSTD", s(&strata::compress::COMPRESSION_ZSTD)),
        ("COMPRESSION_XZ", s(&strata::compress::COMPRESSION_XZ)),
        ("COMPRESSION_ZLIB", s(&strata::compress::COMPRESSION_ZLIB)),
        ("MAX_DECOMPRESSED", s(&strata::compress::MAX_DECOMPRESSED)),
        ("PACK_MAGIC", b(pack::PACK_MAGIC)),
        ("PACK_TRAILER_LEN", s(&pack::PACK_TRAILER_LEN)),
        ("PACK_HEADER_ENTRY_LEN", s(&pack::PACK_HEADER_ENTRY_LEN)),
        ("INDEX_MAGIC", b(index::INDEX_MAGIC)),
        ("INDEX_ENTRY_LEN", s(&index::INDEX_ENTRY_LEN)),
        ("INDEX_EVERY_PACKS", s(&writer::INDEX_EVERY_PACKS)),
        ("DEFAULT_PACK_SIZE", s(&config::DEFAULT_PACK_SIZE)),
        ("MANIFEST_NAME_DIGITS", s(&manifest::MANIFEST_NAME_DIGITS)),
        ("MANIFEST_KEEP", s(&manifest::MANIFEST_KEEP)),
        ("CHUNKER_DEFAULT_MIN", s(&d.min)),
        ("CHUNKER_DEFAULT_AVG", s(&d.avg)),
        ("CHUNKER_DEFAULT_MAX", s(&d.max)),
        ("ITEMS_CHUNKER_MIN", s(&it::ITEMS_CHUNKER.min)),
        ("ITEMS_CHUNKER_AVG", s(&it::ITEMS_CHUNKER.avg)),
        ("ITEMS_CHUNKER_MAX", s(&it::ITEMS_CHUNKER.max)),
        ("KIND_FILE", s(&it::KIND_FILE)),
        ("KIND_DIR", s(&it::KIND_DIR)),
        ("KIND_SYMLINK", s(&it::KIND_SYMLINK)),
        ("KIND_FIFO", s(&it::KIND_FIFO)),
        ("KIND_CHARDEV", s(&it::KIND_CHARDEV)),
        ("KIND_BLOCKDEV", s(&it::KIND_BLOCKDEV)),
        ("OBJECT_DATA", s(&(ObjectType::Data as u8))),
        ("OBJECT_ITEMS", s(&(ObjectType::Items as u8))),
        ("OBJECT_ARCHIVE", s(&(ObjectType::Archive as u8))),
        ("OBJECT_PACK_HEADER", s(&(ObjectType::PackHeader as u8))),
        ("OBJECT_INDEX", s(&(ObjectType::Index as u8))),
        ("OBJECT_MANIFEST", s(&(ObjectType::Manifest as u8))),
        ("KDF_DEFAULT_MEMORY_KIB", s(&kdf_m)),
        ("KDF_DEFAULT_ITERATIONS", s(&kdf_t)),
        ("CONTEXT_ID_KEY", s(&c::CONTEXT_ID_KEY)),
        ("CONTEXT_MAC_KEY", s(&c::CONTEXT_MAC_KEY)),
        ("CONTEXT_ENC_KEY", s(&c::CONTEXT_ENC_KEY)),
        ("CONTEXT_CHUNKER_SEED", s(&c::CONTEXT_CHUNKER_SEED)),
        ("CONTEXT_SESSION_KEY", s(&c::CONTEXT_SESSION_KEY)),
        ("GEAR_XOF_LABEL", b(strata::chunker::GEAR_XOF_LABEL)),
        ("KEY_AAD_PREFIX", b(keyfile::KEY_AAD_PREFIX)),
        ("CONTEXT_META_ID_KEY", s(&c::CONTEXT_META_ID_KEY)),
        ("XZ_MEMLIMIT", s(&strata::compress::XZ_MEMLIMIT)),
        ("MAX_READ_RANGE", s(&strata::backend::MAX_READ_RANGE)),
        (
            "RACY_MARGIN_NS",
            s(&strata::archive::create::RACY_MARGIN_NS),
        ),
        (
            "RACY_MARGIN_COARSE_NS",
            s(&strata::archive::create::RACY_MARGIN_COARSE_NS),
        ),
    ])
}

fn spec_constants() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md")).unwrap();
    let table = text
        .split("## 15. Constants")
        .nth(1)
        .expect("constants section");
    table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect()
}

#[test]
fn protocol_md_limits_match_the_code() {
    use strata::backend::remote::proto as p;
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let table = text.split("## Limits").nth(1).expect("limits section");
    let doc: BTreeMap<String, String> = table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((name.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    let code = BTreeMap::from([
        ("PROTOCOL_MAGIC".to_string(), p::PROTOCOL_MAGIC.to_string()),
        (
            "PROTOCOL_VERSION".to_string(),
            p::PROTOCOL_VERSION.to_string(),
        ),
        ("MAX_FRAME".to_string(), p::MAX_FRAME.to_string()),
        (
            "MAX_REMOTE_PACK".to_string(),
            p::MAX_REMOTE_PACK.to_string(),
        ),
    ]);
    assert_eq!(doc, code);
}

#[test]
fn format_md_constants_match_the_code() {
    let code = code_constants();
    let spec = spec_constants();
    for (name, value) in &code {
        assert_eq!(
            spec.get(*name),
            Some(value),
            "docs/FORMAT.md constant {name}"
        );
    }
    for name in spec.keys() {
        assert!(
            code.contains_key(name.as_str()),
            "docs/FORMAT.md lists {name}, which the test does not check"
        );
    }
}
