//! Tile paths, entry bundles and log entries from arbitrary bytes: no panics,
//! and whatever parses encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealpod_tlog::tile::{encode_entry_bundle, parse_entry_bundle};
use sealpod_tlog::{LogEntry, TileId};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = TileId::parse(s) {
            assert_eq!(t.path(), s);
        }
    }
    if let Ok(entries) = parse_entry_bundle(data) {
        assert_eq!(encode_entry_bundle(&entries).unwrap(), data);
    }
    if let Ok(e) = LogEntry::decode(data) {
        assert_eq!(e.encode().unwrap(), data);
    }
});
