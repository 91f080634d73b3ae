//! The `X-Forwarded-For` and RFC 7239 `Forwarded` parsers behind a trusted proxy: never a
//! panic, and the resolved client is the peer or an address a header named.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    portcullis::client_ip::__fuzz_forwarded(data);
});
