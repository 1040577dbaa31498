//! A pod's state as the provider reports it, read from its Deployment and
//! the cluster pods it runs.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod as KubePod};

/// The pod as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Scheduled or not, containers not all running yet.
    Starting,
    /// Every container of at least one copy runs.
    Running,
    /// A container cannot start and will not without a change (a missing
    /// image, a bad configuration) or the pod cannot be scheduled.
    Failed,
}

/// One container, from the copy the view describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub state: ContainerRun,
    pub exit_code: Option<i32>,
    pub restarts: u32,
    pub message: String,
}

/// A container's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerRun {
    Waiting,
    Running,
    /// Exited and waiting to be restarted (the kubelet backs off).
    Restarting,
    Exited,
}

/// What the provider reports of a pod on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub phase: Phase,
    pub containers: Vec<ContainerView>,
    pub message: String,
    /// Copies asked for and copies whose containers all run.
    pub replicas: u32,
    pub replicas_ready: u32,
    /// The cluster pod the containers are described from, if any.
    pub pod_name: Option<String>,
}

/// Waiting reasons that do not resolve by waiting.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Builds the view: containers from the most advanced copy (running
/// before pending, newest first), phase from all of them.
pub fn view(deployment: &Deployment, pods: &[KubePod]) -> PodView {
    let replicas = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
    let names: Vec<String> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let live: Vec<&KubePod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let ready = live.iter().filter(|p| all_running(p, &names)).count() as u32;
    let best = live.iter().copied().max_by_key(|p| {
        let running = all_running(p, &names);
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
        (running, created)
    });
    let statuses: Vec<ContainerStatus> =
        best.and_then(|p| p.status.as_ref()).and_then(|s| s.container_statuses.clone()).unwrap_or_default();
    let containers: Vec<ContainerView> = names
        .iter()
        .map(|name| match statuses.iter().find(|s| &s.name == name) {
            Some(s) => container(s),
            None => ContainerView {
                name: name.clone(),
                state: ContainerRun::Waiting,
                exit_code: None,
                restarts: 0,
                message: String::new(),
            },
        })
        .collect();
    let stuck =
        containers.iter().find(|c| c.state == ContainerRun::Waiting && STUCK.iter().any(|r| c.message.starts_with(r)));
    let unschedulable = best.and_then(unschedulable);
    let (phase, message) = if ready > 0 {
        (Phase::Running, String::new())
    } else if let Some(c) = stuck {
        (Phase::Failed, format!("container {}: {}", c.name, c.message))
    } else if let Some(why) = unschedulable {
        (Phase::Starting, format!("the cluster cannot place the pod yet: {why}"))
    } else if best.is_none() {
        (Phase::Starting, "waiting for the cluster to create the pod".to_owned())
    } else {
        (Phase::Starting, String::new())
    };
    PodView {
        phase,
        containers,
        message,
        replicas,
        replicas_ready: ready,
        pod_name: best.and_then(|p| p.metadata.name.clone()),
    }
}

fn all_running(p: &KubePod, names: &[String]) -> bool {
    let statuses = p.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    !names.is_empty()
        && names.iter().all(|n| {
            statuses.is_some_and(|ss| {
                ss.iter().any(|s| &s.name == n && s.state.as_ref().is_some_and(|st| st.running.is_some()))
            })
        })
}

fn container(s: &ContainerStatus) -> ContainerView {
    let restarts = s.restart_count.max(0) as u32;
    let last_exit = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| t.exit_code);
    let state = s.state.as_ref();
    let (run, exit_code, message) = if state.and_then(|s| s.running.as_ref()).is_some() {
        (ContainerRun::Running, last_exit, String::new())
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        let why = [t.reason.as_deref(), t.message.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(": ");
        (ContainerRun::Exited, Some(t.exit_code), why)
    } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = w.reason.clone().unwrap_or_default();
        let why = match &w.message {
            Some(m) if !m.is_empty() => format!("{reason}: {m}"),
            _ => reason.clone(),
        };
        let run = if reason == "CrashLoopBackOff" { ContainerRun::Restarting } else { ContainerRun::Waiting };
        (run, last_exit, why)
    } else {
        (ContainerRun::Waiting, None, String::new())
    };
    // Messages come from the cluster: bounded before they go on the wire.
    let message: String = message.chars().take(512).collect();
    ContainerView { name: s.name.clone(), state: run, exit_code, restarts, message }
}

fn unschedulable(p: &KubePod) -> Option<String> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find_map(|c| {
        (c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
            .then(|| c.message.clone().unwrap_or_default().chars().take(512).collect())
    })
}
