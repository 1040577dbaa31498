//! User namespaces: each pod's containers run as an unprivileged range of host
//! ids of its own, so a container's root has no power over the host or over
//! another pod.
//!
//! A pod gets [`ID_RANGE_SIZE`] host ids starting at a base no other pod on
//! the host holds; a host-wide claim file under [`CLAIMS_DIR`] keeps two
//! providers on one machine from handing out the same range. The shim
//! creates the pod's user namespace with that mapping and the pod's network
//! namespace inside it (so the containers, which join both, may mount sysfs
//! and own their network), and every container joins them by path.
//!
//! The image's files are shown to the pod through an id-mapped mount of the
//! unpacked image (host uid 0 appears as the pod's base id): no per-pod copy
//! and no chown of the image, which stays shared, read-only, between pods.
//! `docs/isolation.md` has the measurement behind that choice.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::netns::NetNs;

/// Host ids each pod gets: uid and gid 0..65535 inside.
pub const ID_RANGE_SIZE: u32 = 65536;

/// The first host id handed to pods; ids below stay the host's own (system
/// users, people, and the /etc/subuid ranges tools hand out from 100000).
pub const FIRST_HOST_ID: u32 = 1 << 24;

/// Ranges available: 4096 pods on one host, ending below 2^29.
pub const MAX_RANGES: u32 = 4096;

/// Where ranges are claimed, host-wide (a tmpfs: pods do not outlive a boot).
pub const CLAIMS_DIR: &str = "/run/sealpod/idmap";

/// A pod's share of host ids: container id `n` is host id `host_base + n`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdRange {
    /// Host id of the pod's root.
    pub host_base: u32,
    /// How many ids are mapped.
    pub size: u32,
}

impl IdRange {
    /// The host id of container id `id`, if mapped.
    pub fn host_id(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.host_base + id)
    }

    fn slot(&self) -> u32 {
        (self.host_base - FIRST_HOST_ID) / ID_RANGE_SIZE
    }
}

/// Claims a free range for the pod in `pod_dir`. A claim whose pod directory
/// is gone (a provider whose state was wiped without deleting its pods) is
/// taken back.
pub fn claim(pod_dir: &Path) -> io::Result<IdRange> {
    claim_in(Path::new(CLAIMS_DIR), pod_dir)
}

