//! A local development chain: anvil (npm `@foundry-rs/anvil`, pinned in the
//! repository's package-lock.json), started on a free port and stopped on drop.
//! Used by the tests, the benchmarks and `sealpod demo`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;

use crate::MarketError;

/// anvil's deterministic development keys (mnemonic "test test … junk"), each
/// funded with 10 000 ETH on a fresh anvil. Public knowledge: dev chains only.
pub const DEV_KEYS: [&str; 4] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
];

pub fn dev_key(i: usize) -> PrivateKeySigner {
    crate::keys::parse(DEV_KEYS[i]).expect("a valid constant")
}

/// A running anvil.
pub struct Anvil {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Anvil {
    /// Where anvil is: `$SEALPOD_ANVIL`, the binary npm installed in this
    /// directory or the repository, or `anvil` on the PATH. The binary, not
    /// `node_modules/.bin/anvil`: that is a node wrapper whose child outlives it.
    pub fn find() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("SEALPOD_ANVIL") {
            return Some(PathBuf::from(p));
        }
        const BIN: &str = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";
        let mut candidates = vec![PathBuf::from(BIN)];
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(BIN));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("anvil")));
        }
        candidates.into_iter().find(|p| p.is_file())
    }

    /// Starts anvil on a free loopback port with chain id 31337 and waits
    /// until it answers.
    pub fn spawn() -> Result<Anvil, MarketError> {
        let exe = Anvil::find().ok_or_else(|| {
            MarketError::Chain("anvil not found: run `npm ci` in the repository (or set SEALPOD_ANVIL)".into())
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&exe)
            // Its own process group, so that a wrapper's children go with it.
            .process_group(0)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--chain-id", "31337", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| MarketError::Chain(format!("start {}: {e}", exe.display())))?;
        let mut anvil = Anvil { child, url: format!("http://127.0.0.1:{port}"), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(anvil);
            }
            if let Ok(Some(status)) = anvil.child.try_wait() {
                return Err(MarketError::Chain(format!("anvil exited at start: {status}")));
            }
            if Instant::now() > deadline {
                return Err(MarketError::Chain("anvil did not listen within 30 s".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
