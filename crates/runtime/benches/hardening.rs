//! What each hardening step costs a pod start, next to what it replaces, in
//! one run (needs root: namespaces and mounts). Prints a Markdown table.
//!
//! `sudo cargo bench -p sealpod-runtime --bench hardening [-- IMAGE_ROOTFS]`
//!
//! - network namespace alone (before) vs user + network namespace (after);
//! - the image shown through an id-mapped mount vs a chown'd copy of it per
//!   pod (the alternative the id-mapped mount was chosen over);
//! - compiling and installing the seccomp filter;
//! - the pod's own disk: a sparse file, `mkfs.ext4` and a loop mount.

use std::process::Command;
use std::time::{Duration, Instant};

use sealpod_runtime::netns::NetNs;
use sealpod_runtime::seccomp::Profile;
use sealpod_runtime::userns::{idmapped_bind, IdRange, PodNamespaces, FIRST_HOST_ID, ID_RANGE_SIZE};

const RUNS: usize = 20;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn time(mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The image: given, or a stand-in made of this machine's /usr/bin.
    let image = std::env::args().nth(1).filter(|a| !a.starts_with('-')).map(Into::into).unwrap_or_else(|| {
        let img = tmp.path().join("image");
        std::fs::create_dir_all(&img).unwrap();
        let ok = Command::new("cp").args(["-a", "/usr/bin"]).arg(img.join("bin")).status().unwrap();
        assert!(ok.success());
        img
    });
    let size = String::from_utf8(Command::new("du").args(["-sh"]).arg(&image).output().unwrap().stdout).unwrap();
    let range = IdRange { host_base: FIRST_HOST_ID + 4000 * ID_RANGE_SIZE, size: ID_RANGE_SIZE };

    let netns = time(|| drop(NetNs::create().unwrap()));
    let userns = time(|| drop(PodNamespaces::create(&range).unwrap()));
    let ns = PodNamespaces::create(&range).unwrap();
    let target = tmp.path().join("lower");
    std::fs::create_dir_all(&target).unwrap();
    let idmap = time(|| {
        idmapped_bind(&image, &target, &ns.user).unwrap();
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
    });
    let copy = tmp.path().join("copy");
    let chown = time(|| {
        let _ = std::fs::remove_dir_all(&copy);
        assert!(Command::new("cp").arg("-a").arg(&image).arg(&copy).status().unwrap().success());
        let owner = format!("{0}:{0}", range.host_base);
        assert!(Command::new("chown").args(["-R", &owner]).arg(&copy).status().unwrap().success());
    });
    let compile = time(|| drop(Profile::default_for_containers().unwrap()));
    let profile = Profile::default_for_containers().unwrap();
    let install = time(|| {
        // In a child, as a container's process would: the filter stays there.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = nix::sys::prctl::set_no_new_privs().is_ok() && profile.apply().is_ok();
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
    });
    let fork_only = time(|| match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => unsafe { libc::_exit(0) },
        nix::unistd::ForkResult::Parent { child } => {
            nix::sys::wait::waitpid(child, None).unwrap();
        }
    });
    let disk_dir = tmp.path().join("disk");
    let disk = time(|| {
        sealpod_runtime::storage::mount_limited(&tmp.path().join("disk.img"), &disk_dir, 1 << 30, (0, 0)).unwrap();
        nix::mount::umount2(&disk_dir, nix::mount::MntFlags::MNT_DETACH).unwrap();
    });
    println!("image: {} ({RUNS} runs each, medians)\n", size.split_whitespace().next().unwrap_or("?"));
    println!("| step | before | after |");
    println!("|---|---|---|");
    println!("| pod namespaces: network only vs user + network | {netns:.2} ms | {userns:.2} ms |");
    println!("| image ownership: chown'd copy vs id-mapped mount | {chown:.2} ms | {idmap:.2} ms |");
    println!("| seccomp: fork+exit vs fork+install+exit | {fork_only:.2} ms | {install:.2} ms |");
    println!("| seccomp: compiling the profile | - | {compile:.2} ms |");
    println!("| own disk: sparse file + mkfs.ext4 + loop mount + unmount (1 GiB) | - | {disk:.2} ms |");
}
