//! Apocryph's manifest as written (`spec/MANIFEST.md`), and its spellings
//! next to sealpod's own.

use sealpod_proto::{volume, Port, Protocol, Replicas, Resources, Volume, VolumeMount};

use super::*;

/// The example of Apocryph's `spec/MANIFEST.md`, verbatim.
const APOCRYPH_EXAMPLE: &str = r#"type: "trustedpods"
version: "1.0"
containers:
- image: localregistryname:tag
  command: override command # or command: ["override", "command"]
  args: override args # or args: ["override", "args"]
  workingDir: /override/pwd/
  port: 80 # HTTP port (must have only one per pod)
  host: example.com # HTTP hostname used to route requests to the container (must have only one per pod)
  ports:
  - 123:321 # port mapping, as in docker-compose
  - 123 # port mapping, as in docker-compose
  - port: 123 # as in K8s services
    targetPort: 321 # as in K8s services
    protocol: TCP # or UDP, as in K8s
    hostIP: false # request that the port be exposed to the external world; otherwise it will be accessible only using k8s DNS
  env:
  - name: XX
    value: VAL
  volumes:
  - mountPath: /vol
    name: vol # alternatively - without name, copy the same fields from the volume definition here.
    readOnly: false
  resources:
    cpu: 1000m
    memory: 1Gi
    nvidia.com/gpu: 1
replicas:
  min: 0
  max: 1
volumes:
- name: vol
  type: volume # or emptyDir or secret
  resources: # for type: volume
    storage: 8Gi
  source: ./publisher/local/file.json # for type: secret
"#;

fn parse(text: &str) -> Result<(sealpod_proto::Pod, PublisherSide), ManifestError> {
    parse_pod_manifest_for_publisher(text, Format::Yaml, "pod.yaml", None)
}

fn tcp(port: u32, target_port: u32) -> Port {
    Port { port, target_port, protocol: Protocol::Tcp as i32, ..Default::default() }
}

fn refused(text: &str, field: &str, needle: &str) {
    match parse(text) {
        Ok((pod, _)) => panic!("accepted: {pod:?}"),
        Err(err) => {
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(needle), "{err} should mention {needle:?}");
        }
    }
}

#[test]
fn apocryphs_example_is_read_with_the_meaning_it_gives() {
    let (pod, side) = parse(APOCRYPH_EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    let c = &pod.containers[0];
    assert_eq!(c.name, "localregistryname", "derived from the image");
    assert_eq!(c.command, ["override", "command"]);
    assert_eq!(c.args, ["override", "args"]);
    assert_eq!(c.working_dir, "/override/pwd/");
    assert_eq!(
        c.ports,
        [
            tcp(123, 321),
            // docker-compose: a lone port is published on a port the provider picks.
            tcp(0, 123),
            // hostIP: false: the service port, reachable in the pod only.
            Port { pod_only: true, ..tcp(123, 321) },
            // port + host: the pod's HTTP port, behind the entry point.
            Port { http_host: "example.com".into(), ..tcp(0, 80) },
        ]
    );
    assert_eq!(c.env[0].name, "XX");
    assert_eq!(c.env[0].value, "VAL");
    assert_eq!(c.volume_mounts, [VolumeMount { name: "vol".into(), mount_path: "/vol".into(), read_only: false }]);
    assert_eq!(
        c.resources,
        Some(Resources { cpu_millicores: 1000, memory_bytes: 1 << 30, gpus: 1, ..Default::default() })
    );
    assert_eq!(pod.replicas, Some(Replicas { min: 0, max: 1 }));
    assert_eq!(
        pod.volumes,
        [Volume {
            name: "vol".into(),
            kind: Some(volume::Kind::Persistent(volume::Persistent { size_bytes: 8 << 30 }))
        }]
    );
    assert!(side.notes.iter().any(|n| n.contains("named localregistryname")), "{:?}", side.notes);
    assert!(side.notes.iter().any(|n| n.starts_with("volumes[0].source: ignored")), "{:?}", side.notes);
}

#[test]
fn other_manifest_types_and_versions_are_refused_by_name() {
    refused("type: kubernetes\ncontainers: [{image: x}]\n", "type", "unknown manifest type \"kubernetes\"");
    refused(
        "type: trustedpods\nversion: \"2.0\"\ncontainers: [{image: x}]\n",
        "version",
        "version \"2.0\" is not supported",
    );
    refused("version: 1.1\ncontainers: [{image: x}]\n", "version", "version 1.1 is not supported");
    for version in ["\"1.0\"", "1.0", "1"] {
        let text = format!("type: trustedpods\nversion: {version}\ncontainers: [{{image: x}}]\n");
        parse(&text).unwrap_or_else(|e| panic!("{version}: {e}"));
    }
}

#[test]
fn unnamed_containers_get_unique_names_from_their_images() {
    let text = "containers:\n  - image: ./web.tar\n  - image: oci:./web:2\n  - name: web-2\n    image: x\n  - image: docker://r/team/API:1\n";
    let (pod, side) = parse(text).unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "web-3", "web-2", "api"]);
    assert_eq!(side.notes.len(), 3, "{:?}", side.notes);
    assert!(side.notes[0].starts_with("containers[0]: no name given; named web"));
}

