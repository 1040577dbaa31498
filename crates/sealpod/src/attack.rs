//! What a hostile tenant would try from inside its pod, for the isolation
//! tests and for anyone checking a provider by hand (`sealpod exec POD --
//! /app/sealpod-sample probe`), plus the classic resource bombs.
//!
//! `probe [--reach HOST:PORT]... [--outside-pid PID]` makes each attempt and
//! prints one line per attempt, `probe NAME: refused (why)` or `probe NAME:
//! ALLOWED`, then `seccomp: MODE` from /proc/self/status; it exits with the
//! number of attempts that succeeded. `forkbomb`, `membomb` and `fill PATH`
//! never return on their own (`fill PATH --max-bytes N` does, after N bytes).

use std::ffi::CString;
use std::io::Write;
use std::time::Duration;

/// Runs the probes; returns how many attacks succeeded.
pub fn probe(args: &[String]) -> i32 {
    let mut reach = Vec::new();
    let mut outside_pid: i32 = 1;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reach" => reach.extend(it.next().cloned()),
            "--outside-pid" => outside_pid = it.next().and_then(|p| p.parse().ok()).unwrap_or(1),
            _ => {}
        }
    }
    let mut allowed = 0;
    let mut report = |name: &str, result: Result<(), String>| {
        match result {
            Ok(()) => {
                allowed += 1;
                println!("probe {name}: ALLOWED");
            }
            Err(why) => println!("probe {name}: refused ({why})"),
        }
        let _ = std::io::stdout().flush();
    };
    // SAFETY (for every block below): raw system calls with valid,
    // NUL-terminated strings or null pointers where the kernel accepts them;
    // a child created by clone only calls _exit.
    report("unshare-user-namespace", check(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64));
    report("unshare-mount-namespace", check(unsafe { libc::unshare(libc::CLONE_NEWNS) } as i64));
    report("clone-user-namespace", {
        let pid = unsafe { libc::syscall(libc::SYS_clone, libc::CLONE_NEWUSER | libc::SIGCHLD, 0, 0, 0, 0) };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
        }
        check(pid)
    });
    report("mount-tmpfs", {
        check(unsafe { libc::mount(c"x".as_ptr(), c"/tmp".as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) } as i64)
    });
    report("keyring-add-key", {
        const KEY_SPEC_PROCESS_KEYRING: i64 = -2;
        check(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"sealpod-probe".as_ptr(),
                c"x".as_ptr(),
                1usize,
                KEY_SPEC_PROCESS_KEYRING,
            )
        })
    });
    report("ptrace-outside-process", check(unsafe { libc::ptrace(libc::PTRACE_ATTACH, outside_pid, 0usize, 0usize) }));
    report("bpf", check(unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) }));
    report("load-kernel-module", check(unsafe { libc::syscall(libc::SYS_init_module, 0usize, 0usize, c"".as_ptr()) }));
    report("kexec", check(unsafe { libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, 0usize, 0usize) }));
    report("join-host-namespace", {
        // Whatever /proc/1 is from inside, entering its namespace must fail.
        match std::fs::File::open("/proc/1/ns/mnt") {
            Ok(f) => check(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), 0) } as i64),
            Err(e) => Err(e.to_string()),
        }
    });
    report("write-proc-sys", write_file("/proc/sys/kernel/hostname", b"pwned"));
    report("write-sys", write_file("/sys/class/net/lo/mtu", b"1280"));
    report("write-sysrq-trigger", write_file("/proc/sysrq-trigger", b"h"));
    report("open-block-device", {
        // Creating the node may work (on an overlay the kernel lets a user
        // namespace make one); opening it must not: the pod's filesystems are
        // nodev and its device cgroup allows nothing beyond the basics.
        let path = CString::new("/.probe-disk").expect("no NUL");
        let made = check(unsafe { libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0)) } as i64);
        let opened = made.and_then(|()| std::fs::File::open("/.probe-disk").map(drop).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file("/.probe-disk");
        opened
    });
    report("open-kernel-log", std::fs::File::open("/dev/kmsg").map(drop).map_err(|e| e.to_string()));
    report("open-host-memory", std::fs::File::open("/dev/mem").map(drop).map_err(|e| e.to_string()));
    report("raise-open-file-limit", {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let raised = libc::rlimit { rlim_cur: lim.rlim_max + 1, rlim_max: lim.rlim_max + 1 };
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } as i64)
    });
    report("raise-process-limit", {
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut lim) };
        if lim.rlim_max == libc::RLIM_INFINITY {
            // Nothing to raise: the pod's task count is capped by its cgroup.
            Err("already unlimited; the pids cgroup caps tasks".into())
        } else {
            check(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &unlimited) } as i64)
        }
    });
    for target in &reach {
        report(&format!("connect-{target}"), connect(target));
    }
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Seccomp:")).map(|l| l[8..].trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    println!("seccomp: {seccomp}");
    let uid = unsafe { libc::getuid() };
    println!("uid: {uid}");
    allowed
}

