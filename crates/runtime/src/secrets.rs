//! Secret volumes: bytes the publisher sent over an attested connection,
//! handed to the pod's shim through a pipe and kept only on a tmpfs.
//!
//! The provider never writes them: not into `spec.json` (which names only
//! the file), not into its database, not into a log. The shim reads them
//! from its standard input, mounts one read-only tmpfs per pod outside the
//! provider's state directory (`/run/sealpod/secrets/<pod>`), writes each
//! file, remounts it read-only and zeroizes its copy. The tmpfs lives as
//! long as the pod: a provider restart leaves it mounted, and teardown
//! unmounts it. The tmpfs is mounted `noswap` where the kernel allows it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::RuntimeError;

/// Where secret tmpfs mounts live: memory, outside any state directory.
pub const SECRETS_ROOT: &str = "/run/sealpod/secrets";

/// Most bytes of secrets one pod may carry (all volumes together).
pub const MAX_SECRET_BYTES: usize = 8 << 20;

/// One secret volume's contents, zeroized when dropped (each copy: a pod
/// running several copies hands each its own).
#[derive(Clone)]
pub struct Secret {
    /// The volume's name.
    pub volume: String,
    /// The bytes.
    pub contents: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({}, {} bytes)", self.volume, self.contents.len())
    }
}

/// The directory of a pod's secret tmpfs.
pub fn pod_secrets_dir(pod_id: &str) -> PathBuf {
    Path::new(SECRETS_ROOT).join(pod_id)
}

/// Where one secret volume's file is, on the host. `token` is the pod's
/// [`crate::PodSpec::secrets_token`] (empty for pods from before it).
pub fn secret_file(pod_id: &str, token: &str, volume: &str, file_name: &str) -> PathBuf {
    pod_secrets_dir(pod_id).join(token).join(volume).join(file_name)
}

/// The secrets a running pod holds, read back from its tmpfs: what an
/// update keeps in memory to start the pod again as it was, should the new
/// spec fail to start.
pub fn read_back(spec: &crate::PodSpec) -> std::io::Result<Vec<Secret>> {
    spec.volumes
        .iter()
        .filter_map(|v| match &v.kind {
            crate::VolumeKind::Secret { file_name } => Some((v, file_name)),
            _ => None,
        })
        .map(|(v, file_name)| {
            let path = secret_file(&spec.pod_id, &spec.secrets_token, &v.name, file_name);
            Ok(Secret { volume: v.name.clone(), contents: Zeroizing::new(std::fs::read(path)?) })
        })
        .collect()
}

/// Writes secrets to the shim's pipe: a count, then for each a name and its
/// bytes, every length a little-endian u32.
pub(crate) fn send(mut to: impl Write, secrets: &[Secret]) -> std::io::Result<()> {
    to.write_all(&(secrets.len() as u32).to_le_bytes())?;
    for s in secrets {
        to.write_all(&(s.volume.len() as u32).to_le_bytes())?;
        to.write_all(s.volume.as_bytes())?;
        to.write_all(&(s.contents.len() as u32).to_le_bytes())?;
        to.write_all(&s.contents)?;
    }
    to.flush()
}

/// Reads what [`send`] wrote, bounded by [`MAX_SECRET_BYTES`].
pub(crate) fn receive(from: impl Read) -> Result<Vec<Secret>, RuntimeError> {
    let bad = |m: &str| RuntimeError::Setup(format!("secrets from the provider: {m}"));
    let mut buf = Zeroizing::new(Vec::new());
    from.take(MAX_SECRET_BYTES as u64 + 64 * 1024 + 1).read_to_end(&mut buf)?;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], RuntimeError> {
        let s =
            buf.get(at..at.checked_add(n).ok_or_else(|| bad("length overflow"))?).ok_or_else(|| bad("truncated"))?;
        at += n;
        Ok(s)
    };
    let u32_at = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(take(4)?);
    if count > 256 {
        return Err(bad("more than 256 secret volumes"));
    }
    let mut out = Vec::with_capacity(count);
    let mut total = 0usize;
    for _ in 0..count {
        let n = u32_at(take(4)?);
        let name = String::from_utf8(take(n.min(256))?.to_vec()).map_err(|_| bad("volume name is not UTF-8"))?;
        let len = u32_at(take(4)?);
        total = total.saturating_add(len);
        if total > MAX_SECRET_BYTES {
            return Err(bad("more secret bytes than allowed"));
        }
        out.push(Secret { volume: name, contents: Zeroizing::new(take(len)?.to_vec()) });
    }
    Ok(out)
}