fn claim_in(claims: &Path, pod_dir: &Path) -> io::Result<IdRange> {
    std::fs::create_dir_all(claims)?;
    std::fs::set_permissions(claims, std::fs::Permissions::from_mode(0o700))?;
    for slot in 0..MAX_RANGES {
        let file = claims.join(slot.to_string());
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&file) {
                Ok(mut f) => {
                    f.write_all(pod_dir.as_os_str().as_bytes())?;
                    return Ok(IdRange { host_base: FIRST_HOST_ID + slot * ID_RANGE_SIZE, size: ID_RANGE_SIZE });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read(&file).map(|b| PathBuf::from(std::ffi::OsStr::from_bytes(&b)));
                    match holder {
                        // Stale: its pod is gone. Take it back and try again.
                        Ok(dir) if !dir.as_os_str().is_empty() && !dir.exists() => {
                            let _ = std::fs::remove_file(&file);
                        }
                        _ => break,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    Err(io::Error::other(format!("all {MAX_RANGES} host id ranges are in use")))
}

/// Gives the range back when the pod in `pod_dir` that claimed it is deleted
/// (and not if the claim has meanwhile passed to another pod).
pub fn release(range: &IdRange, pod_dir: &Path) {
    let file = Path::new(CLAIMS_DIR).join(range.slot().to_string());
    if std::fs::read(&file).is_ok_and(|holder| holder == pod_dir.as_os_str().as_bytes()) {
        let _ = std::fs::remove_file(file);
    }
}

/// A pod's user namespace and its network namespace, held open by the shim.
pub struct PodNamespaces {
    /// The user namespace.
    pub user: File,
    /// The network namespace, owned by `user`.
    pub net: NetNs,
}

impl PodNamespaces {
    /// Creates a user namespace mapping `range` and a network namespace owned
    /// by it with its loopback up.
    ///
    /// A namespace's owner is the user namespace of its creator, and only a
    /// single-threaded process may enter a new user namespace, so a forked
    /// child creates both while this process writes its id maps. The child
    /// runs nothing but raw system calls before `_exit`.
    pub fn create(range: &IdRange) -> io::Result<PodNamespaces> {
        let (from_child, child_w) = nix::unistd::pipe().map_err(io::Error::from)?;
        let (child_r, to_child) = nix::unistd::pipe().map_err(io::Error::from)?;
        // SAFETY: the child runs only async-signal-safe system calls (unshare,
        // read, write, socket, ioctl, close) and leaves with _exit.
        match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
            nix::unistd::ForkResult::Child => {
                drop(from_child);
                drop(to_child);
                let code = child_steps(child_w.as_raw_fd(), child_r.as_raw_fd());
                // SAFETY: leaving the forked child without running destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(child_w);
                drop(child_r);
                let result = parent_steps(child.as_raw(), range, File::from(from_child), File::from(to_child));
                if result.is_err() {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = nix::sys::wait::waitpid(child, None);
                result
            }
        }
    }

    /// A path through which the OCI runtime joins the user namespace while
    /// this process holds it.
    pub fn user_path(&self) -> PathBuf {
        format!("/proc/{}/fd/{}", std::process::id(), self.user.as_raw_fd()).into()
    }
}

fn parent_steps(pid: i32, range: &IdRange, mut from_child: File, mut to_child: File) -> io::Result<PodNamespaces> {
    let mut byte = [0u8; 1];
    let step = |f: &mut File, b: &mut [u8; 1], what: &str| -> io::Result<()> {
        match f.read(b)? {
            1 if b[0] == b'+' => Ok(()),
            _ => Err(io::Error::other(format!("creating the pod's namespaces failed at {what}"))),
        }
    };
    step(&mut from_child, &mut byte, "the user namespace")?;
    let map = format!("0 {} {}\n", range.host_base, range.size);
    std::fs::write(format!("/proc/{pid}/uid_map"), &map)?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map)?;
    to_child.write_all(b"+")?;
    step(&mut from_child, &mut byte, "the network namespace")?;
    let user = File::open(format!("/proc/{pid}/ns/user"))?;
    let net = File::open(format!("/proc/{pid}/ns/net"))?;
    to_child.write_all(b"+")?;
    Ok(PodNamespaces { user, net: NetNs::from_file(net) })
}

/// In the forked child: new user namespace, wait for the maps, new network
/// namespace with loopback up, wait until the parent holds both.
fn child_steps(w: i32, r: i32) -> i32 {
    let say = |ok: bool| {
        let b: &[u8] = if ok { b"+" } else { b"-" };
        // SAFETY: writing one byte from a live buffer to our pipe.
        unsafe { libc::write(w, b.as_ptr().cast(), 1) };
    };
    let wait = || {
        let mut b = 0u8;
        // SAFETY: reading one byte into a live local.
        unsafe { libc::read(r, (&mut b as *mut u8).cast(), 1) == 1 && b == b'+' }
    };
    // SAFETY: plain system calls on this process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        say(false);
        return 1;
    }
    say(true);
    if !wait() {
        return 2;
    }
    // SAFETY: as above.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 || crate::netns::loopback_up().is_err() {
        say(false);
        return 3;
    }
    say(true);
    if !wait() {
        return 4;
    }
    0
}

/// Where a pod's network namespace is pinned for its containers to join.
pub const PINNED_NS_DIR: &str = "/run/sealpod/ns";

/// The pinned network namespace of pod `pod_id`.
pub fn pinned_netns_path(pod_id: &str) -> PathBuf {
    Path::new(PINNED_NS_DIR).join(format!("{pod_id}.net"))
}

/// Bind-mounts the pod's network namespace onto a file any id can open.
///
/// A container joins its user namespace first and opens the other namespace
/// paths as the pod's root, a host id with no access to the shim's
/// `/proc/PID/fd`; an nsfs file mounted under a world-traversable directory
/// it can open (and it may enter: the namespace is its own).
pub fn pin_netns(pod_id: &str, net: &NetNs) -> io::Result<PathBuf> {
    std::fs::create_dir_all(PINNED_NS_DIR)?;
    std::fs::set_permissions(PINNED_NS_DIR, std::fs::Permissions::from_mode(0o711))?;
    let target = pinned_netns_path(pod_id);
    if crate::shim::is_mount_point(&target) {
        return Ok(target);
    }
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o444).open(&target)?;
    nix::mount::mount(Some(&net.path()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| io::Error::other(format!("pinning the pod's network namespace: {e}")))?;
    Ok(target)
}

/// Undoes [`pin_netns`], if it was done.
pub fn unpin_netns(pod_id: &str, problems: &mut Vec<String>) {
    let target = pinned_netns_path(pod_id);
    if crate::shim::is_mount_point(&target) {
        if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            problems.push(format!("unmount {}: {e}", target.display()));
            return;
        }
    }
    let _ = std::fs::remove_file(target);
}

/// Where a pod's directory is shown to its own containers.
pub const VISIBLE_PODS_DIR: &str = "/run/sealpod/pods";

/// The path through which pod `pod_id`'s containers reach its directory.
pub fn visible_pod_dir(pod_id: &str) -> PathBuf {
    Path::new(VISIBLE_PODS_DIR).join(pod_id)
}

