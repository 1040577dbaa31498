//! secp256k1 chain keys on disk: the publisher's (signs vouchers and opens
//! channels) and the provider's (sends claims). Hex, one line, mode 0600.

use std::io::Write;
use std::path::Path;

pub use alloy::signers::local::PrivateKeySigner;
use zeroize::Zeroizing;

use crate::MarketError;

/// Reads a key file (hex, optional `0x`), or parses `hex` given directly.
pub fn load(path: &Path) -> Result<PrivateKeySigner, MarketError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| MarketError::Bad { what: "chain key", detail: format!("{}: {e}", path.display()) })?,
    );
    parse(text.trim()).map_err(|e| MarketError::Bad { what: "chain key", detail: format!("{}: {e}", path.display()) })
}

/// A private key in hex (64 digits, optional `0x`).
pub fn parse(hex_key: &str) -> Result<PrivateKeySigner, MarketError> {
    let t = hex_key.trim().trim_start_matches("0x");
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MarketError::Bad { what: "chain key", detail: "expected 64 hex digits".into() });
    }
    let bytes =
        Zeroizing::new(hex::decode(t).map_err(|e| MarketError::Bad { what: "chain key", detail: e.to_string() })?);
    PrivateKeySigner::from_slice(&bytes).map_err(|e| MarketError::Bad { what: "chain key", detail: e.to_string() })
}

/// Loads the key at `path`, creating a fresh one (mode 0600) if there is none.
pub fn load_or_create(path: &Path) -> Result<PrivateKeySigner, MarketError> {
    if path.exists() {
        return load(path);
    }
    let signer = PrivateKeySigner::random();
    let text = Zeroizing::new(format!("0x{}\n", hex::encode(signer.to_bytes())));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?
    };
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.address(), b.address());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn anvils_first_dev_key_has_its_known_address() {
        let k = parse("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").unwrap();
        assert_eq!(k.address().to_string(), "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266");
        assert!(parse("12").is_err());
        assert!(parse(&"g".repeat(64)).is_err());
    }
}
