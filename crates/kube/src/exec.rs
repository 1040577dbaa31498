//! Logs and exec through the API server, in the provider's offset-based
//! shape: a log is read from an offset, an exec runs in the background and
//! its output is read from an offset until it ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::AsyncReadExt as _;
use k8s_openapi::api::core::v1::Pod as KubePod;
use kube::api::{AttachParams, LogParams};
use tokio::io::AsyncReadExt as _;

use crate::cluster::Cluster;
use crate::KubeError;

/// Most output one exec keeps (more is dropped and said so).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;
/// Most execs kept at once; finished ones go first.
pub const MAX_SESSIONS: usize = 64;
/// How long a finished exec's output stays readable.
pub const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// Bytes of a log or an exec's output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Slice {
    /// Where `data` starts.
    pub offset: u64,
    pub data: Vec<u8>,
    /// The offset to ask for next.
    pub next_offset: u64,
}

fn slice(all: &[u8], offset: u64, max: usize) -> Slice {
    let start = (offset as usize).min(all.len());
    let end = start.saturating_add(max).min(all.len());
    Slice { offset: start as u64, data: all[start..end].to_vec(), next_offset: end as u64 }
}

#[derive(Default)]
struct Output {
    data: Vec<u8>,
    dropped: u64,
    exit: Option<i32>,
    finished_at: Option<Instant>,
}

struct Session {
    pod_id: String,
    output: Mutex<Output>,
}

/// The execs a provider runs.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    next: AtomicU64,
}

impl Sessions {
    fn add(&self, pod_id: &str) -> Result<(String, Arc<Session>), KubeError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| {
            let o = s.output.lock().unwrap_or_else(|p| p.into_inner());
            o.finished_at.is_none_or(|t| t.elapsed() < KEEP_FINISHED)
        });
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .filter_map(|(id, s)| s.output.lock().ok().and_then(|o| o.finished_at).map(|t| (t, id.clone())))
                .min()
                .map(|(_, id)| id);
            match oldest {
                Some(id) => {
                    map.remove(&id);
                }
                None => return Err(KubeError::Busy(format!("{MAX_SESSIONS} execs are running on this provider"))),
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let id = format!("k{:x}{n:x}", nanos as u64);
        let session = Arc::new(Session { pod_id: pod_id.to_owned(), output: Mutex::default() });
        map.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    fn get(&self, pod_id: &str, exec_id: &str) -> Option<Arc<Session>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(exec_id).filter(|s| s.pod_id == pod_id).cloned()
    }
}

impl Session {
    fn append(&self, bytes: &[u8]) {
        let mut o = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_EXEC_OUTPUT.saturating_sub(o.data.len());
        let keep = bytes.len().min(room);
        o.data.extend_from_slice(&bytes[..keep]);
        o.dropped += (bytes.len() - keep) as u64;
    }

    fn finish(&self, exit: i32) {
        let mut o = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if o.dropped > 0 {
            let note = format!("\n[sealpod: {} bytes of output dropped past {MAX_EXEC_OUTPUT}]\n", o.dropped);
            o.data.extend_from_slice(note.as_bytes());
        }
        o.exit = Some(exit);
        o.finished_at = Some(Instant::now());
    }
}

impl Cluster {
    /// Reads a container's log (of the copy the pod's view describes) from
    /// `offset`, at most `max` bytes.
    pub async fn log(&self, pod_id: &str, container: &str, offset: u64, max: usize) -> Result<Slice, KubeError> {
        let view = self.view(pod_id).await?;
        let Some(name) = view.pod_name else { return Ok(Slice { offset, data: Vec::new(), next_offset: offset }) };
        let want = offset.saturating_add(max as u64);
        let lp = LogParams {
            container: Some(container.to_owned()),
            limit_bytes: Some(want.min(i64::MAX as u64) as i64),
            ..Default::default()
        };
        let stream = match self.api::<KubePod>(pod_id).log_stream(&name, &lp).await {
            Ok(s) => s,
            // A container that has not started yet has no log.
            Err(kube::Error::Api(s)) if s.code == 400 => {
                return Ok(Slice { offset, data: Vec::new(), next_offset: offset });
            }
            Err(e) => return Err(e.into()),
        };
        let mut all = Vec::new();
        let mut limited = stream.take(want);
        let read = limited.read_to_end(&mut all);
        tokio::time::timeout(self.options.timeout, read).await.map_err(|_| KubeError::Timeout("read the log"))??;
        Ok(slice(&all, offset, max))
    }

