use super::*;
use sealpod_proto::{Container, EnvVar, Port, Resources, VolumeMount};

fn two_containers() -> Pod {
    Pod {
        containers: vec![
            Container {
                name: "web".into(),
                env: vec![EnvVar { name: "GREETING".into(), value: "hi".into() }],
                ports: vec![
                    Port { port: 0, target_port: 8080, ..Default::default() },
                    Port { port: 31000, target_port: 9090, ..Default::default() },
                    Port { target_port: 7000, pod_only: true, ..Default::default() },
                ],
                volume_mounts: vec![VolumeMount {
                    name: "shared".into(),
                    mount_path: "/data".into(),
                    read_only: false,
                }],
                resources: Some(Resources { cpu_millicores: 250, memory_bytes: 64 << 20, ..Default::default() }),
                ..Default::default()
            },
            Container {
                name: "sidecar".into(),
                command: vec!["/bin/sh".into()],
                volume_mounts: vec![VolumeMount { name: "shared".into(), mount_path: "/data".into(), read_only: true }],
                ..Default::default()
            },
        ],
        volumes: vec![sealpod_proto::Volume {
            name: "shared".into(),
            kind: Some(volume::Kind::EmptyDir(volume::EmptyDir { size_limit_bytes: 1 << 20, memory: true })),
        }],
        ..Default::default()
    }
}

fn plan(pod: &Pod) -> Plan<'_> {
    Plan {
        pod_id: "p0123456789abcdef",
        pod,
        images: pod.containers.iter().map(|_| "127.0.0.1:5055/x@sha256:00".to_owned()).collect(),
        replicas: 1,
        egress: Egress::None,
    }
}

fn options() -> MapOptions {
    MapOptions { grace_seconds: 10, ..Default::default() }
}

#[test]
fn all_containers_share_one_pod_template_in_a_namespace_of_their_own() {
    let pod = two_containers();
    let o = map(&plan(&pod), &options()).unwrap();
    assert_eq!(o.namespace.metadata.name.as_deref(), Some("sealpod-p0123456789abcdef"));
    let spec = o.deployment.spec.unwrap().template.spec.unwrap();
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "sidecar"]);
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.host_aliases.unwrap()[0].hostnames.as_deref().unwrap(), ["web", "sidecar"]);
    let web = &spec.containers[0];
    let limits = web.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["cpu"].0, "250m");
    assert_eq!(limits["memory"].0, (64u64 << 20).to_string());
    assert_eq!(web.resources.as_ref().unwrap().requests, web.resources.as_ref().unwrap().limits);
    let volume = &spec.volumes.unwrap()[0];
    assert_eq!(volume.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
    assert_eq!(spec.containers[1].volume_mounts.as_ref().unwrap()[0].read_only, Some(true));
}

#[test]
fn exposed_ports_become_node_ports_and_pod_only_ports_do_not() {
    let pod = two_containers();
    let o = map(&plan(&pod), &options()).unwrap();
    let ports = o.service.unwrap().spec.unwrap().ports.unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].node_port, None, "0 lets the cluster choose");
    assert_eq!(ports[1].node_port, Some(31000), "a port in the NodePort range is asked for");
    assert_eq!(o.exposed.iter().map(|e| e.container_port).collect::<Vec<_>>(), [8080, 9090]);
    let np = o.network_policy.spec.unwrap();
    assert_eq!(np.egress.unwrap().len(), 0, "no egress unless the manifest grants it");
    assert_eq!(np.ingress.unwrap()[1].ports.as_ref().unwrap().len(), 2);
}

#[test]
fn public_egress_excludes_private_ranges() {
    let pod = two_containers();
    let mut p = plan(&pod);
    p.egress = Egress::Public;
    let np = map(&p, &options()).unwrap().network_policy.spec.unwrap();
    let egress = np.egress.unwrap();
    let block = egress[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
    assert_eq!(block.cidr, "0.0.0.0/0");
    assert!(block.except.as_ref().unwrap().contains(&"10.0.0.0/8".to_owned()));
}

#[test]
fn secrets_need_the_operators_consent() {
    let mut pod = two_containers();
    pod.volumes.push(sealpod_proto::Volume {
        name: "key".into(),
        kind: Some(volume::Kind::Secret(volume::Secret { contents: b"s3cret".to_vec(), file_name: "key.pem".into() })),
    });
    let err = map(&plan(&pod), &options()).unwrap_err();
    assert_eq!(err.field, "pod.volumes[1]");
    assert!(err.message.contains("--k8s-allow-secrets"), "{}", err.message);
    let o = map(&plan(&pod), &MapOptions { allow_secrets: true, ..options() }).unwrap();
    assert_eq!(o.secrets[0].data.as_ref().unwrap()["key.pem"].0, b"s3cret");
}

#[test]
fn what_a_deployment_cannot_keep_is_refused_with_the_field() {
    let mut pod = two_containers();
    pod.containers[0].name = "Web_1".into();
    assert_eq!(map(&plan(&pod), &options()).unwrap_err().field, "pod.containers[0].name");
    let mut pod = two_containers();
    pod.restart_policy = RestartPolicy::Never as i32;
    assert_eq!(map(&plan(&pod), &options()).unwrap_err().field, "pod.restart_policy");
    let mut pod = two_containers();
    pod.volumes[0].kind = Some(volume::Kind::Persistent(volume::Persistent { size_bytes: 1 << 30 }));
    assert!(map(&plan(&pod), &options()).unwrap_err().message.contains("--k8s-storage-class"));
    let o = map(&plan(&pod), &MapOptions { storage_class: Some("local".into()), ..options() }).unwrap();
    assert_eq!(o.claims[0].spec.as_ref().unwrap().storage_class_name.as_deref(), Some("local"));
}

#[test]
fn the_runtime_class_is_the_operators() {
    let pod = two_containers();
    let o = map(&plan(&pod), &MapOptions { runtime_class: Some("kata-qemu-tdx".into()), ..options() }).unwrap();
    let spec = o.deployment.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.runtime_class_name.as_deref(), Some("kata-qemu-tdx"));
}
