//! Criterion benchmarks of API key verification (issue 6): one `ApiKeyAuthenticator::verify_key`
//! per iteration (split, SHA-256, hash-map lookup by id, constant-time compare, principal), with
//! 10, 1,000 and 100,000 keys loaded, for a valid key, a wrong secret and an unknown id. The
//! cost must not grow with the number of keys, and the three outcomes must cost about the same.
//!
//! Run with `cargo bench --features full --bench api_keys -- --warm-up-time 1 --measurement-time 2`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::Criterion;
use portcullis::authn::api_key::{ApiKeyAuthenticator, generate_api_key};
use secrecy::ExposeSecret;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("api_key");
    for count in [10usize, 1_000, 100_000] {
        let mut file = String::new();
        let mut probe = None;
        for i in 0..count {
            let key = generate_api_key(&format!("client-{i}")).unwrap();
            writeln!(file, "{}:{}:reader", key.id(), key.sha256_hex()).unwrap();
            if i == count / 2 {
                probe = Some(key.key().expose_secret().to_owned());
            }
        }
        let auth = ApiKeyAuthenticator::builder()
            .keys_text(&file)
            .build()
            .unwrap();
        let valid = probe.unwrap();
        let mut wrong = valid.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'A' { 'B' } else { 'A' });
        let id = valid.split('_').nth(1).unwrap().to_owned();
        let unknown = valid.replacen(&id, "nobody", 1);
        assert!(auth.verify_key(&valid).is_ok());
        group.bench_function(format!("valid/{count}_keys"), |b| {
            b.iter(|| auth.verify_key(black_box(&valid)).is_ok())
        });
        group.bench_function(format!("wrong_secret/{count}_keys"), |b| {
            b.iter(|| auth.verify_key(black_box(&wrong)).is_err())
        });
        group.bench_function(format!("unknown_id/{count}_keys"), |b| {
            b.iter(|| auth.verify_key(black_box(&unknown)).is_err())
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
