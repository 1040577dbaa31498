//! `sealpod provider run --backend k8s`: the flags of the Kubernetes backend.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

/// Where the provider runs pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Its own runtime on this machine (libcontainer pods with shims).
    Embedded,
    /// A Kubernetes cluster, through its API server (see docs/kubernetes.md).
    K8s,
}

#[derive(Args, Clone, Debug)]
pub struct KubeArgs {
    /// Where pods run: `embedded` (this machine) or `k8s` (a cluster).
    #[arg(long, value_enum, default_value = "embedded")]
    pub backend: Backend,
    /// With --backend k8s: the kubeconfig (default: $KUBECONFIG, then
    /// ~/.kube/config). The provider needs to create namespaces and, in
    /// them, Deployments, Services, NetworkPolicies, Secrets and claims.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With --backend k8s: the kubeconfig context (default: its current one).
    #[arg(long, value_name = "NAME")]
    pub k8s_context: Option<String>,
    /// With --backend k8s: the address publishers reach NodePorts at
    /// (default: a Ready node's ExternalIP, else its InternalIP).
    #[arg(long, value_name = "IP")]
    pub k8s_node_address: Option<IpAddr>,
    /// With --backend k8s: `runtimeClassName` of every pod, e.g.
    /// kata-qemu-tdx or kata-qemu-snp for confidential pods.
    #[arg(long, value_name = "NAME")]
    pub k8s_runtime_class: Option<String>,
    /// With --backend k8s: the StorageClass persistent volumes are claimed
    /// from (without one, pods with persistent volumes are refused).
    #[arg(long, value_name = "NAME")]
    pub k8s_storage_class: Option<String>,
    /// With --backend k8s: let secret volumes become Kubernetes Secrets,
    /// which etcd stores and the cluster's administrators can read (refused
    /// by default).
    #[arg(long)]
    pub k8s_allow_secrets: bool,
    /// With --backend k8s: where the provider's read-only registry listens;
    /// the nodes pull pods' images from it.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5055")]
    pub k8s_registry_listen: SocketAddr,
    /// With --backend k8s: how the nodes name that registry in image
    /// references, `host:port` (default: the listen address). Their
    /// container runtime must be allowed to pull from it over plain HTTP.
    #[arg(long, value_name = "HOST:PORT")]
    pub k8s_registry_host: Option<String>,
    /// With --backend k8s: seconds a container gets between SIGTERM and
    /// SIGKILL when its pod is deleted.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub k8s_grace_seconds: u32,
}

impl KubeArgs {
    /// The backend's settings, or `None` for the embedded runtime.
    pub fn settings(&self) -> Result<Option<sealpod_provider::KubeSettings>> {
        if self.backend == Backend::Embedded {
            if self.kubeconfig.is_some() {
                bail!("--kubeconfig is for --backend k8s");
            }
            return Ok(None);
        }
        let kubeconfig = match &self.kubeconfig {
            Some(k) => k.clone(),
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(k) => PathBuf::from(k),
                None => match std::env::var_os("HOME") {
                    Some(home) => PathBuf::from(home).join(".kube/config"),
                    None => bail!("--backend k8s needs --kubeconfig (no $KUBECONFIG or $HOME)"),
                },
            },
        };
        if !kubeconfig.is_file() {
            bail!("--kubeconfig {}: no such file", kubeconfig.display());
        }
        let registry_host = self.k8s_registry_host.clone().unwrap_or_else(|| self.k8s_registry_listen.to_string());
        if self.k8s_registry_listen.port() == 0 && self.k8s_registry_host.is_none() {
            bail!("--k8s-registry-listen with port 0 needs --k8s-registry-host: the nodes must know the port");
        }
        Ok(Some(sealpod_provider::KubeSettings {
            cluster: sealpod_kube::ClusterOptions {
                kubeconfig,
                context: self.k8s_context.clone(),
                node_address: self.k8s_node_address,
                map: sealpod_kube::MapOptions {
                    runtime_class: self.k8s_runtime_class.clone(),
                    storage_class: self.k8s_storage_class.clone(),
                    allow_secrets: self.k8s_allow_secrets,
                    grace_seconds: i64::from(self.k8s_grace_seconds),
                    // Set to the node's peer id once its key is loaded.
                    provider: String::new(),
                },
                timeout: std::time::Duration::from_secs(30),
            },
            registry_listen: self.k8s_registry_listen,
            registry_host,
        }))
    }
}
