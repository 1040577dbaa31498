//! Behaviour of the whole parse-and-convert path, in both formats.

use std::path::Path;

use sealpod_proto::{
    image, volume, Container, Pod, Port, Protocol, Replicas, Resources, RestartPolicy, Volume, VolumeMount,
};

use super::*;

fn yaml(text: &str) -> Pod {
    parse_pod_manifest(text, Format::Yaml, "pod.yaml", None).unwrap_or_else(|err| panic!("{err}"))
}

fn json(text: &str) -> Pod {
    parse_pod_manifest(text, Format::Json, "pod.json", None).unwrap_or_else(|err| panic!("{err}"))
}

fn yaml_err(text: &str) -> ManifestError {
    match parse_pod_manifest(text, Format::Yaml, "pod.yaml", None) {
        Ok(pod) => panic!("accepted: {pod:?}"),
        Err(err) => err,
    }
}

fn json_err(text: &str) -> ManifestError {
    match parse_pod_manifest(text, Format::Json, "pod.json", None) {
        Ok(pod) => panic!("accepted: {pod:?}"),
        Err(err) => err,
    }
}

/// One container named `web` with image `./web.tar` and the given extra lines
/// (indented to sit inside the container).
fn web(extra: &str) -> String {
    let mut text = String::from("containers:\n  - name: web\n    image: ./web.tar\n");
    for line in extra.lines() {
        text.push_str("    ");
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn only(pod: &Pod) -> &Container {
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn assert_error(err: &ManifestError, field: &str, line: Option<usize>, needle: &str) {
    assert_eq!(err.field(), field, "{err}");
    if line.is_some() {
        assert_eq!(err.line(), line, "{err}");
    }
    assert!(err.to_string().contains(needle), "{err:?} should mention {needle:?}: {err}");
}

fn tcp(port: u32, target_port: u32) -> Port {
    Port { port, target_port, protocol: Protocol::Tcp as i32, ..Default::default() }
}

const WEB_POD: &str = r#"
containers:
  - name: web
    image: oci-archive:./web.tar
    command: nginx -g 'daemon off;'
    workingDir: /srv
    ports:
      - 80
      - "8443:443"
    env:
      UPSTREAM: http://127.0.0.1:9000
      WORKERS: 4
    volumeMounts:
      - name: static
        mountPath: /srv/static
        readOnly: true
    resources:
      cpu: 500m
      memory: 256Mi
  - name: api
    image: ./api-layout:v2
    args: ["--listen", "127.0.0.1:9000", "--cache", "/cache"]
    env:
      - name: TOKEN_FILE
        value: /run/secrets/token
    volumeMounts:
      - name: token
        mountPath: /run/secrets/token
      - mountPath: /cache
        emptyDir: {sizeLimit: 1Gi, medium: Memory}
    resources:
      cpu: 1.5
      memory: 1Gi
      nvidia.com/gpu: 1
replicas: {min: 1, max: 3}
restartPolicy: Always
volumes:
  - name: static
    persistent: {size: 10Gi}
  - name: token
    secret: {contents: "s3cr3t"}
"#;

#[test]
fn two_container_web_pod_converts_to_wire_form() {
    let pod = yaml(WEB_POD);
    assert_eq!(
        pod.containers[0],
        Container {
            name: "web".into(),
            image: Some(sealpod_proto::Image {
                source: Some(image::Source::Reference("oci-archive:./web.tar".into()))
            }),
            command: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            args: vec![],
            working_dir: "/srv".into(),
            ports: vec![tcp(80, 80), tcp(8443, 443)],
            env: vec![
                sealpod_proto::EnvVar { name: "UPSTREAM".into(), value: "http://127.0.0.1:9000".into() },
                sealpod_proto::EnvVar { name: "WORKERS".into(), value: "4".into() },
            ],
            volume_mounts: vec![VolumeMount {
                name: "static".into(),
                mount_path: "/srv/static".into(),
                read_only: true
            }],
            resources: Some(Resources { cpu_millicores: 500, memory_bytes: 256 << 20, ..Default::default() }),
        }
    );
    let api = &pod.containers[1];
    assert_eq!(api.args, ["--listen", "127.0.0.1:9000", "--cache", "/cache"]);
    assert_eq!(
        api.volume_mounts,
        [
            VolumeMount { name: "token".into(), mount_path: "/run/secrets/token".into(), read_only: false },
            VolumeMount { name: "api-vol-1".into(), mount_path: "/cache".into(), read_only: false },
        ]
    );
    assert_eq!(
        api.resources,
        Some(Resources { cpu_millicores: 1500, memory_bytes: 1 << 30, gpus: 1, ..Default::default() })
    );
    assert_eq!(pod.replicas, Some(Replicas { min: 1, max: 3 }));
    assert_eq!(pod.restart_policy, RestartPolicy::Always as i32);
    assert_eq!(
        pod.volumes,
        [
            Volume {
                name: "static".into(),
                kind: Some(volume::Kind::Persistent(volume::Persistent { size_bytes: 10 << 30 }))
            },
            Volume {
                name: "token".into(),
                kind: Some(volume::Kind::Secret(volume::Secret {
                    contents: b"s3cr3t".to_vec(),
                    file_name: "token".into()
                })),
            },
            Volume {
                name: "api-vol-1".into(),
                kind: Some(volume::Kind::EmptyDir(volume::EmptyDir { size_limit_bytes: 1 << 30, memory: true })),
            },
        ]
    );
}

#[test]
fn json_manifest_converts_like_yaml() {
    let text = r#"{
      "containers": [
        {"name": "web", "image": "oci-archive:./web.tar", "command": "nginx -g 'daemon off;'",
         "workingDir": "/srv", "ports": [80, "8443:443"],
         "env": {"UPSTREAM": "http://127.0.0.1:9000", "WORKERS": 4},
         "volumeMounts": [{"name": "static", "mountPath": "/srv/static", "readOnly": true}],
         "resources": {"cpu": "500m", "memory": "256Mi"}},
        {"name": "api", "image": "./api-layout:v2",
         "args": ["--listen", "127.0.0.1:9000", "--cache", "/cache"],
         "env": [{"name": "TOKEN_FILE", "value": "/run/secrets/token"}],
         "volumeMounts": [{"name": "token", "mountPath": "/run/secrets/token"},
                          {"mountPath": "/cache", "emptyDir": {"sizeLimit": "1Gi", "medium": "Memory"}}],
         "resources": {"cpu": 1.5, "memory": "1Gi", "nvidia.com/gpu": 1}}
      ],
      "replicas": {"min": 1, "max": 3},
      "restartPolicy": "Always",
      "volumes": [{"name": "static", "persistent": {"size": "10Gi"}},
                  {"name": "token", "secret": {"contents": "s3cr3t"}}]
    }"#;
    assert_eq!(json(text), yaml(WEB_POD));
}

#[test]
fn minimal_manifest_gets_defaults() {
    let pod = yaml("containers:\n  - name: app\n    image: ./app.tar\n");
    assert_eq!(
        pod,
        Pod {
            containers: vec![Container {
                name: "app".into(),
                image: Some(sealpod_proto::Image { source: Some(image::Source::Reference("./app.tar".into())) }),
                ..Default::default()
            }],
            replicas: Some(Replicas { min: 1, max: 1 }),
            restart_policy: RestartPolicy::OnFailure as i32,
            volumes: vec![],
        }
    );
}

// --- command, args, workingDir ---

#[test]
fn command_string_is_split_shell_like() {
    let pod = yaml(&web(r#"command: sh -c "echo \"hello world\" > /tmp/x"  'a b' c\ d"#));
    assert_eq!(only(&pod).command, ["sh", "-c", r#"echo "hello world" > /tmp/x"#, "a b", "c d"]);
}

#[test]
fn command_and_args_lists_are_kept_and_scalars_stringified() {
    let pod = yaml(&web("command: [/bin/server]\nargs: [--port, 8080, --verbose, true, 'a b']"));
    assert_eq!(only(&pod).command, ["/bin/server"]);
    assert_eq!(only(&pod).args, ["--port", "8080", "--verbose", "true", "a b"]);
}

#[test]
fn rejects_unterminated_quote_in_command() {
    let err = yaml_err(&web("args: \"echo 'oops\""));
    assert_error(&err, "containers[0].args", Some(4), "unterminated single quote");
}

#[test]
fn rejects_float_in_args_list() {
    let err = yaml_err(&web("args: [--ratio, 0.50]"));
    assert_error(&err, "containers[0].args[1]", Some(4), "put it in quotes");
}

#[test]
fn rejects_relative_working_dir() {
    let err = yaml_err(&web("workingDir: srv"));
    assert_error(&err, "containers[0].workingDir", Some(4), "must be absolute");
}

// --- env ---

#[test]
fn env_map_keeps_written_order() {
    let pod = yaml(&web("env:\n  ZED: z\n  ALPHA: a\n  MID: m"));
    let names: Vec<&str> = only(&pod).env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ZED", "ALPHA", "MID"]);
    let pod = json(r#"{"containers": [{"name": "web", "image": "x", "env": {"ZED": "z", "ALPHA": "a"}}]}"#);
    let names: Vec<&str> = only(&pod).env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["ZED", "ALPHA"]);
}

#[test]
fn env_list_accepts_name_value_objects_and_strings() {
    let pod = yaml(&web("env:\n  - name: A\n    value: one\n  - B=two=2\n  - C=\n  - {name: D, value: 4}"));
    let env: Vec<(&str, &str)> = only(&pod).env.iter().map(|e| (e.name.as_str(), e.value.as_str())).collect();
    assert_eq!(env, [("A", "one"), ("B", "two=2"), ("C", ""), ("D", "4")]);
}

#[test]
fn env_numbers_and_bools_are_stringified() {
    let pod = yaml(&web("env:\n  PORT: 8080\n  DEBUG: false\n  NEG: -3\n  EMPTY: ''"));
    let values: Vec<&str> = only(&pod).env.iter().map(|e| e.value.as_str()).collect();
    assert_eq!(values, ["8080", "false", "-3", ""]);
}

#[test]
fn rejects_float_env_value_with_hint() {
    let err = yaml_err(&web("env:\n  VERSION: 1.10"));
    assert_error(&err, "containers[0].env.VERSION", Some(5), "put it in quotes");
}

#[test]
fn rejects_null_env_value() {
    let err = yaml_err(&web("env:\n  EMPTY:"));
    assert_error(&err, "containers[0].env.EMPTY", Some(5), "write \"\" for an empty one");
}

#[test]
fn rejects_duplicate_env_names() {
    let err = yaml_err(&web("env:\n  - A=1\n  - name: A\n    value: 2"));
    assert_error(&err, "containers[0].env", None, "\"A\" is set twice");
}

#[test]
fn rejects_env_entry_without_equals_and_bad_names() {
    assert_error(&yaml_err(&web("env: [JUSTNAME]")), "containers[0].env[0]", Some(4), "expected NAME=value");
    assert_error(&yaml_err(&web("env: ['=x']")), "containers[0].env[0]", Some(4), "invalid environment variable name");
    assert_error(
        &yaml_err(&web("env:\n  - {name: A, value: 1, valueFrom: x}")),
        "containers[0].env[0].valueFrom",
        Some(5),
        "unknown field `valueFrom`",
    );
}

// --- ports ---

#[test]
fn port_int_maps_port_to_same_target() {
    assert_eq!(only(&yaml(&web("ports: [80]"))).ports, [tcp(80, 80)]);
}

#[test]
fn port_string_maps_host_to_target() {
    assert_eq!(only(&yaml(&web("ports: ['8080:80', '443']"))).ports, [tcp(8080, 80), tcp(443, 443)]);
}

#[test]
fn port_string_takes_protocol_suffix_and_host_ip() {
    let pod = yaml(&web("ports: ['5353:53/udp', '9000/TCP', '127.0.0.1:8080:80', '[::1]:8443:443/tcp', '0:81']"));
    let ports = &only(&pod).ports;
    assert_eq!(ports[0], Port { port: 5353, target_port: 53, protocol: Protocol::Udp as i32, ..Default::default() });
    assert_eq!(ports[1], tcp(9000, 9000));
    assert_eq!(ports[2], Port { host_ip: "127.0.0.1".into(), ..tcp(8080, 80) });
    assert_eq!(ports[3], Port { host_ip: "::1".into(), ..tcp(8443, 443) });
    assert_eq!(ports[4], tcp(0, 81));
}

#[test]
fn port_object_defaults_target_to_port() {
    let pod = yaml(&web(
        "ports:\n  - port: 80\n  - {port: 8080, targetPort: 8081, protocol: udp, hostIP: 0.0.0.0, name: metrics}\n  - targetPort: 9090",
    ));
    let ports = &only(&pod).ports;
    assert_eq!(ports[0], tcp(80, 80));
    assert_eq!(
        ports[1],
        Port {
            port: 8080,
            target_port: 8081,
            protocol: Protocol::Udp as i32,
            host_ip: "0.0.0.0".into(),
            name: "metrics".into(),
            ..Default::default()
        }
    );
    assert_eq!(ports[2], tcp(0, 9090), "only targetPort: the provider chooses the public port");
}

#[test]
fn rejects_ports_out_of_range() {
    assert_error(&yaml_err(&web("ports: [0]")), "containers[0].ports[0]", Some(4), "out of range 1-65535");
    assert_error(&yaml_err(&web("ports: [65536]")), "containers[0].ports[0]", Some(4), "out of range");
    assert_error(&yaml_err(&web("ports: [-1]")), "containers[0].ports[0]", Some(4), "out of range");
    assert_error(
        &yaml_err(&web("ports: ['70000:80']")),
        "containers[0].ports[0]",
        Some(4),
        "port 70000 is out of range 0-65535",
    );
    assert_error(&yaml_err(&web("ports: ['80:0']")), "containers[0].ports[0]", Some(4), "out of range 1-65535");
    assert_error(
        &yaml_err(&web("ports:\n  - port: 80\n    targetPort: 65536")),
        "containers[0].ports[0].targetPort",
        Some(6),
        "out of range",
    );
    assert_error(&yaml_err(&web("ports:\n  - port: 0")), "containers[0].ports[0]", None, "targetPort is required");
    assert_error(&yaml_err(&web("ports:\n  - {}")), "containers[0].ports[0]", None, "targetPort is required");
}

#[test]
fn rejects_malformed_port_strings() {
    for bad in ["http", "80:", ":80", "1:2:3:4", "80/sctp", "[::1:80:80", "80 ", "+80"] {
        let err = yaml_err(&web(&format!("ports: ['{bad}']")));
        assert_error(&err, "containers[0].ports[0]", Some(4), "invalid port");
    }
    assert_error(&yaml_err(&web("ports: ['999.1.1.1:80:80']")), "containers[0].ports[0]", Some(4), "invalid host IP");
}

#[test]
fn rejects_unknown_protocol_and_takes_boolean_host_ip_as_apocryphs_published_or_not() {
    assert_error(
        &yaml_err(&web("ports:\n  - {port: 80, protocol: SCTP}")),
        "containers[0].ports[0].protocol",
        Some(5),
        "expected TCP or UDP",
    );
    // Apocryph's `hostIP: false`: not published, reachable in the pod only.
    let pod = yaml(&web("ports:\n  - {port: 80, hostIP: false}\n  - {port: 81, hostIP: true}"));
    assert_eq!(only(&pod).ports[0], Port { pod_only: true, ..tcp(80, 80) });
    assert_eq!(only(&pod).ports[1], tcp(81, 81));
    let pod = json(r#"{"containers": [{"name": "web", "image": "x", "ports": [{"port": 80, "hostIP": false}]}]}"#);
    assert!(only(&pod).ports[0].pod_only);
    let err = json_err(r#"{"containers": [{"name": "web", "image": "x", "ports": [{"port": 80, "hostIP": 7}]}]}"#);
    assert_error(&err, "containers[0].ports[0].hostIP", Some(1), "an IP address");
    assert_error(
        &yaml_err(&web("ports:\n  - {port: 80, hostIP: nowhere}")),
        "containers[0].ports[0].hostIP",
        Some(5),
        "invalid host IP",
    );
}

#[test]
fn rejects_duplicate_target_port_across_containers_with_line() {
    let text = "containers:\n  - name: a\n    image: x\n    ports: [80]\n  - name: b\n    image: y\n    ports:\n      - 8080:80\n";
    let err = yaml_err(text);
    assert_error(
        &err,
        "containers[1].ports[0]",
        Some(8),
        "target port 80/tcp is already used by containers[0].ports[0]",
    );
    assert_eq!(err.column(), Some(9));
}

#[test]
fn tcp_and_udp_may_share_a_port_number() {
    let pod = yaml(&web("ports: ['53/udp', '53/tcp']"));
    assert_eq!(only(&pod).ports.len(), 2);
}

#[test]
fn rejects_duplicate_public_port() {
    let err = yaml_err(&web("ports: ['8080:80', '8080:81', '0:82', '0:83']"));
    assert_error(
        &err,
        "containers[0].ports[1]",
        Some(4),
        "public port 8080/tcp is already requested by containers[0].ports[0]",
    );
}

#[test]
fn rejects_duplicate_and_malformed_port_names() {
    let err = yaml_err(&web("ports:\n  - {port: 80, name: http}\n  - {port: 81, name: http}"));
    assert_error(&err, "containers[0].ports[1].name", Some(6), "port name http is already used");
    let err = yaml_err(&web("ports:\n  - {port: 80, name: Http_Port}"));
    assert_error(&err, "containers[0].ports[0].name", Some(5), "invalid port name");
}

// --- volumes ---

#[test]
fn volume_mounts_reference_pod_volumes_by_name() {
    let text = format!(
        "{}volumes:\n  - name: data\n    emptyDir: {{}}\n",
        web("volumeMounts:\n  - {name: data, mountPath: /data}")
    );
    let pod = yaml(&text);
    assert_eq!(
        only(&pod).volume_mounts,
        [VolumeMount { name: "data".into(), mount_path: "/data".into(), read_only: false }]
    );
    assert_eq!(pod.volumes.len(), 1);
}

#[test]
fn container_volumes_is_apocryph_spelling_of_volume_mounts() {
    let text = format!(
        "{}volumes:\n  - name: data\n    emptyDir:\n",
        web("volumes:\n  - {name: data, mountPath: /data, readOnly: true}")
    );
    let pod = yaml(&text);
    assert_eq!(
        only(&pod).volume_mounts,
        [VolumeMount { name: "data".into(), mount_path: "/data".into(), read_only: true }]
    );
}

#[test]
fn rejects_both_volume_mounts_and_volumes_on_a_container() {
    let err = yaml_err(&web("volumes: []\nvolumeMounts: []"));
    assert_error(&err, "containers[0].volumes", Some(4), "not both");
}

#[test]
fn inline_volumes_are_hoisted_after_pod_volumes_with_generated_names() {
    let text = format!(
        "{}volumes:\n  - name: shared\n    emptyDir: {{}}\n",
        web("volumeMounts:\n  - {mountPath: /a, emptyDir: {}}\n  - {name: shared, mountPath: /s}\n  - {mountPath: /p, persistent: {size: 1G}}\n  - {name: cache, mountPath: /c, emptyDir: {}}")
    );
    let pod = yaml(&text);
    let names: Vec<&str> = pod.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["shared", "web-vol-0", "web-vol-2", "cache"]);
    let mounted: Vec<&str> = only(&pod).volume_mounts.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(mounted, ["web-vol-0", "shared", "web-vol-2", "cache"]);
}

#[test]
fn named_inline_volume_can_be_mounted_by_another_container() {
    let text = "containers:\n  - name: a\n    image: x\n    volumeMounts: [{name: b-data, mountPath: /in}]\n  - name: b\n    image: y\n    volumeMounts: [{name: b-data, mountPath: /out, emptyDir: {}}]\n";
    let pod = yaml(text);
    assert_eq!(pod.volumes.len(), 1);
    assert_eq!(pod.containers[0].volume_mounts[0].name, "b-data");
}

#[test]
fn rejects_mount_of_undefined_volume_with_line_and_path() {
    let text = format!(
        "{}volumes:\n  - name: data\n    emptyDir: {{}}\n",
        web("volumeMounts:\n  - name: dtaa\n    mountPath: /data")
    );
    let err = yaml_err(&text);
    assert_error(&err, "containers[0].volumeMounts[0].name", Some(5), "no volume named dtaa: the pod defines data");
    assert_eq!(
        err.to_string(),
        "pod.yaml:5:15: containers[0].volumeMounts[0].name: no volume named dtaa: the pod defines data"
    );
}

#[test]
fn rejects_mount_without_name_or_definition() {
    let err = yaml_err(&web("volumeMounts:\n  - mountPath: /data"));
    assert_error(&err, "containers[0].volumeMounts[0]", Some(5), "give the name of a pod volume");
}

#[test]
fn rejects_duplicate_volume_names() {
    let err =
        yaml_err(&format!("{}volumes:\n  - {{name: v, emptyDir: {{}}}}\n  - {{name: v, emptyDir: {{}}}}\n", web("")));
    assert_error(&err, "volumes[1].name", Some(6), "volume name v is already used by volumes[0]");
    let err = yaml_err(&format!(
        "{}volumes:\n  - {{name: web-vol-0, emptyDir: {{}}}}\n",
        web("volumeMounts: [{mountPath: /x, emptyDir: {}}]")
    ));
    assert_error(
        &err,
        "containers[0].volumeMounts[0]",
        Some(4),
        "the generated name web-vol-0 is already used by volumes[0]",
    );
}

#[test]
fn rejects_volume_with_no_kind_or_two_kinds() {
    let err = yaml_err(&format!("{}volumes:\n  - name: v\n", web("")));
    assert_error(&err, "volumes[0]", Some(5), "needs one of emptyDir, persistent or secret");
    let err = yaml_err(&format!("{}volumes:\n  - {{name: v, emptyDir: {{}}, persistent: {{size: 1Gi}}}}\n", web("")));
    assert_error(&err, "volumes[0]", Some(5), "exactly one of");
}

#[test]
fn rejects_bad_mount_paths() {
    assert_error(
        &yaml_err(&web("volumeMounts: [{mountPath: data, emptyDir: {}}]")),
        "containers[0].volumeMounts[0].mountPath",
        Some(4),
        "absolute",
    );
    assert_error(
        &yaml_err(&web("volumeMounts: [{mountPath: /a/../etc, emptyDir: {}}]")),
        "containers[0].volumeMounts[0].mountPath",
        Some(4),
        "..",
    );
    let err = yaml_err(&web("volumeMounts:\n  - {mountPath: /a, emptyDir: {}}\n  - {mountPath: /a, emptyDir: {}}"));
    assert_error(
        &err,
        "containers[0].volumeMounts[1].mountPath",
        Some(6),
        "mountPath /a is already used by containers[0].volumeMounts[0]",
    );
}

#[test]
fn empty_dir_takes_memory_medium_and_size_limit() {
    let pod = yaml(&web("volumeMounts: [{mountPath: /t, emptyDir: {medium: Memory, sizeLimit: 64Mi}}]"));
    assert_eq!(
        pod.volumes[0].kind,
        Some(volume::Kind::EmptyDir(volume::EmptyDir { size_limit_bytes: 64 << 20, memory: true }))
    );
    let err = yaml_err(&web("volumeMounts: [{mountPath: /t, emptyDir: {medium: Ram}}]"));
    assert_error(&err, "containers[0].volumeMounts[0].emptyDir.medium", Some(4), "unknown medium");
}

#[test]
fn persistent_volume_needs_a_size() {
    let err = yaml_err(&format!("{}volumes:\n  - {{name: v, persistent: {{}}}}\n", web("")));
    assert_error(&err, "volumes[0].persistent", Some(5), "missing field `size`");
    let err = yaml_err(&format!("{}volumes:\n  - name: v\n    persistent: {{size: 0}}\n", web("")));
    assert_error(&err, "volumes[0].persistent.size", Some(6), "size above 0");
}

#[test]
fn secret_file_is_read_relative_to_manifest_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/token.txt"), b"tok\n").unwrap();
    let text = format!("{}volumes:\n  - name: token\n    secret: {{file: keys/token.txt}}\n", web(""));
    let pod = parse_pod_manifest(&text, Format::Yaml, "pod.yaml", Some(dir.path())).unwrap();
    assert_eq!(
        pod.volumes[0].kind,
        Some(volume::Kind::Secret(volume::Secret { contents: b"tok\n".to_vec(), file_name: "token.txt".into() }))
    );
}

#[test]
fn secret_file_is_refused_without_base_dir() {
    let err = yaml_err(&format!("{}volumes:\n  - name: t\n    secret: {{file: /etc/hostname}}\n", web("")));
    assert_error(&err, "volumes[0].secret.file", Some(6), "not loaded from a file");
}

#[test]
fn secret_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let parse = |file: &str| {
        let text = format!("{}volumes:\n  - name: t\n    secret: {{file: {file}}}\n", web(""));
        parse_pod_manifest(&text, Format::Yaml, "pod.yaml", Some(dir.path())).unwrap_err()
    };
    let err = parse("missing.txt");
    assert!(matches!(err.kind(), ManifestErrorKind::SecretFile { .. }), "{err:?}");
    assert_error(&err, "volumes[0].secret.file", Some(6), "missing.txt");

    std::fs::create_dir(dir.path().join("sub")).unwrap();
    assert_error(&parse("sub"), "volumes[0].secret.file", Some(6), "not a regular file");

    std::fs::write(dir.path().join("big"), vec![0u8; MAX_SECRET_BYTES as usize + 1]).unwrap();
    let err = parse("big");
    assert!(matches!(err.kind(), ManifestErrorKind::SecretTooLarge { .. }), "{err:?}");
}

#[test]
fn rejects_secret_with_both_or_neither_source() {
    let err = yaml_err(&format!("{}volumes:\n  - name: t\n    secret: {{file: a, contents: b}}\n", web("")));
    assert_error(&err, "volumes[0].secret", Some(6), "exactly one of file or contents");
    let err = yaml_err(&format!("{}volumes:\n  - name: t\n    secret: {{}}\n", web("")));
    assert_error(&err, "volumes[0].secret", Some(6), "exactly one of file or contents");
}

// --- resources ---

#[test]
fn resources_take_every_quantity() {
    let pod = yaml(&web("resources:\n  cpu: 2\n  memory: 1G\n  gpu: 2\n  ephemeral-storage: 20Gi\n  pids: 512"));
    assert_eq!(
        only(&pod).resources,
        Some(Resources {
            cpu_millicores: 2000,
            memory_bytes: 1_000_000_000,
            gpus: 2,
            ephemeral_storage_bytes: 20 << 30,
            pids: 512
        })
    );
    let pod = yaml(&web("resources: {cpu: 0.25, memory: 1000, nvidia.com/gpu: '1'}"));
    assert_eq!(
        only(&pod).resources,
        Some(Resources { cpu_millicores: 250, memory_bytes: 1000, gpus: 1, ..Default::default() })
    );
}

#[test]
fn resources_requests_and_limits_take_limits_then_requests() {
    let pod = yaml(&web("resources:\n  requests: {cpu: 250m, memory: 128Mi}\n  limits: {cpu: 1}"));
    assert_eq!(
        only(&pod).resources,
        Some(Resources { cpu_millicores: 1000, memory_bytes: 128 << 20, ..Default::default() })
    );
}

#[test]
fn rejects_quantities_both_flat_and_under_requests() {
    let err = yaml_err(&web("resources:\n  cpu: 1\n  requests: {memory: 1Gi}"));
    assert_error(&err, "containers[0].resources.requests", Some(6), "not both");
}

#[test]
fn rejects_invalid_quantities_with_line_and_path() {
    let err = yaml_err(&web("resources:\n  cpu: 12x"));
    assert_eq!(
        err.to_string(),
        "pod.yaml:5:12: containers[0].resources.cpu: invalid CPU quantity \"12x\": expected millicores like 500m or cores like 0.5"
    );
    assert_error(
        &yaml_err(&web("resources:\n  memory: 12Qi")),
        "containers[0].resources.memory",
        Some(5),
        "expected bytes like",
    );
    assert_error(&yaml_err(&web("resources:\n  memory: -1Gi")), "containers[0].resources.memory", Some(5), "negative");
    assert_error(&yaml_err(&web("resources:\n  memory: -5")), "containers[0].resources.memory", Some(5), "negative");
    assert_error(&yaml_err(&web("resources:\n  cpu: -0.5")), "containers[0].resources.cpu", Some(5), "negative");
    assert_error(
        &yaml_err(&web("resources:\n  memory: 99999Ei")),
        "containers[0].resources.memory",
        Some(5),
        "too large",
    );
    assert_error(&yaml_err(&web("resources:\n  memory: 1e30")), "containers[0].resources.memory", Some(5), "too large");
    assert_error(
        &yaml_err(&web("resources:\n  cpu: 18446744073709552")),
        "containers[0].resources.cpu",
        Some(5),
        "too large",
    );
    assert_error(&yaml_err(&web("resources:\n  gpu: -1")), "containers[0].resources.gpu", Some(5), "negative");
    assert_error(&yaml_err(&web("resources:\n  pids: 1.5")), "containers[0].resources.pids", Some(5), "whole number");
    assert_error(
        &yaml_err(&web("resources:\n  pids: 4294967296")),
        "containers[0].resources.pids",
        Some(5),
        "too large",
    );
    assert_error(
        &yaml_err(&web("resources:\n  limits: {memory: 1x}")),
        "containers[0].resources.limits.memory",
        Some(5),
        "expected bytes",
    );
    let err = json_err(r#"{"containers": [{"name": "web", "image": "x", "resources": {"cpu": "lots"}}]}"#);
    assert_error(&err, "containers[0].resources.cpu", Some(1), "invalid CPU quantity \"lots\"");
}

#[test]
fn rejects_unknown_resource() {
    let err = yaml_err(&web("resources:\n  disk: 1Gi"));
    assert_error(&err, "containers[0].resources.disk", Some(5), "unknown field `disk`");
}

// --- replicas and restart policy ---

#[test]
fn replicas_take_a_number_or_a_range() {
    assert_eq!(yaml(&format!("{}replicas: 3\n", web(""))).replicas, Some(Replicas { min: 3, max: 3 }));
    assert_eq!(yaml(&format!("{}replicas: {{min: 0, max: 2}}\n", web(""))).replicas, Some(Replicas { min: 0, max: 2 }));
}

#[test]
fn rejects_bad_replicas() {
    assert_error(&yaml_err(&format!("{}replicas: 0\n", web(""))), "replicas", Some(4), "at least 1");
    assert_error(&yaml_err(&format!("{}replicas: -2\n", web(""))), "replicas", Some(4), "negative");
    assert_error(&yaml_err(&format!("{}replicas: 99999999999\n", web(""))), "replicas", Some(4), "too many");
    assert_error(
        &yaml_err(&format!("{}replicas: {{min: 3, max: 2}}\n", web(""))),
        "replicas.min",
        Some(4),
        "larger than max",
    );
    assert_error(
        &yaml_err(&format!("{}replicas: {{min: 0, max: 0}}\n", web(""))),
        "replicas.max",
        Some(4),
        "at least 1",
    );
    assert_error(&yaml_err(&format!("{}replicas: {{max: 2}}\n", web(""))), "replicas", Some(4), "missing field `min`");
}

#[test]
fn restart_policy_takes_each_value() {
    for (text, policy) in
        [("OnFailure", RestartPolicy::OnFailure), ("Always", RestartPolicy::Always), ("Never", RestartPolicy::Never)]
    {
        assert_eq!(yaml(&format!("{}restartPolicy: {text}\n", web(""))).restart_policy, policy as i32);
    }
    let err = yaml_err(&format!("{}restartPolicy: always\n", web("")));
    assert_error(&err, "restartPolicy", Some(4), "expected one of `OnFailure`, `Always`, `Never`");
}

// --- structure ---

#[test]
fn rejects_unknown_container_field_with_line_and_path() {
    let err = yaml_err(&web("imagePullPolicy: Always"));
    assert_error(
        &err,
        "containers[0].imagePullPolicy",
        Some(4),
        "unknown field `imagePullPolicy`, expected one of `name`, `image`",
    );
    assert_eq!(err.column(), Some(5));
    let err =
        json_err("{\"containers\": [\n  {\"name\": \"web\", \"image\": \"x\",\n   \"imagePullPolicy\": \"Always\"}]}");
    assert_error(&err, "containers[0].imagePullPolicy", Some(3), "unknown field `imagePullPolicy`");
}

#[test]
fn rejects_unknown_fields_everywhere() {
    assert_error(&yaml_err(&format!("{}kind: Pod\n", web(""))), "kind", Some(4), "unknown field `kind`");
    assert_error(
        &yaml_err(&web("ports:\n  - {port: 80, nodePort: 1}")),
        "containers[0].ports[0].nodePort",
        Some(5),
        "unknown field",
    );
    assert_error(
        &yaml_err(&web("volumeMounts: [{mountPath: /x, emptyDir: {size: 1}}]")),
        "containers[0].volumeMounts[0].emptyDir.size",
        Some(4),
        "unknown field",
    );
    assert_error(
        &yaml_err(&format!("{}volumes:\n  - {{name: v, hostPath: /}}\n", web(""))),
        "volumes[0].hostPath",
        Some(5),
        "unknown field",
    );
    assert_error(
        &yaml_err(&format!("{}replicas: {{min: 1, max: 2, step: 1}}\n", web(""))),
        "replicas.step",
        Some(4),
        "unknown field",
    );
}

#[test]
fn rejects_bad_and_duplicate_container_names() {
    assert_error(
        &yaml_err("containers:\n  - name: Web\n    image: x\n"),
        "containers[0].name",
        Some(2),
        "invalid name \"Web\"",
    );
    assert_error(
        &yaml_err("containers:\n  - name: -web\n    image: x\n"),
        "containers[0].name",
        Some(2),
        "invalid name",
    );
    assert_error(
        &yaml_err(&format!("containers:\n  - name: {}\n    image: x\n", "a".repeat(64))),
        "containers[0].name",
        Some(2),
        "1 to 63",
    );
    let err = yaml_err("containers:\n  - name: web\n    image: x\n  - name: web\n    image: y\n");
    assert_error(&err, "containers[1].name", Some(4), "container name web is already used by containers[0]");
}

#[test]
fn rejects_missing_or_empty_containers_and_images() {
    assert_error(&yaml_err("replicas: 1\n"), "", Some(1), "missing field `containers`");
    assert_error(&yaml_err("containers: []\n"), "containers", Some(1), "at least one container");
    assert_error(&yaml_err("containers:\n  - name: web\n"), "containers[0]", Some(2), "missing field `image`");
    assert_error(
        &yaml_err("containers:\n  - name: web\n    image: ''\n"),
        "containers[0].image",
        Some(3),
        "invalid image",
    );
    assert_error(&yaml_err(""), "", None, "empty");
    assert_error(&json_err("{}"), "", Some(1), "missing field `containers`");
}

#[test]
fn wrong_types_name_what_was_expected() {
    let err = yaml_err("containers: web\n");
    assert_error(&err, "containers", Some(1), "expected a sequence");
    let err = yaml_err("containers:\n  - web\n");
    assert_error(&err, "containers[0]", Some(2), "a container: a map with an image");
    let err = yaml_err(&web("ports: 80"));
    assert_error(&err, "containers[0].ports", Some(4), "expected a sequence");
}

#[test]
fn syntax_errors_have_a_line() {
    let err = yaml_err("containers:\n  - name: web\n    image: x\n\t- name: api\n");
    assert_eq!(err.line(), Some(4), "{err}");
    assert!(err.to_string().contains("tab character"), "{err}");
    let err = json_err("{\"containers\": [\n  {\"name\": \"web\",}\n]}");
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(!err.to_string().contains(" at line "), "location printed once: {err}");
    let err = json_err(r#"{"containers": [{"name": "web", "image": "x"}]} trailing"#);
    assert_error(&err, "", Some(1), "trailing characters");
}

#[test]
fn rejects_multi_document_yaml() {
    let err = yaml_err(&format!("{}---\n{}", web(""), web("")));
    assert!(err.to_string().contains("more than one document"), "{err}");
}

#[test]
fn yaml_anchors_are_followed_and_errors_found_after_parsing_still_have_a_line() {
    let text = "containers:\n  - &base\n    name: a\n    image: x\n    ports: [80]\n  - name: b\n    image: x\n    ports: [81, 80]\n";
    let err = yaml_err(text);
    assert_error(&err, "containers[1].ports[1]", Some(8), "already used");
    let text = "containers:\n  - name: a\n    image: x\n    env: &env {A: '1', B: '2'}\n  - name: b\n    image: y\n    env: *env\n";
    let pod = yaml(text);
    assert_eq!(pod.containers[1].env, pod.containers[0].env);
}

// --- limits and hostile input ---

#[test]
fn rejects_oversized_input() {
    let text = format!("{}# {}\n", web(""), "x".repeat(MAX_MANIFEST_BYTES));
    let err = yaml_err(&text);
    assert!(matches!(err.kind(), ManifestErrorKind::TooLarge { .. }), "{err:?}");
}

#[test]
fn deep_nesting_is_rejected_without_overflowing_the_stack() {
    for depth in [200, 100_000] {
        let yaml_text = format!("containers: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let _ = yaml_err(&yaml_text);
        let json_text = format!("{{\"containers\": {}{}}}", "[".repeat(depth), "]".repeat(depth));
        let _ = json_err(&json_text);
        let yaml_text = format!("{}{}", "a: ".repeat(depth), "1");
        let _ = yaml_err(&yaml_text);
    }
    let nested_env = format!("{}      X: {}{}\n", web("env:"), "[".repeat(500), "]".repeat(500));
    let _ = yaml_err(&nested_env);
    // Compact block sequences nest without costing indentation.
    let start = std::time::Instant::now();
    let _ = yaml_err(&format!("containers:\n{}x\n", "- ".repeat(400_000)));
    let _ = yaml_err(&format!("containers:\n{}x\n", "? ".repeat(400_000)));
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
}

#[test]
fn yaml_flow_nesting_bomb_is_rejected_quickly() {
    // libyaml's time grows with flow depth times tokens; a megabyte of `[`
    // would take it minutes.
    let text = format!("containers: {}\n", "[".repeat(MAX_MANIFEST_BYTES - 20));
    let start = std::time::Instant::now();
    let err = yaml_err(&text);
    assert!(err.to_string().contains("too many nested or repeated flow collections"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn large_json_blob_in_a_yaml_secret_is_accepted() {
    let blob: Vec<String> = (0..2000).map(|i| format!("{{\"k{i}\": [1, 2, {{\"v\": \"x\"}}]}}")).collect();
    let blob = format!("[{}]", blob.join(", "));
    let text = format!("{}volumes:\n  - name: config\n    secret:\n      contents: '{blob}'\n", web(""));
    let pod = yaml(&text);
    assert!(matches!(&pod.volumes[0].kind, Some(volume::Kind::Secret(s)) if s.contents.len() == blob.len()));
}

#[test]
fn alias_expansion_bomb_is_rejected() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    text.push_str(&web("args: *a11"));
    let start = std::time::Instant::now();
    let _ = yaml_err(&text);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn arbitrary_input_never_panics() {
    // A small in-tree stand-in for the cargo-fuzz target: mutate valid
    // manifests byte by byte and feed both formats.
    let seeds =
        [WEB_POD.to_owned(), web("ports: ['[::1]:8443:443/udp']\nenv: [A=1]\nresources: {cpu: 1e-3, memory: 0.5Ki}")];
    let alphabet = b"{}[]:,-'\"\\ \n\t#&*!|>?%@`0123456789.eEmMGiKk/xnull";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in &seeds {
        for _ in 0..400 {
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..(next() % 8 + 1) {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            if let Ok(text) = std::str::from_utf8(&bytes) {
                let _ = parse_pod_manifest(text, Format::Yaml, "fuzz", None);
                let _ = parse_pod_manifest(text, Format::Json, "fuzz", None);
            }
        }
    }
}

// --- loading files ---

#[test]
fn load_picks_format_by_extension_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let yaml_path = dir.path().join("pod.yaml");
    std::fs::write(&yaml_path, format!("{}volumes:\n  - {{name: t, secret: {{file: token}}}}\n", web(""))).unwrap();
    let pod = load_pod_manifest(&yaml_path).unwrap();
    assert_eq!(
        pod.volumes[0].kind,
        Some(volume::Kind::Secret(volume::Secret { contents: b"t".to_vec(), file_name: "token".into() }))
    );

    let json_path = dir.path().join("pod.JSON");
    std::fs::write(&json_path, r#"{"containers": [{"name": "web", "image": "x", "cpu": 1}]}"#).unwrap();
    let err = load_pod_manifest(&json_path).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}:1:", json_path.display())), "{err}");
    assert_eq!(err.field(), "containers[0].cpu");
}

#[test]
fn load_reports_missing_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_pod_manifest(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(matches!(err.kind(), ManifestErrorKind::Read(_)), "{err:?}");
    assert!(err.to_string().contains("nope.yaml"), "{err}");
    let path = dir.path().join("bin.yaml");
    std::fs::write(&path, b"containers: \xff\n").unwrap();
    assert!(load_pod_manifest(&path).unwrap_err().to_string().contains("not UTF-8"));
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_MANIFEST_BYTES + 1]).unwrap();
    assert!(matches!(load_pod_manifest(&big).unwrap_err().kind(), ManifestErrorKind::TooLarge { .. }));
}

#[test]
fn format_follows_the_extension() {
    assert_eq!(Format::from_path(Path::new("pod.json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("dir/pod.Json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("pod.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("pod.yml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("pod")), Format::Yaml);
}

#[test]
fn byte_order_mark_is_ignored() {
    let pod = json("\u{feff}{\"containers\": [{\"name\": \"web\", \"image\": \"x\"}]}");
    assert_eq!(pod.containers.len(), 1);
}

#[test]
fn yaml_merge_keys_are_reported_as_unknown_fields() {
    let text = "containers:\n  - &base\n    name: a\n    image: x\n  - <<: *base\n    name: b\n";
    assert_error(&yaml_err(text), "containers[1].<<", Some(5), "unknown field `<<`");
}

#[test]
fn load_names_the_secret_file_as_written_relative_to_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod.yaml");
    std::fs::write(&path, format!("{}volumes:\n  - name: token\n    secret: {{file: ./secrets/token.txt}}\n", web("")))
        .unwrap();
    let err = load_pod_manifest(&path).unwrap_err();
    let expected = format!(
        "{}:6:20: volumes[0].secret.file: cannot read secret file {}: ",
        path.display(),
        dir.path().join("./secrets/token.txt").display()
    );
    assert!(err.to_string().starts_with(&expected), "{err}\n{expected}");
}

#[test]
fn private_image_is_a_publisher_side_field_that_never_travels() {
    let yaml =
        "containers:\n  - name: a\n    image: ./a.tar\n    privateImage: true\n  - name: b\n    image: ./b.tar\n";
    let (pod, publisher) = crate::parse_pod_manifest_for_publisher(yaml, Format::Yaml, "pod.yaml", None).unwrap();
    assert_eq!(publisher.private_images, vec![0]);
    assert_eq!(pod, crate::parse_pod_manifest(yaml, Format::Yaml, "pod.yaml", None).unwrap());
    assert_eq!(
        pod.containers[0].image,
        Some(sealpod_proto::Image { source: Some(image::Source::Reference("./a.tar".into())) })
    );
    let err = crate::parse_pod_manifest(
        "containers:\n  - name: a\n    image: ./a.tar\n    privateImage: yes please\n",
        Format::Yaml,
        "pod.yaml",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("privateImage"), "{err}");
}
