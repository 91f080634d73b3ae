//! Criterion benchmarks of rate limiting (issue 5, benchmark acceptance).
//!
//! Groups:
//!
//! - `local`: one keyed check against the in-memory GCRA store ([`MemoryStore::check`]) for a
//!   client address drawn from 10 000 distinct keys (target ≤ 150 ns), including reading the
//!   system clock; the same for a store at its bound (keys churning through the overflow
//!   path); and one check through the [`RateLimitLayer`] around a no-op service;
//! - `lockout`: the lockout layer's lookup for a client with no failures, in memory and (as
//!   `redis_layer_call_no_failures`) against the Redis lockout store at `REDIS_URL` (one `HMGET`
//!   per request; skipped with a message when no Redis answers);
//! - `concurrent32`: 32 tokio tasks on a multi-thread runtime checking concurrently, each over
//!   its own keys, against the local store and against the Redis store at `REDIS_URL` (default
//!   `redis://127.0.0.1:6379`, skipped with a message when none answers). The reported time is
//!   per check (total wall time / checks), so checks per second = 1 / time.
//!
//! Run with `cargo bench --features full --bench ratelimit`.

#![expect(clippy::unwrap_used, reason = "benchmark setup")]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::time::SystemTime;

use criterion::Criterion;
use http::{Request, Response};
use portcullis::context::ClientIp;
use portcullis::ratelimit::lockout::{LockoutLayer, RedisLockoutStore};
use portcullis::ratelimit::store::RedisRateLimitStore;
use portcullis::ratelimit::{MemoryStore, Quota, RateLimitKey, RateLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

fn ips(n: u32) -> Vec<IpAddr> {
    (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect()
}

fn local(c: &mut Criterion) {
    let mut group = c.benchmark_group("local");
    let quota = Quota::per_second(NonZeroU32::new(1_000_000).unwrap());
    let store = MemoryStore::builder().build().unwrap();
    let keys = ips(10_000);
    let mut i = 0usize;
    group.bench_function("memory_store_check", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.check(&keys[i], &quota, SystemTime::now()))
        })
    });

    let small = MemoryStore::builder().max_keys(1_024).build().unwrap();
    let strict = Quota::per_hour(NonZeroU32::new(1).unwrap());
    let mut n = 0u64;
    group.bench_function("memory_store_check_at_bound", |b| {
        b.iter(|| {
            n += 1;
            black_box(small.check(&n, &strict, SystemTime::now()))
        })
    });

    let layer = RateLimitLayer::builder("bench")
        .quota(quota)
        .key(RateLimitKey::client_ip())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut j = 0usize;
    group.bench_function("layer_call", |b| {
        b.iter(|| {
            j = (j + 1) % keys.len();
            let mut req = Request::new(());
            req.extensions_mut().insert(ClientIp(keys[j]));
            let fut = svc.call(req);
            black_box(rt.block_on(fut).unwrap())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("lockout");
    let lockout = LockoutLayer::builder().build().unwrap();
    let svc = lockout.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut k = 0usize;
    group.bench_function("layer_call_no_failures", |b| {
        b.iter(|| {
            k = (k + 1) % keys.len();
            let mut req = Request::new(());
            req.extensions_mut().insert(ClientIp(keys[k]));
            black_box(rt.block_on(svc.clone().oneshot(req)).unwrap())
        })
    });
    group.finish();
}

const CALLERS: u64 = 32;

fn concurrent(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrent32");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let quota = Quota::per_second(NonZeroU32::new(1_000_000).unwrap());
    let local = MemoryStore::builder().build().unwrap();
    group.bench_function("local", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(CALLERS);
            let started = std::time::Instant::now();
            rt.block_on(async {
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|caller| {
                        let local = local.clone();
                        tokio::spawn(async move {
                            for i in 0..per {
                                black_box(local.check(
                                    &(caller, i % 1_000),
                                    &quota,
                                    SystemTime::now(),
                                ));
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            started
                .elapsed()
                .div_f64((per * CALLERS) as f64 / iters as f64)
        })
    });
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis = RedisRateLimitStore::builder(&url)
        .key_prefix("portcullis-bench:rl:")
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let probe = rt.block_on(redis.check("bench", "probe", &quota, SystemTime::now()));
    if redis.failures() > 0 || !probe.is_allowed() {
        eprintln!("!!! no Redis answering at {url}: skipping concurrent32/redis");
    } else {
        group.bench_function("redis", |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(CALLERS);
                let started = std::time::Instant::now();
                rt.block_on(async {
                    let tasks: Vec<_> = (0..CALLERS)
                        .map(|caller| {
                            let redis = redis.clone();
                            tokio::spawn(async move {
                                for i in 0..per {
                                    let key = format!("{caller}:{}", i % 1_000);
                                    black_box(
                                        redis.check("bench", &key, &quota, SystemTime::now()).await,
                                    );
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                started
                    .elapsed()
                    .div_f64((per * CALLERS) as f64 / iters as f64)
            })
        });
        assert_eq!(redis.failures(), 0, "Redis failed during the benchmark");
    }
    group.finish();

    let mut group = c.benchmark_group("lockout");
    let store = RedisLockoutStore::builder(&url)
        .key_prefix("portcullis-bench:lockout:")
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let lockout = LockoutLayer::builder()
        .redis(store.clone())
        .build()
        .unwrap();
    let svc = lockout.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    let keys = ips(10_000);
    let request = |ip: IpAddr| {
        let mut req = Request::new(());
        req.extensions_mut().insert(ClientIp(ip));
        req
    };
    rt.block_on(svc.clone().oneshot(request(keys[0]))).unwrap();
    if store.failures() > 0 {
        eprintln!("!!! no Redis answering at {url}: skipping lockout/redis_layer_call_no_failures");
    } else {
        let mut k = 0usize;
        group.bench_function("redis_layer_call_no_failures", |b| {
            b.iter(|| {
                k = (k + 1) % keys.len();
                black_box(rt.block_on(svc.clone().oneshot(request(keys[k]))).unwrap())
            })
        });
        assert_eq!(store.failures(), 0, "Redis failed during the benchmark");
    }
    group.finish();
}

// `criterion_group!` would generate an undocumented `pub fn`, which the crate's `missing_docs`
// lint refuses; this is what `criterion_group!` + `criterion_main!` expand to.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    local(&mut criterion);
    concurrent(&mut criterion);
    criterion.final_summary();
}