    /// Starts `argv` in a container of the pod; its output is read with
    /// [`Cluster::exec_output`].
    pub async fn exec(&self, pod_id: &str, container: &str, argv: Vec<String>) -> Result<String, KubeError> {
        let view = self.view(pod_id).await?;
        let running =
            view.containers.iter().any(|c| c.name == container && c.state == crate::state::ContainerRun::Running);
        let (Some(name), true) = (view.pod_name, running) else {
            return Err(KubeError::NotRunning(format!("container {container:?} of pod {pod_id} is not running")));
        };
        let ap = AttachParams::default().container(container).stdin(false).stdout(true).stderr(true);
        let mut process = self.api::<KubePod>(pod_id).exec(&name, argv, &ap).await?;
        let (id, session) = self.execs.add(pod_id)?;
        let mut stdout = process.stdout();
        let mut stderr = process.stderr();
        let status = process.take_status();
        tokio::spawn(async move {
            let pump = |reader: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>, session: Arc<Session>| async move {
                let Some(mut reader) = reader else { return };
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = reader.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    session.append(&buf[..n]);
                }
            };
            tokio::join!(pump(stdout.take(), session.clone()), pump(stderr.take(), session.clone()));
            let status = match status {
                Some(s) => s.await,
                None => None,
            };
            session.finish(exit_code(status.as_ref()));
            let _ = process.join().await;
        });
        Ok(id)
    }

    /// An exec's output from `offset`, and its exit code once it ended.
    pub fn exec_output(
        &self,
        pod_id: &str,
        exec_id: &str,
        offset: u64,
        max: usize,
    ) -> Result<(Slice, Option<i32>), KubeError> {
        let session = self
            .execs
            .get(pod_id, exec_id)
            .ok_or_else(|| KubeError::NotFound(format!("exec {exec_id} of pod {pod_id}")))?;
        let o = session.output.lock().unwrap_or_else(|p| p.into_inner());
        Ok((slice(&o.data, offset, max), o.exit))
    }
}

/// The exit code in the API server's final status of an exec: `Success`
/// is 0; a failure names it in a cause `ExitCode`; a lost connection is -1.
fn exit_code(status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>) -> i32 {
    let Some(s) = status else { return -1 };
    if s.status.as_deref() == Some("Success") {
        return 0;
    }
    s.details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref()?.parse().ok())
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    #[test]
    fn exit_codes_come_from_the_final_status() {
        let ok = Status { status: Some("Success".into()), ..Default::default() };
        assert_eq!(exit_code(Some(&ok)), 0);
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("3".into()),
                    field: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&failed)), 3);
        assert_eq!(exit_code(None), -1);
    }

    #[test]
    fn slices_are_bounded_by_the_data() {
        let s = slice(b"hello", 2, 10);
        assert_eq!((s.offset, s.data.as_slice(), s.next_offset), (2, &b"llo"[..], 5));
        let s = slice(b"hello", 99, 10);
        assert_eq!((s.offset, s.data.len(), s.next_offset), (5, 0, 5));
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_said() {
        let s = Session { pod_id: "p".into(), output: Mutex::default() };
        s.append(&vec![b'x'; MAX_EXEC_OUTPUT - 1]);
        s.append(b"abc");
        s.finish(0);
        let o = s.output.lock().unwrap();
        assert_eq!(o.dropped, 2);
        assert!(String::from_utf8_lossy(&o.data[MAX_EXEC_OUTPUT..]).contains("2 bytes of output dropped"));
    }
}
