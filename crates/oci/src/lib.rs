//! sealpod-oci
