//! The seccomp filter every container process and every exec runs under: an
//! allowlist equivalent to the default profile Docker and containerd apply to
//! a container without CAP_SYS_ADMIN.
//!
//! The filter is compiled to classic BPF in Rust (seccompiler, from rust-vmm)
//! rather than through libseccomp, so the provider needs no C library that a
//! fresh machine lacks; libcontainer's own seccomp support requires
//! libseccomp, so it stays off and the filter is installed by
//! [`SeccompExecutor`], the last step before the container's `execve`.
//!
//! What it refuses, beyond everything not listed in [`syscalls`]: `unshare`,
//! `setns`, `mount` and the new mount API, `keyctl`/`add_key`/`request_key`,
//! `bpf`, `perf_event_open`, `kexec_*`, module loading, `reboot`, clock
//! setting, `clone` with any namespace flag, `socket` for AF_VSOCK, and
//! `personality` beyond the handful of values Docker allows. `clone3` answers
//! ENOSYS (its flags sit behind a pointer the filter cannot read), which makes
//! glibc fall back to `clone`, whose flags it can. The filter's architecture
//! check kills a process that enters through a compat ABI (32-bit x86), which
//! would otherwise bypass the numbers below.

pub mod syscalls;

use std::collections::HashMap;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError};
use seccompiler::BpfProgram;
use serde_json::{json, Value};

/// Namespace flags `clone` may not carry: CLONE_NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET (moby's mask 0x7E020000).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Address families below AF_VSOCK (40) and above it are fine; 39 (AF_QIPCRTR)
/// too, as in moby's profile.
const AF_VSOCK: u64 = 40;

/// `personality` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The compiled filters, installed in this order.
#[derive(Clone)]
pub struct Profile {
    filters: Vec<BpfProgram>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sizes: Vec<usize> = self.filters.iter().map(Vec::len).collect();
        f.debug_struct("Profile").field("instructions", &sizes).finish()
    }
}

/// Why the profile could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture has no syscall table here.
    #[error("seccomp: unsupported architecture {0}")]
    Arch(&'static str),
    /// seccompiler refused the profile (a bug in the lists above).
    #[error("seccomp: compiling the profile: {0}")]
    Compile(String),
    /// The kernel refused the filter.
    #[error("seccomp: installing the filter: {0}")]
    Install(String),
}

impl Profile {
    /// The default container profile for the running architecture.
    pub fn default_for_containers() -> Result<Profile, SeccompError> {
        let arch = seccompiler::TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
        let mut rules: Vec<Value> =
            syscalls::COMMON.iter().chain(syscalls::ARCH).map(|name| json!({"syscall": name})).collect();
        let arg = |index: u8, op: Value, val: u64| json!({"index": index, "type": "qword", "op": op, "val": val});
        rules.push(json!({"syscall": "clone", "args": [arg(0, json!({"masked_eq": CLONE_NAMESPACE_FLAGS}), 0)]}));
        rules.push(json!({"syscall": "socket", "args": [arg(0, json!("lt"), AF_VSOCK)]}));
        rules.push(json!({"syscall": "socket", "args": [arg(0, json!("gt"), AF_VSOCK)]}));
        for p in PERSONALITIES {
            rules.push(json!({"syscall": "personality", "args": [arg(0, json!("eq"), p)]}));
        }
        let source = json!({
            "allow": {"mismatch_action": {"errno": libc::EPERM}, "match_action": "allow", "filter": rules},
            "clone3": {"mismatch_action": "allow", "match_action": {"errno": libc::ENOSYS}, "filter": [{"syscall": "clone3"}]},
        });
        let mut compiled: HashMap<String, BpfProgram> =
            seccompiler::compile_from_json(source.to_string().as_bytes(), arch)
                .map_err(|e| SeccompError::Compile(e.to_string()))?;
        let take = |map: &mut HashMap<String, BpfProgram>, k: &str| {
            map.remove(k).ok_or_else(|| SeccompError::Compile(format!("filter {k} missing")))
        };
        // When two filters both return an errno, the kernel keeps the most
        // recently installed one's: clone3 goes last so ENOSYS wins over EPERM.
        Ok(Profile { filters: vec![take(&mut compiled, "allow")?, take(&mut compiled, "clone3")?] })
    }