/// Bind-mounts the pod directory, with everything mounted under it, where
/// the pod's own ids can reach it.
///
/// A container resolves its root filesystem, `/etc/hosts` and volume
/// sources after joining the pod's user namespace; under a state directory
/// in a private parent (`/root`, a `0700` temporary directory) it could not.
/// Every directory on the way here may be traversed but not listed.
pub fn expose_pod_dir(pod_id: &str, pod_dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(VISIBLE_PODS_DIR)?;
    for d in [Path::new(VISIBLE_PODS_DIR), Path::new("/run/sealpod")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
    }
    let target = visible_pod_dir(pod_id);
    if crate::shim::is_mount_point(&target) {
        return Ok(target);
    }
    std::fs::create_dir_all(&target)?;
    use nix::mount::MsFlags;
    nix::mount::mount(Some(pod_dir), &target, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| io::Error::other(format!("showing the pod directory to the pod: {e}")))?;
    Ok(target)
}

/// Undoes [`expose_pod_dir`], if it was done.
pub fn hide_pod_dir(pod_id: &str, problems: &mut Vec<String>) {
    let target = visible_pod_dir(pod_id);
    if crate::shim::is_mount_point(&target) {
        if let Err(e) = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            problems.push(format!("unmount {}: {e}", target.display()));
            return;
        }
    }
    let _ = std::fs::remove_dir(target);
}

// The mount API calls and constants (linux/mount.h), which the libc crate
// does not wrap.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Mounts `source` at `target` with its ids shifted by `userns`'s mapping:
/// a file owned by host uid 0 shows as the namespace's root.
pub fn idmapped_bind(source: &Path, target: &Path, userns: &File) -> io::Result<()> {
    let src = CString::new(source.as_os_str().as_bytes())?;
    let dst = CString::new(target.as_os_str().as_bytes())?;
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(e.kind(), format!("id-mapped mount of {} ({what}): {e}", source.display()))
    };
    // SAFETY: open_tree with a NUL-terminated path; the returned descriptor
    // is owned below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
        )
    };
    if tree < 0 {
        return Err(fail("open_tree"));
    }
    // SAFETY: open_tree returned a new descriptor nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr =
        MountAttr { attr_set: MOUNT_ATTR_IDMAP, attr_clr: 0, propagation: 0, userns_fd: userns.as_raw_fd() as u64 };
    // SAFETY: mount_setattr on our detached tree with a live, correctly sized
    // mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(fail("mount_setattr: the kernel or the image's filesystem cannot id-map"));
    }
    // SAFETY: move_mount of our detached tree onto a NUL-terminated path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(fail("move_mount"));
    }
    Ok(())
}

/// Gives `path` the owner `range` maps container ids `uid:gid` to, so the
/// pod's root owns its own writable directories.
pub fn chown_into(path: &Path, range: &IdRange, uid: u32, gid: u32) -> io::Result<()> {
    let (Some(u), Some(g)) = (range.host_id(uid), range.host_id(gid)) else {
        return Err(io::Error::other(format!("ids {uid}:{gid} are outside the pod's range")));
    };
    std::os::unix::fs::chown(path, Some(u), Some(g))
}

/// Makes `upper` (an overlay's writable layer) look like the image's root
/// directory to the pod: same mode, owner shifted into `range`.
pub fn match_image_root(upper: &Path, image_root: &Path, range: &IdRange) -> io::Result<()> {
    let meta = std::fs::metadata(image_root)?;
    chown_into(upper, range, meta.uid().min(range.size - 1), meta.gid().min(range.size - 1))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_claimed_once_and_stale_claims_are_taken_back() {
        let claims = tempfile::tempdir().unwrap();
        let pods = tempfile::tempdir().unwrap();
        let a = pods.path().join("a");
        let b = pods.path().join("b");
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
        }
        let ra = claim_in(claims.path(), &a).unwrap();
        let rb = claim_in(claims.path(), &b).unwrap();
        assert_eq!(ra.host_base, FIRST_HOST_ID);
        assert_eq!(rb.host_base, FIRST_HOST_ID + ID_RANGE_SIZE);
        // a's pod directory disappears without a delete: its range is reused.
        std::fs::remove_dir_all(&a).unwrap();
        let c = pods.path().join("c");
        std::fs::create_dir_all(&c).unwrap();
        assert_eq!(claim_in(claims.path(), &c).unwrap(), ra);
    }

    #[test]
    fn host_ids_stay_inside_the_range() {
        let r = IdRange { host_base: FIRST_HOST_ID, size: ID_RANGE_SIZE };
        assert_eq!(r.host_id(0), Some(FIRST_HOST_ID));
        assert_eq!(r.host_id(65535), Some(FIRST_HOST_ID + 65535));
        assert_eq!(r.host_id(65536), None);
        assert!(FIRST_HOST_ID as u64 + MAX_RANGES as u64 * ID_RANGE_SIZE as u64 <= 1 << 29);
    }
}
