//! sealpod-provider