/// Mounts the pod's secret tmpfs and writes each secret volume's file into
/// it; the tmpfs ends up read-only.
///
/// The container's processes open the file to bind it in after joining the
/// pod's user namespace, as host ids with no special rights, so every
/// directory on the way may be traversed by anyone; none may be listed, and
/// the directory under the tmpfs is named by the pod's random token, which
/// only root can read (in the pod's spec): no other host user finds the file.
pub(crate) fn mount_pod_secrets(
    pod_id: &str,
    token: &str,
    volumes: &[(String, String)],
    secrets: &[Secret],
) -> Result<(), RuntimeError> {
    use nix::mount::{mount, MsFlags};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if volumes.is_empty() {
        return Ok(());
    }
    let dir = pod_secrets_dir(pod_id);
    std::fs::DirBuilder::new().recursive(true).mode(0o711).create(&dir)?;
    for d in [Path::new(SECRETS_ROOT), Path::new(SECRETS_ROOT).parent().unwrap_or(Path::new("/run"))] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
    }
    let total: usize = secrets.iter().map(|s| s.contents.len()).sum();
    let size = (total + volumes.len() * 4096 + 64 * 1024).next_multiple_of(4096);
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let setup = |what: &str, e: nix::Error| RuntimeError::Setup(format!("{what} {}: {e}", dir.display()));
    // `noswap` (Linux 6.4+) keeps the pages out of swap, which may be a disk.
    let options = format!("size={size},mode=0711");
    match mount(Some("sealpod-secrets"), &dir, Some("tmpfs"), flags, Some(format!("{options},noswap").as_str())) {
        Ok(()) => {}
        Err(nix::Error::EINVAL) => {
            tracing::warn!(pod = pod_id, "this kernel's tmpfs has no noswap: secrets may be swapped out");
            mount(Some("sealpod-secrets"), &dir, Some("tmpfs"), flags, Some(options.as_str()))
                .map_err(|e| setup("mount tmpfs on", e))?;
        }
        Err(e) => return Err(setup("mount tmpfs on", e)),
    }
    let base = dir.join(token);
    if !token.is_empty() {
        std::fs::DirBuilder::new().mode(0o711).create(&base)?;
    }
    for (volume, file_name) in volumes {
        let secret = secrets
            .iter()
            .find(|s| &s.volume == volume)
            .ok_or_else(|| RuntimeError::Setup(format!("no contents arrived for secret volume {volume:?}")))?;
        let vdir = base.join(volume);
        std::fs::DirBuilder::new().mode(0o711).create(&vdir)?;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o444).open(vdir.join(file_name))?;
        f.write_all(&secret.contents)?;
    }
    mount(None::<&str>, &dir, None::<&str>, flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, None::<&str>)
        .map_err(|e| setup("remount read-only", e))?;
    Ok(())
}

/// Unmounts and removes the pod's secret tmpfs, if any.
pub(crate) fn unmount_pod_secrets(pod_id: &str, problems: &mut Vec<String>) {
    let dir = pod_secrets_dir(pod_id);
    if !dir.exists() {
        return;
    }
    if crate::shim::is_mount_point(&dir) {
        if let Err(e) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH) {
            problems.push(format!("unmount {}: {e}", dir.display()));
            return;
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        problems.push(format!("remove {}: {e}", dir.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_cross_the_pipe_intact() {
        let secrets = vec![
            Secret { volume: "token".into(), contents: Zeroizing::new(b"s3cr3t".to_vec()) },
            Secret { volume: "empty".into(), contents: Zeroizing::new(Vec::new()) },
        ];
        let mut wire = Vec::new();
        send(&mut wire, &secrets).unwrap();
        let back = receive(&wire[..]).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].volume, "token");
        assert_eq!(&back[0].contents[..], b"s3cr3t");
        assert!(back[1].contents.is_empty());
    }

    #[test]
    fn truncated_or_oversized_secret_frames_are_refused() {
        let secrets = vec![Secret { volume: "t".into(), contents: Zeroizing::new(vec![1; 100]) }];
        let mut wire = Vec::new();
        send(&mut wire, &secrets).unwrap();
        assert!(receive(&wire[..wire.len() - 1]).is_err());
        let mut huge = 1u32.to_le_bytes().to_vec();
        huge.extend(1u32.to_le_bytes());
        huge.push(b'x');
        huge.extend(u32::MAX.to_le_bytes());
        assert!(receive(&huge[..]).is_err());
        assert!(receive(&[][..]).unwrap().is_empty());
    }
}
