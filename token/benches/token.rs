//! Token and Hawk costs per request: `cargo bench -p sluice-token`.
//! Target (issue [4/5]): Hawk verification under 5 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_token::hawk::{self, Request};
use sluice_token::token::{self, Payload};

fn payload() -> Payload {
    Payload {
        uid: 42,
        node: "http://127.0.0.1:8080/g/1".into(),
        expires: 2_000_000_000.0,
        salt: "a1b2c3".into(),
        fxa_uid: "0123456789abcdef0123456789abcdef".into(),
        fxa_kid: "0000000001234-qqo".into(),
        hashed_fxa_uid: "dbf9e62f4ed48c193921dd518f0459f3".into(),
        hashed_device_id: "cfa8d478d2144fb4de7cc770f8a17334".into(),
    }
}

fn benches(c: &mut Criterion) {
    let secret = "a-node-secret-0123456789abcdef";
    let made = match token::make(secret, &payload()) {
        Ok(t) => t,
        Err(e) => panic!("make: {e}"),
    };
    c.bench_function("token make", |b| {
        b.iter(|| token::make(black_box(secret), black_box(&payload())))
    });
    c.bench_function("token verify", |b| {
        b.iter(|| token::verify(black_box(&made.id), &[secret], 1_700_000_000.0))
    });
    let request = Request {
        method: "GET",
        path_and_query: "/v1/app/queue?partitions=1",
        host: "127.0.0.1",
        port: 8080,
        content_type: "",
        body: b"",
    };
    let mut header = hawk::Header {
        id: made.id.clone(),
        ts: 1_700_000_000,
        nonce: "abc123".into(),
        mac: String::new(),
        hash: None,
        ext: None,
    };
    header.mac = hawk::mac(&made.key, &hawk::normalized(&header, &request));
    let text = format!(
        "Hawk id=\"{}\", ts=\"{}\", nonce=\"{}\", mac=\"{}\"",
        header.id, header.ts, header.nonce, header.mac
    );
    c.bench_function("hawk parse + verify (MAC, skew)", |b| {
        b.iter(|| {
            let parsed = hawk::parse(black_box(&text))?;
            hawk::verify(&parsed, &request, &made.key, 1_700_000_000, 60)
        })
    });
    c.bench_function("hawk parse + token verify + hawk verify", |b| {
        b.iter(|| {
            let parsed = hawk::parse(black_box(&text)).map_err(|e| e.to_string())?;
            let verified =
                token::verify(&parsed.id, &[secret], 1_700_000_000.0).map_err(|e| e.to_string())?;
            hawk::verify(&parsed, &request, &verified.key, 1_700_000_000, 60)
                .map_err(|e| e.to_string())
        })
    });
}

criterion_group!(token_benches, benches);
criterion_main!(token_benches);
