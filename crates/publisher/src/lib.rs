//! sealpod-publisher
