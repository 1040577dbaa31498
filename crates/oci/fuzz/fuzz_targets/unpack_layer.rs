//! Arbitrary bytes as a layer tar: must never panic, and must never create
//! anything beside the destination directory.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let jail = tempfile::tempdir().expect("temporary directory");
    let dest = jail.path().join("rootfs");
    std::fs::create_dir(&dest).expect("destination");
    let _ = sealpod_oci::apply_layer(data, &dest);
    let beside: Vec<_> = std::fs::read_dir(jail.path())
        .expect("listing the jail")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|name| name != "rootfs")
        .collect();
    assert!(
        beside.is_empty(),
        "layer wrote outside its destination: {beside:?}"
    );
});