#[test]
fn apocryph_volume_types_map_to_sealpods_kinds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token.json"), b"{\"k\":1}").unwrap();
    let text = "containers:\n  - image: x\n    volumes:\n      - {name: s, mountPath: /s}\n      - {name: e, mountPath: /e}\n      - {mountPath: /i, type: emptyDir}\nvolumes:\n  - {name: s, type: secret, source: ./token.json}\n  - {name: e, type: emptyDir, resources: {storage: 1Gi}}\n";
    let pod = parse_pod_manifest(text, Format::Yaml, "pod.yaml", Some(dir.path())).unwrap();
    assert_eq!(
        pod.volumes[0].kind,
        Some(volume::Kind::Secret(volume::Secret { contents: b"{\"k\":1}".to_vec(), file_name: "token.json".into() }))
    );
    assert_eq!(
        pod.volumes[1].kind,
        Some(volume::Kind::EmptyDir(volume::EmptyDir { size_limit_bytes: 1 << 30, memory: false }))
    );
    assert_eq!(pod.volumes[2].name, "x-vol-2", "an inline volume in Apocryph's spelling");
}

#[test]
fn apocryph_volumes_that_cannot_be_honoured_are_refused_by_name() {
    let pod = |volume: &str| {
        format!("containers:\n  - image: x\n    volumes: [{{name: v, mountPath: /v}}]\nvolumes:\n  - {volume}\n")
    };
    refused(&pod("{name: v, type: volume}"), "volumes[0].resources.storage", "needs its size");
    refused(&pod("{name: v, type: volume, resources: {storage: 0}}"), "volumes[0].resources.storage", "above 0");
    refused(&pod("{name: v, type: secret}"), "volumes[0].source", "needs source");
    refused(&pod("{name: v, type: block}"), "volumes[0].type", "expected one of `volume`, `emptyDir`, `secret`");
    refused(&pod("{name: v, type: volume, persistent: {size: 1Gi}}"), "volumes[0].type", "not both");
    refused(
        &pod("{name: v, persistent: {size: 1Gi}, resources: {storage: 1Gi}}"),
        "volumes[0].resources",
        "goes with type",
    );
    refused(&pod("{name: v, emptyDir: {}, source: ./x}"), "volumes[0].source", "goes with type");
    // A secret's source is read relative to the manifest, so text from
    // nowhere cannot read files.
    refused(&pod("{name: v, type: secret, source: /etc/hostname}"), "volumes[0].source", "not loaded from a file");
}

#[test]
fn one_http_port_per_pod_with_a_valid_hostname() {
    let (pod, _) =
        parse("containers:\n  - image: x\n    ports: [{targetPort: 8080, host: App.Example.com}]\n").unwrap();
    assert_eq!(pod.containers[0].ports[0], Port { http_host: "app.example.com".into(), ..tcp(0, 8080) });
    refused(
        "containers:\n  - {image: a, port: 80, host: a.example}\n  - {image: b, port: 81, host: b.example}\n",
        "containers[1].port",
        "one HTTP port",
    );
    refused("containers:\n  - {image: a, port: 80}\n", "containers[0].port", "needs host");
    refused("containers:\n  - {image: a, host: a.example}\n", "containers[0].host", "needs port");
    refused("containers:\n  - {image: a, port: 80, host: \"a.example:80\"}\n", "containers[0].host", "without a port");
    refused("containers:\n  - {image: a, port: 0, host: a.example}\n", "containers[0].port", "out of range 1-65535");
    refused(
        "containers:\n  - image: a\n    ports: [{port: 80, targetPort: 80, host: a.example}]\n",
        "containers[0].ports[0]",
        "without port or hostIP",
    );
}

#[test]
fn ports_keep_sealpods_meaning_without_the_apocryph_header() {
    let body = "containers:\n  - image: x\n    ports: [123, {port: 9000, targetPort: 90}]\n";
    let (own, _) = parse(body).unwrap();
    assert_eq!(own.containers[0].ports, [tcp(123, 123), tcp(9000, 90)]);
    let (apocryph, _) = parse(&format!("type: trustedpods\n{body}")).unwrap();
    assert_eq!(apocryph.containers[0].ports, [tcp(0, 123), Port { pod_only: true, ..tcp(9000, 90) }]);
}

#[test]
fn a_container_may_publish_its_port_twice_but_not_take_anothers() {
    let (pod, _) = parse("containers:\n  - image: x\n    ports: [\"8080:80\", \"8081:80\"]\n").unwrap();
    assert_eq!(pod.containers[0].ports, [tcp(8080, 80), tcp(8081, 80)]);
    refused(
        "containers:\n  - image: x\n    ports: [80]\n  - image: y\n    ports: [\"8080:80\"]\n",
        "containers[1].ports[0]",
        "already used by containers[0].ports[0]",
    );
}
