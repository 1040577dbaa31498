//! The layer cipher on one core: the CTR+HMAC pass alone (what ocicrypt's
//! format costs, the same construction written out with `aes`, `ctr` and
//! `hmac`), the decrypting and encrypting readers (which also hash the
//! plaintext against its digest), and SHA-256 alone for scale.

use std::io::Read;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sealpod_ocicrypt::{DecryptingReader, EncryptingReader, PrivateOptions};
use sha2::{Digest, Sha256};

fn layer(c: &mut Criterion) {
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    let opts = PrivateOptions::generate(&format!("sha256:{}", hex::encode(Sha256::digest(&data)))).unwrap();
    let mut enc = EncryptingReader::new(&data[..], &opts);
    let mut ct = Vec::with_capacity(data.len());
    enc.read_to_end(&mut ct).unwrap();
    let public = enc.public_options().unwrap().clone();
    let mut g = c.benchmark_group("layer");
    g.throughput(Throughput::Bytes(data.len() as u64)).sample_size(10);
    let mut buf = vec![0u8; 64 * 1024];
    g.bench_function(BenchmarkId::new("decrypt+verify", "64MiB"), |b| {
        b.iter(|| {
            let mut d = DecryptingReader::new(&ct[..], &opts, &public);
            while d.read(&mut buf).unwrap() > 0 {}
        })
    });
    g.bench_function(BenchmarkId::new("encrypt", "64MiB"), |b| {
        b.iter(|| {
            let mut e = EncryptingReader::new(&data[..], &opts);
            while e.read(&mut buf).unwrap() > 0 {}
        })
    });
    g.bench_function(BenchmarkId::new("ctr+hmac pass", "64MiB"), |b| {
        use aes::cipher::{KeyIvInit, StreamCipher};
        use hmac::Mac;
        b.iter(|| {
            let mut cipher = ctr::Ctr128BE::<aes::Aes256>::new(opts.symkey.as_ref().into(), (&opts.nonce).into());
            let mut mac = <hmac::Hmac<Sha256> as Mac>::new_from_slice(opts.symkey.as_ref()).unwrap();
            for chunk in ct.chunks(buf.len()) {
                let n = chunk.len();
                buf[..n].copy_from_slice(chunk);
                mac.update(&buf[..n]);
                cipher.apply_keystream(&mut buf[..n]);
            }
            mac.finalize()
        })
    });
    g.bench_function(BenchmarkId::new("sha256 alone", "64MiB"), |b| b.iter(|| Sha256::digest(&ct)));
    g.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
