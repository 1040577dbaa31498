//! Disk limits that hold: a pod's writable layers and volumes live on a
//! filesystem of their own, so filling it fills nothing else.
//!
//! The pod's disk is a sparse file in the pod directory holding an ext4
//! filesystem the size of the pod's `ephemeral-storage`, loop-mounted at
//! `disk/`. Every container's overlay upper and work directories and every
//! emptyDir volume sit on it; an emptyDir with a `sizeLimit` gets a filesystem
//! of that size of its own, itself a file on the pod's disk, so it counts
//! towards the pod's total as Kubernetes counts it. A full disk is ENOSPC
//! inside the pod and nothing outside it.
//!
//! Why not quotas on the host's filesystem: project quotas need XFS or an
//! ext4 formatted and mounted for them, which a provider's root filesystem
//! seldom is; a loop-mounted file works on any filesystem that holds sparse
//! files, and costs one `mkfs.ext4` and one mount per pod (measured in
//! `docs/benchmarks.md`). Both tools are e2fsprogs' and util-linux's, on every
//! Debian system.

use std::path::Path;
use std::process::Command;

use crate::RuntimeError;

/// The smallest filesystem made: ext4 needs some room for its own metadata.
pub const MIN_BYTES: u64 = 8 << 20;

/// Creates a sparse `image` of `bytes` holding an empty ext4 filesystem
/// whose root belongs to `owner` (host ids), and mounts it at `target`
/// (nosuid, nodev). The loop device goes away when it is unmounted.
pub fn mount_limited(image: &Path, target: &Path, bytes: u64, owner: (u32, u32)) -> Result<(), RuntimeError> {
    let bytes = bytes.max(MIN_BYTES);
    std::fs::create_dir_all(target)?;
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(image)?;
    file.set_len(bytes)?;
    drop(file);
    // No journal (the data dies with the pod), no reserved blocks, lazy
    // inode tables: formatting writes well under a megabyte.
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-m", "0", "-E"])
        .arg(format!("lazy_itable_init=1,nodiscard,root_owner={}:{}", owner.0, owner.1))
        .arg(image))?;
    run(Command::new("mount").args(["-o", "loop,nosuid,nodev"]).arg(image).arg(target))
}

/// Mounts the filesystem in `image` at `target`, making it first (as
/// [`mount_limited`] does) only when `image` does not exist yet: a
/// persistent volume keeps its data across every mount of the pod's life.
pub fn mount_persistent(image: &Path, target: &Path, bytes: u64, owner: (u32, u32)) -> Result<(), RuntimeError> {
    if image.exists() {
        std::fs::create_dir_all(target)?;
        return run(Command::new("mount").args(["-o", "loop,nosuid,nodev"]).arg(image).arg(target));
    }
    if let Some(dir) = image.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    // Made under another name and renamed once whole, so that a crash while
    // formatting leaves no half-made volume to be mounted later.
    let making = image.with_extension("making");
    mount_limited(&making, target, bytes, owner)?;
    std::fs::rename(&making, image)?;
    Ok(())
}

fn run(cmd: &mut Command) -> Result<(), RuntimeError> {
    let what = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| RuntimeError::Setup(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Setup(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_stop_at_the_limit_with_enospc() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk");
        mount_limited(&dir.path().join("disk.img"), &target, 16 << 20, (0, 0)).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let mut written = 0u64;
        let err = {
            use std::io::Write;
            let mut f = std::fs::File::create(target.join("big")).unwrap();
            loop {
                match f.write_all(&chunk) {
                    Ok(()) => written += chunk.len() as u64,
                    Err(e) => break e,
                }
            }
        };
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert!((8 << 20..=16 << 20).contains(&written), "wrote {written}");
        // The image is sparse: the host spent what was written, not the limit.
        let on_disk = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(dir.path().join("disk.img")).unwrap());
        assert!(on_disk * 512 <= (16 << 20) + (1 << 20));
    }

    #[test]
    fn a_persistent_volume_keeps_its_data_from_one_mount_to_the_next() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (image, target) = (dir.path().join("persistent/data.img"), dir.path().join("data"));
        mount_persistent(&image, &target, 16 << 20, (0, 0)).unwrap();
        std::fs::write(target.join("kept"), b"still here").unwrap();
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
        mount_persistent(&image, &target, 16 << 20, (0, 0)).unwrap();
        let kept = std::fs::read(target.join("kept"));
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(kept.unwrap(), b"still here");
        assert!(!dir.path().join("persistent/data.making").exists());
    }
}