    /// Installs the filters on the calling thread (and what it executes).
    /// Needs no_new_privs set, or CAP_SYS_ADMIN.
    pub fn apply(&self) -> Result<(), SeccompError> {
        for f in &self.filters {
            seccompiler::apply_filter(f).map_err(|e| SeccompError::Install(e.to_string()))?;
        }
        Ok(())
    }
}

/// libcontainer's default executor (which `execvp`s the process), with the
/// profile installed just before: after the process has dropped capabilities
/// and set no_new_privs, so nothing libcontainer still does is filtered.
#[derive(Clone)]
pub struct SeccompExecutor {
    profile: Profile,
}

impl SeccompExecutor {
    /// An executor that installs `profile`.
    pub fn new(profile: Profile) -> Self {
        SeccompExecutor { profile }
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        self.profile.apply().map_err(|e| ExecutorError::Other(e.to_string()))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(&self, envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        DefaultExecutor {}.setup_envs(envs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` in a forked child under the profile and returns its exit code.
    fn in_filtered_child(f: fn() -> i32) -> i32 {
        let profile = Profile::default_for_containers().unwrap();
        // SAFETY: the child only makes raw syscalls and exits; it never returns
        // into the test harness.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    nix::sys::prctl::set_no_new_privs().ok()?;
                    profile.apply().ok()?;
                    Some(f())
                })()
                .unwrap_or(99);
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None).unwrap() {
                nix::sys::wait::WaitStatus::Exited(_, code) => code,
                other => panic!("filtered child ended with {other:?}"),
            },
        }
    }

    fn errno_of(ret: libc::c_long) -> i32 {
        if ret < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    #[test]
    fn profile_compiles_for_this_architecture() {
        let p = Profile::default_for_containers().unwrap();
        assert_eq!(p.filters.len(), 2);
        assert!(p.filters[0].len() > 300, "the allowlist compiled to {} instructions", p.filters[0].len());
    }

    #[test]
    fn ordinary_calls_pass_the_filter() {
        let code = in_filtered_child(|| {
            let pid = unsafe { libc::syscall(libc::SYS_getpid) };
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if pid <= 0 || fd < 0 {
                return 1;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn namespace_and_keyring_calls_are_refused_with_eperm() {
        let code = in_filtered_child(|| {
            let checks: [libc::c_long; 4] = unsafe {
                [
                    libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
                    libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0),
                    libc::syscall(libc::SYS_bpf, 0, 0, 0),
                    libc::syscall(libc::SYS_mount, c"x".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, 0),
                ]
            };
            for (i, ret) in checks.into_iter().enumerate() {
                if errno_of(ret) != libc::EPERM {
                    return 10 + i as i32;
                }
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn clone3_answers_enosys_so_libc_falls_back_to_clone() {
        let code = in_filtered_child(|| {
            let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
            if errno_of(ret) == libc::ENOSYS {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn clone_with_a_namespace_flag_is_refused_but_plain_fork_works() {
        let code = in_filtered_child(|| {
            let ret = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD, 0, 0, 0, 0) };
            if errno_of(ret) != libc::EPERM {
                return 1;
            }
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(0) },
                pid if pid > 0 => {
                    let mut status = 0;
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    0
                }
                _ => 2,
            }
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn vsock_sockets_are_refused() {
        let code = in_filtered_child(|| {
            let ret = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) } as libc::c_long;
            if errno_of(ret) == libc::EPERM {
                0
            } else {
                1
            }
        });
        assert_eq!(code, 0);
    }
}
