//! Signature verification cost, RSA-2048/SHA-256 and ECDSA P-256/SHA-256:
//!
//! * `primitive/*`: one signature check with the RustCrypto primitive this
//!   crate calls (the figure to set beside `openssl speed rsa2048 ecdsap256`,
//!   see `openssl_speed.sh`);
//! * `verify_signature/*`: what a provider does per manifest minus the JSON:
//!   parse the author's certificate, build and check the chain to the CA
//!   (one certificate signature), then the manifest signature;
//! * `verify/*`: the same plus decoding and reading the manifest.
//!
//! Keys and certificates are made with the `openssl` command line at start.
//! Run: `cargo bench -p sealpod-payload --bench verify`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

use common::{days, manifest_json, now, rfc3339, Openssl};
use sealpod_payload::{verify, verify_signature, Keystore};

struct Signed {
    manifest: String,
    signature: Vec<u8>,
    certificate: Vec<u8>,
    keystore: Keystore,
    public_key_der: Vec<u8>,
}

fn signed(ssl: &Openssl, name: &str, newkey: &[&str]) -> Signed {
    ssl.ca(&format!("{name}-ca"), &format!("/CN={name} CA"), newkey, &[]);
    let key = format!("{name}.key");
    let mut args = vec!["req", "-new", "-nodes", "-keyout", &key];
    args.extend_from_slice(newkey);
    let csr = format!("{name}.csr");
    let subject = format!("/CN={name} author");
    args.extend_from_slice(&["-out", &csr, "-subj", &subject]);
    ssl.run(&args);
    let cert = format!("{name}.pem");
    ssl.issue(&csr, &format!("{name}-ca"), &cert, None);
    let json = manifest_json(&rfc3339(now() - days(1)), &rfc3339(now() + days(30)), "");
    ssl.write(format!("{name}.json").as_str(), json);
    let manifest = ssl.base64(&format!("{name}.json"), &format!("{name}.b64"));
    let signature = ssl.dgst_sign("sha256", &key, &format!("{name}.b64"));
    ssl.run(&["pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &format!("{name}.pub.der")]);
    Signed {
        manifest,
        signature,
        certificate: ssl.read(&cert),
        keystore: Keystore::from_certificates(&ssl.read(&format!("{name}-ca.pem"))).unwrap(),
        public_key_der: ssl.read(&format!("{name}.pub.der")),
    }
}

fn bench(c: &mut Criterion) {
    let ssl = Openssl::new();
    let rsa = signed(&ssl, "rsa2048", &["-newkey", "rsa:2048"]);
    let p256 = signed(&ssl, "p256", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let at = now();

    let rsa_key = rsa::RsaPublicKey::from_public_key_der(&rsa.public_key_der).unwrap();
    let rsa_digest = sha2::Sha256::digest(rsa.manifest.as_bytes());
    c.bench_function("primitive/rsa2048-sha256", |b| {
        b.iter(|| {
            rsa_key
                .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), black_box(&rsa_digest), black_box(&rsa.signature))
                .unwrap()
        })
    });
    let p256_key = p256::ecdsa::VerifyingKey::from_public_key_der(&p256.public_key_der).unwrap();
    let p256_sig = p256::ecdsa::Signature::from_der(&p256.signature).unwrap();
    let p256_digest = sha2::Sha256::digest(p256.manifest.as_bytes());
    c.bench_function("primitive/p256-sha256", |b| {
        b.iter(|| p256_key.verify_prehash(black_box(&p256_digest), black_box(&p256_sig)).unwrap())
    });

    for (name, s) in [("rsa2048-sha256", &rsa), ("p256-sha256", &p256)] {
        c.bench_function(&format!("verify_signature/{name}"), |b| {
            b.iter(|| {
                verify_signature(
                    black_box(s.manifest.as_bytes()),
                    &s.signature,
                    "sha256",
                    &s.certificate,
                    &s.keystore,
                    at,
                )
                .unwrap()
            })
        });
        c.bench_function(&format!("verify/{name}"), |b| {
            b.iter(|| verify(black_box(&s.manifest), &s.signature, "sha256", &s.certificate, &s.keystore, at).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
