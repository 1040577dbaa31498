//! The pod's network namespace: created empty (loopback only, so the pod has no
//! route anywhere), kept alive by a file descriptor the shim holds, and entered
//! by one dedicated thread that opens connections on behalf of port forwards.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::time::Duration;

use nix::sched::{setns, unshare, CloneFlags};

/// A network namespace held open by this process.
pub struct NetNs {
    file: File,
}

impl NetNs {
    /// Creates a new network namespace with its loopback interface up.
    ///
    /// `unshare` moves only the calling thread, so it runs on a short-lived
    /// thread of its own and the rest of the process stays in the host namespace.
    pub fn create() -> io::Result<NetNs> {
        std::thread::spawn(|| -> io::Result<NetNs> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            loopback_up()?;
            let file = File::open("/proc/thread-self/ns/net")?;
            Ok(NetNs { file })
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
    }

    /// Holds a namespace opened elsewhere (see [`crate::userns::PodNamespaces`]).
    pub(crate) fn from_file(file: File) -> NetNs {
        NetNs { file }
    }

    /// A path through which other processes (the OCI runtime) can join the
    /// namespace while this process holds it.
    pub fn path(&self) -> std::path::PathBuf {
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()).into()
    }

    /// Starts a thread living in the namespace that connects to ports on its
    /// loopback interface on request.
    pub fn connector(&self) -> io::Result<Connector> {
        let ns = self.file.try_clone()?;
        let (tx, rx) = mpsc::channel::<Op>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new().name("netns-connector".into()).spawn(move || {
            if let Err(e) = setns(ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                let _ = ready_tx.send(Err(io::Error::from(e)));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            while let Ok(op) = rx.recv() {
                match op {
                    Op::Connect(port, reply) => {
                        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                        let _ = reply.send(TcpStream::connect_timeout(&addr, Duration::from_secs(5)));
                    }
                    Op::Listen(port, reply) => {
                        let _ = reply.send(TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
                    }
                    Op::Udp(port, reply) => {
                        let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).and_then(|s| {
                            s.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
                            Ok(s)
                        });
                        let _ = reply.send(socket);
                    }
                }
            }
        })?;
        ready_rx.recv().map_err(|_| io::Error::other("netns connector died"))??;
        Ok(Connector { tx })
    }
}

enum Op {
    Connect(u16, mpsc::SyncSender<io::Result<TcpStream>>),
    Listen(u16, mpsc::SyncSender<io::Result<TcpListener>>),
    Udp(u16, mpsc::SyncSender<io::Result<UdpSocket>>),
}

/// Opens TCP connections and listeners inside a pod's network namespace.
#[derive(Clone)]
pub struct Connector {
    tx: mpsc::Sender<Op>,
}

impl Connector {
    /// Connects to `127.0.0.1:port` inside the pod. Blocks; call from a blocking
    /// context.
    pub fn connect(&self, port: u16) -> io::Result<TcpStream> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(Op::Connect(port, tx)).map_err(|_| io::Error::other("netns connector stopped"))?;
        rx.recv().map_err(|_| io::Error::other("netns connector stopped"))?
    }

    /// A UDP socket inside the pod, bound to a port of its loopback and
    /// connected to `127.0.0.1:port` there: one client's datagrams go out
    /// of it, the pod's answers come back to it.
    pub fn udp(&self, port: u16) -> io::Result<UdpSocket> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(Op::Udp(port, tx)).map_err(|_| io::Error::other("netns connector stopped"))?;
        rx.recv().map_err(|_| io::Error::other("netns connector stopped"))?
    }

    /// Listens on `127.0.0.1:port` inside the pod. The listener keeps
    /// belonging to the pod's namespace whichever thread accepts on it.
    pub fn listen(&self, port: u16) -> io::Result<TcpListener> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx.send(Op::Listen(port, tx)).map_err(|_| io::Error::other("netns connector stopped"))?;
        rx.recv().map_err(|_| io::Error::other("netns connector stopped"))?
    }
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed `ifreq` whose name is a
    // NUL-terminated "lo"; the socket is closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if result == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        let err = io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(err);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn pod_namespace_reaches_its_own_loopback_but_not_the_hosts() {
        if !is_root() {
            eprintln!("skipped: creating network namespaces needs root");
            return;
        }
        // A listener on the host's loopback must not be reachable from the pod.
        let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host_port = host.local_addr().unwrap().port();
        let ns = NetNs::create().unwrap();
        let conn = ns.connector().unwrap();
        assert!(conn.connect(host_port).is_err(), "pod reached a host port");

        // A listener created inside the namespace is reachable through the connector.
        let ns_file = ns.file.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            setns(ns_file.as_fd(), CloneFlags::CLONE_NEWNET).unwrap();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"inside").unwrap();
        });
        let port = rx.recv().unwrap();
        let mut s = conn.connect(port).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "inside");
    }
}