/// Ok when a raw call succeeded, else the error it set.
fn check(ret: i64) -> Result<(), String> {
    if ret >= 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

fn write_file(path: &str, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| e.to_string())?;
    f.write_all(bytes).map_err(|e| e.to_string())
}

fn connect(target: &str) -> Result<(), String> {
    let addr: std::net::SocketAddr = target.parse().map_err(|e| format!("bad address: {e}"))?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map(drop).map_err(|e| e.to_string())
}

/// Forks without end; every child does the same. Only the pod's pids limit
/// stops it.
pub fn forkbomb() -> i32 {
    println!("fork bomb started");
    let _ = std::io::stdout().flush();
    loop {
        // SAFETY: the child continues this same loop, touching nothing else.
        if unsafe { libc::fork() } < 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Allocates and touches memory without end, until the OOM killer steps in.
pub fn membomb() -> i32 {
    println!("memory bomb started");
    let _ = std::io::stdout().flush();
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![0xa5; 8 << 20]);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes to `path` until the filesystem refuses (or `max` bytes are
/// written, then exits 0), reports how far it got, then keeps running: a
/// full disk must not stop the pod or its neighbours.
pub fn fill(path: &str, max: Option<u64>, exit_when_full: bool) -> i32 {
    let mut written: u64 = 0;
    let chunk = vec![0x5au8; 1 << 20];
    let result = std::fs::File::create(path).and_then(|mut f| loop {
        if max.is_some_and(|m| written >= m) {
            return f.sync_all();
        }
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
    });
    if result.is_ok() {
        println!("fill wrote {written} bytes");
        return 0;
    }
    let why = result.err().map(|e| e.to_string()).unwrap_or_default();
    println!("fill stopped after {written} bytes: {why}");
    let _ = std::io::stdout().flush();
    if exit_when_full {
        return 1;
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `open PATH [--mknod MAJ:MIN]`: opens a device node read-write, after
/// making it (a character device) when asked; prints what happened and exits
/// 0 only when the open worked.
pub fn open_device(args: &[String]) -> i32 {
    let Some(path) = args.first() else {
        eprintln!("usage: open PATH [--mknod MAJ:MIN]");
        return 2;
    };
    if let Some(numbers) = args.iter().position(|a| a == "--mknod").and_then(|i| args.get(i + 1)) {
        let parsed = numbers.split_once(':').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
        let Some((major, minor)) = parsed else {
            eprintln!("--mknod wants MAJ:MIN");
            return 2;
        };
        let Ok(c_path) = std::ffi::CString::new(path.as_str()) else { return 2 };
        // SAFETY: mknod with a NUL-terminated path and plain integers.
        let made = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
        if made != 0 {
            println!("mknod {path}: {}", std::io::Error::last_os_error());
        } else {
            println!("mknod {path}: made");
        }
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => {
            println!("open {path}: opened");
            0
        }
        Err(e) => {
            println!("open {path}: {e}");
            1
        }
    }
}
